"""``python -m engine bench {ap,bootstrap,compare,coverage,record}``: benchmarks whose last line is JSON.

``ap``: exact average precision of a synthetic fp16 activation matrix against scikit-learn and
against a bare ``torch.sort`` (engine.tools.benchmarks.ap). ``bootstrap``: bootstrap resamples' AP from
one sort per neuron against re-ranking each resample (engine.tools.benchmarks.bootstrap).
``compare``: the compare stage's statistics per resample and step at the Large decoder's width
(engine.tools.benchmarks.compare). ``coverage``: coverage, power and size of its intervals on planted
populations (engine.tools.benchmarks.coverage). ``record``: cost of recording every
neuron against plain greedy generation (engine.tools.benchmarks.record).
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

    boot = sub.add_parser("bootstrap", help="bootstrap AP from one sort per neuron vs re-ranking resamples",
                          description="Time resampled_average_precision (one sort per neuron, weighted "
                                      "counts per resample) against a full ranking of each resample's "
                                      "rows; last line is JSON.")
    boot.add_argument("--examples", type=int, default=5000, help="rows (examples), default 5000")
    boot.add_argument("--neurons", type=int, default=2048, help="columns (neurons), default 2048")
    boot.add_argument("--langs", type=int, default=5, help="languages (labels), default 5")
    boot.add_argument("--resamples", type=int, default=10, help="bootstrap resamples, default 10")
    boot.add_argument("--full-resamples", type=int, default=2,
                      help="resamples ranked in full for the comparison, default 2")
    boot.add_argument("--seed", type=int, default=0)
    boot.add_argument("--repeats", type=int, default=2, help="keep the fastest of N runs, default 2")

    cmp = sub.add_parser("compare", help="compare-stage statistics per bootstrap resample and step",
                         description="Set statistics at k, Spearman statistics and the k sweep of one "
                                     "resample at the Large decoder's width; last line is JSON.")
    cmp.add_argument("--neurons", type=int, default=491520,
                     help="neurons per step, default 491520 (the Large decoder)")
    cmp.add_argument("--langs", type=int, default=5, help="languages, default 5")
    cmp.add_argument("--k", type=int, default=1000, help="k of the main statistics, default 1000")
    cmp.add_argument("--k-sweep", default="100,250,500,1000,2000,4000", help="comma-separated ks")
    cmp.add_argument("--seed", type=int, default=0)
    cmp.add_argument("--repeats", type=int, default=2, help="keep the fastest of N runs, default 2")

    cov = sub.add_parser("coverage", help="coverage, power and size of the compare stage's intervals",
                         description="Planted populations with known truth (engine.tools.benchmarks.coverage): "
                                     "coverage of every 95%% interval the compare stage writes, containment "
                                     "of the estimate, how often R1-R3 hold on a paper-like population "
                                     "(power) and on a null one (size); last line is JSON.")
    cov.add_argument("--replicates", type=int, default=60, help="samples of the paper-like population, default 60")
    cov.add_argument("--null-replicates", type=int, default=30, help="samples of the null population, default 30")
    cov.add_argument("--sentences", type=int, default=1000, help="sentences per language, default 1000")
    cov.add_argument("--neurons", type=int, default=2000, help="neurons per step, default 2000")
    cov.add_argument("--k", type=int, default=40, help="selective neurons per language and top-k, default 40")
    cov.add_argument("--k-sweep", default="20,30,40", help="comma-separated ks (within the selective set)")
    cov.add_argument("--n-boot", type=int, default=20, help="half-samples per replicate, default 20")
    cov.add_argument("--seed", type=int, default=0)

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
    module = importlib.import_module(f"engine.tools.benchmarks.{args.bench}")
    return int(module.main(args) or 0)
