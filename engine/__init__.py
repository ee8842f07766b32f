"""Generation-step-aware cross-modal language neurons in SeamlessM4T v2.

Data flows one way: ``data`` → ``stages`` (data, speech, record, rank, compare, steer,
report, each reading earlier artifacts through ``run``) → ``pipeline`` (order, resume) →
outputs (``claims``, ``report``, ``plots``, ``results``). The science works on plain arrays:
``ranking`` (average precision, top/bottom-k), ``overlap`` (cross-modal set and rank
statistics), ``intervals`` and ``crossmodal`` (their half-sample intervals; ``compare_activations``
on anyone's arrays), ``control`` (script control rate), ``steering`` (median-value intervention),
on the mechanics of ``catalog``, ``loader``, ``recorder`` and ``store``. A finished run opens
read-only with ``engine.open_run``. README "Layout" has the whole map.
"""
from engine.errors import UserError

__all__ = ["UserError", "open_run", "compare_activations"]


def __getattr__(name):
    # lazy, so `import engine` stays cheap for the CLI
    if name == "open_run":
        from engine.outputs.results import open_run

        return open_run
    if name == "compare_activations":
        from engine.science.crossmodal import compare_activations

        return compare_activations
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
__version__ = "0.1.0"
