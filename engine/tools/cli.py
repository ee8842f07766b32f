"""Command line: ``python -m engine <command> --help``.

Each command lives in the module that owns its concept; that module exposes
``<command>_arguments(parser)`` and ``<command>_command(args) -> int``. ``run`` is the CLI's
own: it drives ``engine.pipeline.runner`` and prints where the artifacts are. Modules are
imported only when their command is chosen, so ``--help`` stays quick.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

from engine.errors import UserError
from engine.files import disk_usage
from engine.usage import peak_rss_bytes

COMMANDS: dict[str, tuple[str, str]] = {
    "catalog": ("engine.model.catalog", "list the neurons of a model config; last line is JSON counts"),
    "bench": ("engine.tools.benchmarks", "benchmarks (ap, bootstrap, compare, coverage, record); last line is a JSON object of figures"),
    "run": ("engine.tools.cli", "run the resumable pipeline for a profile (default: tiny, offline)"),
    "estimate": ("engine.tools.estimate", "per stage: time, peak RAM, GPU memory and disk a profile's run will need"),
    "rehearse": ("engine.tools.rehearse", "run every stage on a random-weight model of the real architecture and "
                 "compare with the estimate; last line is JSON"),
    "score": ("engine.science.scripts", "control rate (script, language ID) of a file of outputs; last line is JSON"),
    "claims": ("engine.tools.claims_suite", "run the claims suite (pytest claims/) and write the claims report"),
    "baselines": ("engine.tools.baselines", "measure the noise floor of a profile's regression baselines and record them "
                  "with a tolerance per number; last line is JSON"),
}


def run_arguments(parser) -> None:
    from engine.pipeline.config import profile_arguments
    from engine.pipeline.stages import STAGES

    profile_arguments(parser)
    parser.add_argument("--out", default=None, help="output root (default: the profile's output.root, 'runs')")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated subset of {','.join(STAGES)} (earlier stages must be complete)")
    parser.add_argument("--force", action="store_true", help="recompute the selected stages even if complete")
    parser.add_argument("--wait", action="store_true",
                        help="if another run holds the output root, wait for it and then reuse what it finished "
                             "(default: exit at once with one line naming that process)")
    parser.description = ("run the resumable pipeline for a profile. One run per output root at a time: a second "
                          "`engine run` on the same --out exits with status 2 and one line naming the process that "
                          "holds it, or with --wait queues behind it.")


def run_command(args) -> int:
    from engine.pipeline import config as config_mod
    from engine.pipeline.runner import run_pipeline
    from engine.pipeline.stages import STAGES

    cfg = config_mod.load_profile(args.profile, args.overrides)
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise UserError(f"unknown stage(s) {unknown}; stages are {','.join(STAGES)}")
    t0 = time.perf_counter()
    run = run_pipeline(cfg, out=args.out, stages=stages, force=args.force, wait=args.wait)
    if run.rank == 0:
        print(f"artifacts: {run.root}")
        if run.done("report"):
            print(f"analysis: {run.dir('report') / 'analysis.json'}")
            # the analysis named, not recomputed: the profile alone would miss any --set
            print(f"report:   STEP_NEURONS_ANALYSIS={run.dir('report') / 'analysis.json'} python -m engine claims "
                  f"--profile {cfg['profile']['name']}  (writes reports/latest/claims-report.html)")
        print(json.dumps({"wall_time_s": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
                          "bytes_written": disk_usage(run.root)}))
    return 0


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
