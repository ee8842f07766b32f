"""Generation-step-aware cross-modal language neurons in SeamlessM4T v2.

Modules, one concept each: ``ranking`` (average precision, top/bottom-k), ``overlap``
(cross-modal set and rank statistics), ``control`` (script control rate, effect ratio),
``catalog`` (which neurons exist), ``loader`` (one model for all tasks), ``recorder``
(activations per example and decoding step), ``data`` (corpora, speech, task views),
``store`` (on-disk activations), ``steering`` (median-value intervention), ``pipeline``
(resumable stages and profiles), ``report`` (claims report), ``plots`` (its figures),
``results`` (a finished run for notebooks: ``engine.open_run``).
"""
from engine.errors import UserError

__all__ = ["UserError", "open_run"]


def __getattr__(name):
    # lazy, so `import engine` stays cheap for the CLI
    if name == "open_run":
        from engine.results import open_run

        return open_run
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
__version__ = "0.1.0"
