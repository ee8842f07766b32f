"""Command line: ``python -m engine <command> --help``.

Each command lives in the module that owns its concept; that module exposes
``<command>_arguments(parser)`` and ``<command>_command(args) -> int``. Modules are
imported only when their command is chosen, so ``--help`` stays quick.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from engine.errors import UserError

COMMANDS: dict[str, tuple[str, str]] = {
    "catalog": ("engine.catalog", "list the neurons of a model config; last line is JSON counts"),
    "bench": ("engine.benchmarks", "benchmarks (ap, bootstrap, compare, record); last line is a JSON object of figures"),
    "run": ("engine.pipeline", "run the resumable pipeline for a profile (default: tiny, offline)"),
    "estimate": ("engine.pipeline", "print disk, RAM and example counts a profile's run will need"),
    "claims": ("engine.report", "run the claims suite (pytest claims/) and write the claims report"),
}


def _parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="Generation-step-aware cross-modal language neurons (SeamlessM4T v2).",
    )
    sub = parser.add_subparsers(dest="command", metavar="command", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            getattr(importlib.import_module(module), f"{name}_arguments")(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser(argv).parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(getattr(module, f"{args.command}_command")(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; rerun the same command to resume", file=sys.stderr)
        return 130
