"""``python -m engine bench bootstrap``: bootstrap AP from one sort per neuron vs re-ranking.

A synthetic fp16 matrix ``[examples, neurons]`` (as in ``bench ap``) and ``--resamples``
stratified bootstrap resamples (within each language, as many draws as it has rows). Timed in
one process (fastest of ``--repeats``):

- ``full_s``: one **full ranking** of a resample the obvious way: materialise the resampled rows
  and run ``average_precision(..., return_separation=True)`` on them (what the compare stage did
  per resample, plus the secondary key); the mean over ``--full-resamples`` resamples;
- ``resampled_s``: ``resampled_average_precision`` for all resamples at once (one sort per
  neuron, weighted counts per resample), divided by the number of resamples.

``resample_vs_full = resampled_s / full_s`` (target <= 0.2). ``max_abs_diff_vs_full``: the
largest AP difference between the two on the timed resamples; ``max_abs_err_vs_sklearn``: on a
sample of neurons against scikit-learn on the duplicated rows. Last line: one JSON object.
"""
from __future__ import annotations

import json
import time

import numpy as np
import torch

from engine.errors import UserError
from engine.science.ranking import average_precision, resampled_average_precision
from engine.tools.benchmarks.ap import synthetic_matrix
from engine.usage import peak_rss_bytes, rss_bytes


def stratified_weights(labels: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """int64 ``[n_boot, n]`` multiplicities of stratified bootstrap resamples."""
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_boot, labels.size), dtype=np.int64)
    for b in range(n_boot):
        for lang in np.unique(labels):
            rows = np.flatnonzero(labels == lang)
            weights[b] += np.bincount(rows[rng.integers(0, rows.size, rows.size)], minlength=labels.size)
    return weights


def main(args) -> int:
    from sklearn.metrics import average_precision_score

    n, n_neurons, L, B = int(args.examples), int(args.neurons), int(args.langs), int(args.resamples)
    if n < L or n_neurons < 1 or L < 1 or B < 1:
        raise UserError("need --examples >= --langs >= 1, --neurons >= 1 and --resamples >= 1")
    x, labels = synthetic_matrix(n, n_neurons, L, args.seed, "cpu")
    labels_np = labels.numpy()
    weights = stratified_weights(labels_np, B, args.seed)
    n_full = max(1, min(int(args.full_resamples), B))
    print(f"matrix: {n} examples x {n_neurons} neurons fp16, {L} languages, {B} resamples, "
          f"torch threads {torch.get_num_threads()}", flush=True)
    # warm-up both paths (compiled kernels load from numba's cache on first use)
    resampled_average_precision(x[:, :64], labels, weights[:2], n_labels=L)
    average_precision(x[:, :64], labels, n_labels=L, return_separation=True)
    repeats = max(1, int(args.repeats))

    rss_before = rss_bytes() / 2**20
    resampled_s = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        ap, _ = resampled_average_precision(x, labels, weights, n_labels=L)
        resampled_s = min(resampled_s, (time.perf_counter() - t0) / B)
    peak_rss = peak_rss_bytes() / 2**20
    print(f"resampled_average_precision: {resampled_s:.3f} s per resample", flush=True)

    full_s, max_diff = float("inf"), 0.0
    for _ in range(repeats):
        total = 0.0
        for b in range(n_full):
            rows = torch.from_numpy(np.repeat(np.arange(n), weights[b]))
            t0 = time.perf_counter()
            full, _ = average_precision(x[rows], labels[rows], n_labels=L, return_separation=True)
            total += time.perf_counter() - t0
            max_diff = max(max_diff, float(np.abs(full - ap[b]).max()))
        full_s = min(full_s, total / n_full)
    print(f"full ranking of a resample: {full_s:.3f} s; resample_vs_full {resampled_s / full_s:.3f}", flush=True)

    rng = np.random.default_rng(args.seed)
    sample = np.sort(rng.choice(n_neurons, size=min(5, n_neurons), replace=False))
    rows = np.repeat(np.arange(n), weights[0])
    xs = x[:, torch.as_tensor(sample)].to(torch.float64).numpy()[rows]
    ref = np.array([[average_precision_score(labels_np[rows] == l, xs[:, j]) for j in range(sample.size)]
                    for l in range(L)])
    max_err = float(np.abs(ap[0][:, sample] - ref).max())

    figures = {
        "benchmark": "bootstrap", "examples": n, "neurons": n_neurons, "langs": L, "resamples": B,
        "dtype": "float16", "torch_threads": torch.get_num_threads(), "repeats": repeats,
        "full_resamples": n_full,
        "resampled_s_per_resample": round(resampled_s, 4),
        "full_s_per_resample": round(full_s, 4),
        "resample_vs_full": round(resampled_s / full_s, 3),
        "resampled_us_per_neuron_lang": round(resampled_s / (n_neurons * L) * 1e6, 4),
        "full_us_per_neuron_lang": round(full_s / (n_neurons * L) * 1e6, 4),
        "max_abs_diff_vs_full": max_diff,
        "max_abs_err_vs_sklearn": max_err,
        "peak_rss_mb": round(peak_rss, 1),
        "extra_rss_mb": round(max(0.0, peak_rss - rss_before), 1),
    }
    print(json.dumps(figures))
    return 0
