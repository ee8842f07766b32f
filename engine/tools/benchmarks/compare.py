"""``python -m engine bench compare``: the compare stage's cost per bootstrap resample and step.

Synthetic float64 AP and point-biserial matrices ``[L, neurons]`` for speech and text (default
491,520 neurons: the Large decoder at one step), with coarse AP levels so the top-k cuts fall
inside tie groups. Per resample the compare stage computes the set statistics at k, the rank
statistics (Spearman over all neurons) and the diagonal ratio at every k of the sweep, all top-k
sets from one ordering per (side, language) (``crossmodal.replicate_statistics``).

Timed in one process (fastest of ``--repeats``): ``per_resample_s`` (everything),
``sweep_s`` (the overlap matrices at k and at every k of the sweep) and ``spearman_s`` (rank
statistics). ``per_k_resort_s`` times the former way for reference: one full ranking of every
row per k. Last line: one JSON object.
"""
from __future__ import annotations

import json
import time

import numpy as np

from engine.errors import UserError
from engine.science.crossmodal import overlap_sweep, rank_statistics, replicate_statistics, statistics_of_overlap
from engine.usage import peak_rss_bytes


def synthetic_ap(L: int, n_neurons: int, seed: int) -> tuple[np.ndarray, ...]:
    """``(ap_speech, ap_text, sep_speech, sep_text)`` float64 ``[L, n_neurons]``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(2):
        ap = np.round(rng.beta(2, 8, (L, n_neurons)), 4)  # 4 decimals: many ties
        out.append(ap)
    for _ in range(2):
        out.append(rng.uniform(-1, 1, (L, n_neurons)))
    return tuple(out)


def main(args) -> int:
    L, n_neurons, k = int(args.langs), int(args.neurons), int(args.k)
    ks = [int(v) for v in args.k_sweep.split(",") if v.strip()]
    if n_neurons < max([k, *ks]) or L < 1:
        raise UserError("need --neurons >= k and every k of --k-sweep, and --langs >= 1")
    ap_s, ap_x, sep_s, sep_x = synthetic_ap(L, n_neurons, args.seed)
    print(f"AP: {L} languages x {n_neurons} neurons per side, k={k}, sweep {ks}", flush=True)
    repeats = max(1, int(args.repeats))
    best = {"per_resample_s": float("inf"), "sweep_s": float("inf"), "spearman_s": float("inf"),
            "per_k_resort_s": float("inf")}
    for _ in range(repeats):
        t0 = time.perf_counter()
        replicate_statistics(ap_s, ap_x, sep_s, sep_x, k, ks)
        t1 = time.perf_counter()
        O = overlap_sweep(ap_s, ap_x, [k, *ks], sep_s, sep_x)
        [statistics_of_overlap(o) for o in O]
        t2 = time.perf_counter()
        rank_statistics(ap_s, ap_x)
        t3 = time.perf_counter()
        for kk in [k, *ks]:  # the former way: a full stable ranking of every row for every k
            for ap in (ap_s, ap_x):
                for row in ap:
                    np.argsort(-row, kind="stable")[:kk]
        t4 = time.perf_counter()
        for key, v in zip(best, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            best[key] = min(best[key], v)
    print(f"per resample: {best['per_resample_s']:.3f} s (sweep {best['sweep_s']:.3f} s, Spearman "
          f"{best['spearman_s']:.3f} s); re-sorting per k would take {best['per_k_resort_s']:.3f} s", flush=True)
    figures = {"benchmark": "compare", "langs": L, "neurons": n_neurons, "k": k, "k_sweep": ks,
               "repeats": repeats, **{key: round(v, 4) for key, v in best.items()},
               "sweep_vs_per_k_resort": round(best["sweep_s"] / best["per_k_resort_s"], 3),
               "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1)}
    print(json.dumps(figures))
    return 0
