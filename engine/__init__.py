"""Generation-step-aware cross-modal language neurons in multilingual speech–text models.

The package is in layer folders, data flowing down: ``science/`` (statistics on plain arrays),
``model/`` (a model's inside), ``pipeline/`` (runs and their stages), ``outputs/`` (what a reader
sees), ``tools/`` (the commands). The table that opens README.md's "Layout" section is the one
description of what each holds and may import; tests/test_architecture.py holds the code to it.
A finished run opens read-only with ``engine.open_run``; anyone's activations get the compare
stage's statistics with ``engine.compare_activations``.
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
