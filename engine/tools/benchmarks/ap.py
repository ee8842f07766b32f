"""``python -m engine bench ap``: exact average precision at the size of one decoder layer.

A synthetic fp16 matrix ``[examples, neurons]`` (default 5,000 x 20,480: one decoder layer of the
Large model) with balanced labels over ``langs`` languages; every third neuron carries a weak
language signal so APs are not all ~1/L. fp16 makes ties common, as in stored activations.

Timed in one process with ``time.perf_counter``:

- ``ap_s``: ``engine.science.ranking.average_precision`` on the whole matrix (all languages), default
  method (for fp16: a radix sort of the 16-bit keys, O(n) per neuron); ``ap_sort_method_s``: the same with
  ``method="sort"`` (comparison sort), one run;
- ``sklearn``: ``average_precision_score`` on a seeded sample of neurons x every language
  (values cast to float64, which is what sklearn would see), per (neuron, language);
- ``sort_s``: a bare ``torch.sort(matrix, dim=0)`` of the same matrix (done in column blocks of
  2,048 so its index tensor does not dominate memory);
- ``chunk_sort_s``: the fastest ``torch.sort`` we found for this data (fp32, transposed
  chunks, stable), the one ``method="sort"`` runs, without any AP arithmetic.

Each timing is the fastest of ``--repeats`` runs (default 2): the machine may be shared.

``peak_rss_mb`` is the process's peak resident size (``engine.usage``) right after the AP run (the matrix is built in blocks, so its
construction adds no transient); ``ap_extra_rss_mb`` is how much that peak exceeds the resident
size before the AP run, i.e. the AP's working memory, which depends on the chunk, not on the
number of neurons. The sort baselines run after that measurement.
"""
from __future__ import annotations

import json
import platform
import time

import numpy as np
import torch

