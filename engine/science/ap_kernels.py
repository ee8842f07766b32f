"""Compiled CPU loops of exact average precision for 16-bit (fp16 / bf16) activations.

Two numba kernels, used by ``engine.science.ranking`` on CPU; the arithmetic is the numpy path's,
element for element, so results are bit-identical to it (tests compare both, and both with
scikit-learn):

- ``ap_sums``: for each neuron (column) of a block, a two-pass LSD radix sort of its
  order-preserving 16-bit keys, carrying each example's label in the low byte, then one walk
  over the sorted examples that accumulates, per tie group (one threshold), the running count
  of every label and of all examples, and adds ``TP_l(g) / N_g`` for each example of label l
  in the group, in sorted order.
- ``resampled_ap_sums``: the same sort, carrying the example index instead of the label, then
  one walk per neuron over that single order for all B resamples at once: weights are rows of
  ``W [n, B]``, so the inner loop runs over resamples and the compiler vectorises it.

Why compiled: a numpy pipeline of the same algorithm makes ~12 passes over each block (keys,
argsort, gathers, cumulative sums, shifts, division, scatter) and was memory-bound at ~24 ns
per element; these loops touch each element a handful of times in cache. Both release the GIL,
so ``ranking`` runs blocks in parallel threads. Figures: ``python -m engine bench ap``.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["ap_sums", "resampled_ap_sums", "MAX_LABELS", "MAX_EXAMPLES_RESAMPLED"]

MAX_LABELS = 256  # the label rides in one byte of the sort key
MAX_EXAMPLES_RESAMPLED = 65536  # the example index rides in 16 bits of the sort key


@njit(nogil=True, cache=True)
def _keys(bits, start, stop, payload, shift, nonfinite_mag, keys):
    """``keys[i, p] = descending_key(bits[p, start + i]) << shift | payload[p]``; False if a value
    is NaN or infinite. Reads rows of the [n, N] matrix contiguously, writes the transpose."""
    n = bits.shape[0]
    c = stop - start
    sh = np.uint32(shift)
    bad = np.uint32(0)
    for p in range(n):  # rows of the [n, N] matrix are read contiguously, the transpose is written
        extra = np.uint32(payload[p])
        for i in range(c):
            b = np.uint32(bits[p, start + i])
            m = b & np.uint32(0x7FFF)
            bad |= np.uint32(m >= nonfinite_mag)
            # 0x7FFF - m for a value >= 0, 0x7FFF + m below: -0.0 and +0.0 share a key, larger
            # values get smaller keys (branch-free, so the loop vectorises)
            k = np.uint32(0x7FFF) - m + ((m * (b >> np.uint32(15))) << np.uint32(1))
            keys[i, p] = (k << sh) | extra
    return bad == 0
    return True


@njit(nogil=True, cache=True)
def _radix_sort_row(row, tmp, shift):
    """Sort ``row`` (uint32) in place by bits ``shift .. shift + 15``, stably, in two byte passes."""
    n = row.shape[0]
    lo = np.zeros(257, np.int64)
    hi = np.zeros(257, np.int64)
    s0 = np.uint32(shift)
    s1 = np.uint32(shift + 8)
    for p in range(n):
        v = row[p]
        lo[((v >> s0) & np.uint32(255)) + 1] += 1
        hi[((v >> s1) & np.uint32(255)) + 1] += 1
    for d in range(256):
        lo[d + 1] += lo[d]
        hi[d + 1] += hi[d]
    for p in range(n):
        v = row[p]
        d = (v >> s0) & np.uint32(255)
        tmp[lo[d]] = v
        lo[d] += 1
    for p in range(n):
        v = tmp[p]
        d = (v >> s1) & np.uint32(255)
        row[hi[d]] = v
        hi[d] += 1


@njit(nogil=True, cache=True)
def ap_sums(bits, start, stop, labels, n_labels, nonfinite_mag, sums):
    """``sums[i, l] = sum over examples of label l of TP_l(g) / N_g`` for columns ``start:stop``.

    bits : uint16 [n, N], the fp16/bf16 bit patterns (any strides). labels : uint8 [n].
    sums : float64 [stop - start, n_labels], overwritten. Returns False (sums undefined) when a
    value is NaN or infinite. Dividing by the label's positives gives scikit-learn's AP.
    """
    n = bits.shape[0]
    c = stop - start
    keys = np.empty((c, n), np.uint32)
    if not _keys(bits, start, stop, labels, 8, nonfinite_mag, keys):
        return False
    tmp = np.empty(n, np.uint32)
    tp = np.zeros(n_labels, np.int64)
    acc = np.zeros(n_labels, np.float64)
    for i in range(c):
        row = keys[i]
        _radix_sort_row(row, tmp, 8)
        tp[:] = 0
        acc[:] = 0.0
        g = 0  # first sorted position of the current tie group
        for p in range(n):
            v = row[p]
            tp[v & np.uint32(255)] += 1
            if p + 1 < n and (row[p + 1] >> np.uint32(8)) == (v >> np.uint32(8)):
                continue
            # p ends a group: each of its examples reads the counts here, N = p + 1
            for r in range(g, p + 1):
                l = row[r] & np.uint32(255)
                acc[l] += tp[l] / (p + 1)
            g = p + 1
        sums[i, :] = acc
    return True


@njit(nogil=True, cache=True)
def resampled_ap_sums(bits, start, stop, labels, n_labels, nonfinite_mag, weights, sums):
    """Weighted ``ap_sums`` for B resamples from one sort per column.

    weights : float64 [n, B], integer multiplicities (exact in float64). sums : float64
    [stop - start, n_labels, B], overwritten: ``sum over rows e of label l of
    w[e, b] * TP_l(g) / max(N_g, 1)`` with weighted running counts at the end of e's tie group.
    Needs n <= 65536. Returns False when a value is NaN or infinite.
    """
    n = bits.shape[0]
    c = stop - start
    B = weights.shape[1]
    index = np.arange(n).astype(np.uint32)
    keys = np.empty((c, n), np.uint32)
    if not _keys(bits, start, stop, index, 16, nonfinite_mag, keys):
        return False
    tmp = np.empty(n, np.uint32)
    tp = np.zeros((n_labels, B), np.float64)
    total = np.zeros(B, np.float64)
    for i in range(c):
        row = keys[i]
        _radix_sort_row(row, tmp, 16)
        tp[:, :] = 0.0
        total[:] = 0.0
        out = sums[i]
        out[:, :] = 0.0
        p = 0
        while p < n:
            key = row[p] >> np.uint32(16)
            q = p
            while q < n and (row[q] >> np.uint32(16)) == key:
                e = row[q] & np.uint32(0xFFFF)
                w = weights[e]
                t = tp[labels[e]]
                for b in range(B):
                    t[b] += w[b]
                    total[b] += w[b]
                q += 1
            for r in range(p, q):
                e = row[r] & np.uint32(0xFFFF)
                w = weights[e]
                l = labels[e]
                t = tp[l]
                o = out[l]
                for b in range(B):
                    o[b] += w[b] * t[b] / max(total[b], 1.0)
            p = q
    return True
