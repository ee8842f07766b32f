"""``python -m engine bench {ap,record}``: benchmarks whose last printed line is one JSON object.

``ap``: exact average precision of a synthetic fp16 activation matrix against scikit-learn and
against a bare ``torch.sort`` (engine.benchmarks.ap). ``record``: cost of recording every
neuron against plain greedy generation (engine.benchmarks.record).
"""
from __future__ import annotations

import argparse
import importlib


def _steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"steps must be comma-separated integers, got {text!r}") from None
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError(f"steps must be integers >= 1, got {text!r}")
    return steps


def bench_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="benchmark", required=True)

    ap = sub.add_parser("ap", help="rank a synthetic fp16 matrix; compare with sklearn and torch.sort",
                        description="Exact AP of a synthetic fp16 [examples, neurons] matrix for "
                                    "every language; speed vs sklearn (sampled neurons) and vs a "
                                    "bare torch.sort; last line is JSON.")
    ap.add_argument("--examples", type=int, default=5000, help="rows (examples), default 5000")
    ap.add_argument("--neurons", type=int, default=20480,
                    help="columns (neurons), default 20480 = one decoder layer of the Large model")
    ap.add_argument("--langs", type=int, default=5, help="languages (labels), default 5")
    ap.add_argument("--device", default="cpu", help="torch device, default cpu")
    ap.add_argument("--sklearn-neurons", type=int, default=20,
                    help="neurons timed with sklearn (x every language), default 20")
    ap.add_argument("--chunk-size", type=int, default=None, help="neurons per chunk (default: automatic)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2, help="keep the fastest of N runs, default 2")

    rec = sub.add_parser("record", help="recording overhead vs plain greedy generation",
                         description="Time record_batches (all catalog neurons, chosen steps) "
                                     "against plain generate on a real-width random model; last "
                                     "line is JSON.")
    rec.add_argument("--device", default="cpu", help="torch device, default cpu")
    rec.add_argument("--dtype", default=None, help="float32 | float16 | bfloat16 (default: per device)")
    rec.add_argument("--batch-size", type=int, default=8)
    rec.add_argument("--examples", type=int, default=8)
    rec.add_argument("--steps", type=_steps, default=(1, 6, 11), help="comma-separated, default 1,6,11")
    rec.add_argument("--layers", type=int, default=2, help="layers per stack, default 2")
    rec.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up")


def bench_command(args) -> int:
    module = importlib.import_module(f"engine.benchmarks.{args.bench}")
    return int(module.main(args) or 0)