from engine.errors import UserError
from engine.science.ranking import average_precision
from engine.usage import peak_rss_bytes, rss_bytes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_matrix(n_examples: int, n_neurons: int, n_langs: int, seed: int, device) -> tuple:
    """fp16 ``[n_examples, n_neurons]`` and int64 labels ``[n_examples]``, built block by block."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_examples) % n_langs
    labels = labels[torch.randperm(n_examples, generator=gen)]
    x = torch.empty((n_examples, n_neurons), dtype=torch.float16)
    block = 2048
    for start in range(0, n_neurons, block):
        stop = min(start + block, n_neurons)
        cols = torch.arange(start, stop)
        values = torch.randn((n_examples, stop - start), generator=gen)
        signal = (labels[:, None] == (cols % n_langs)[None, :]) & (cols % 3 == 0)[None, :]
        x[:, start:stop] = (values + 0.5 * signal).to(torch.float16)
    return x.to(device), labels.to(device)


def main(args) -> int:
    from sklearn.metrics import average_precision_score

    n, n_neurons, L = int(args.examples), int(args.neurons), int(args.langs)
    if n < L or n_neurons < 1 or L < 1:
        raise UserError("need --examples >= --langs >= 1 and --neurons >= 1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda given but torch.cuda.is_available() is False; use --device cpu")
    n_sample = max(1, min(int(args.sklearn_neurons), n_neurons))

    x, labels = synthetic_matrix(n, n_neurons, L, args.seed, device)
    print(f"matrix: {n} examples x {n_neurons} neurons fp16 ({x.numel() * 2 / 2**20:.0f} MB), "
          f"{L} languages, device {device}, torch threads {torch.get_num_threads()}", flush=True)

    # warm-up on a sliver so one-off costs (thread pool, allocator) are not timed
    average_precision(x[:, : min(64, n_neurons)], labels, n_labels=L)
    rss_before = rss_bytes() / 2**20
    repeats = max(1, int(getattr(args, "repeats", 1) or 1))
    ap_s = float("inf")
    for _ in range(repeats):  # the machine may be shared: keep the fastest run of each timing
        _sync(device)
        t0 = time.perf_counter()
        ap = average_precision(x, labels, n_labels=L, chunk_size=args.chunk_size)
        _sync(device)
        ap_s = min(ap_s, time.perf_counter() - t0)
    peak_rss = peak_rss_bytes() / 2**20
    print(f"average_precision: {ap_s:.2f} s for {n_neurons} neurons x {L} languages", flush=True)
    t0 = time.perf_counter()
    ap_sorted = average_precision(x, labels, n_labels=L, chunk_size=args.chunk_size, method="sort")
    _sync(device)
    ap_sort_method_s = time.perf_counter() - t0
    methods_diff = float(np.abs(ap_sorted - ap).max())
    del ap_sorted
    print(f"average_precision(method='sort'): {ap_sort_method_s:.2f} s; max |diff| between methods "
          f"{methods_diff:.1e}", flush=True)

    rng = np.random.default_rng(args.seed)
    sample = np.sort(rng.choice(n_neurons, size=n_sample, replace=False))
    x_sample = x[:, torch.as_tensor(sample, device=device)].to(torch.float64).cpu().numpy()
    labels_np = labels.cpu().numpy()
    sk_s = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        ref = np.array([[average_precision_score(labels_np == l, x_sample[:, j])
                         for j in range(n_sample)] for l in range(L)])
        sk_s = min(sk_s, time.perf_counter() - t0)
    sk_per = sk_s / (n_sample * L)
    ours_per = ap_s / (n_neurons * L)
    max_err = float(np.abs(ap[:, sample] - ref).max())
    print(f"sklearn: {sk_per * 1e3:.3f} ms per (neuron, language) on {n_sample} sampled neurons; "
          f"ours {ours_per * 1e6:.2f} us; max |diff| {max_err:.2e}", flush=True)

    sort_s = chunk_sort_s = float("inf")
    chunk = args.chunk_size or max(1, 2**20 // n)
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        for start in range(0, n_neurons, 2048):
            torch.sort(x[:, start:start + 2048], dim=0)
        _sync(device)
        sort_s = min(sort_s, time.perf_counter() - t0)

        t0 = time.perf_counter()
        for start in range(0, n_neurons, chunk):
            stop = min(start + chunk, n_neurons)
            block = torch.empty((stop - start, n), dtype=torch.float32, device=device)
            block.copy_(x[:, start:stop].t())
            torch.sort(block, dim=1, descending=True, stable=True)
        _sync(device)
        chunk_sort_s = min(chunk_sort_s, time.perf_counter() - t0)
    print(f"bare torch.sort(dim=0): {sort_s:.2f} s; AP's own chunked sort alone: {chunk_sort_s:.2f} s",
          flush=True)

    figures = {
        "benchmark": "ap",
        "examples": n, "neurons": n_neurons, "langs": L, "device": str(device),
        "dtype": "float16", "torch_threads": torch.get_num_threads(),
        "cpu_count": __import__("os").cpu_count(), "machine": platform.machine(),
        "repeats": repeats,
        "ap_s": round(ap_s, 4),
        "sklearn_ms_per_neuron_lang": round(sk_per * 1e3, 4),
        "ours_us_per_neuron_lang": round(ours_per * 1e6, 4),
        "sklearn_sample_neurons": n_sample,
        "speedup_vs_sklearn": round(sk_per / ours_per, 1),
        "sort_s": round(sort_s, 4),
        "time_vs_sort": round(ap_s / sort_s, 3),
        "ap_sort_method_s": round(ap_sort_method_s, 4),
        "time_vs_sort_sort_method": round(ap_sort_method_s / sort_s, 3),
        "max_abs_diff_between_methods": methods_diff,
        "chunk_sort_s": round(chunk_sort_s, 4),
        "time_vs_chunk_sort": round(ap_s / chunk_sort_s, 3),
        "max_abs_err_vs_sklearn": max_err,
        "peak_rss_mb": round(peak_rss, 1),
        "rss_before_ap_mb": round(rss_before, 1),
        "ap_extra_rss_mb": round(max(0.0, peak_rss - rss_before), 1),
        "matrix_mb": round(x.numel() * 2 / 2**20, 1),
    }
    print(json.dumps(figures))
    return 0
