"""Cross-modal comparison of language neurons: set overlap, permutation test, rank correlation,
bootstrap confidence intervals. Pure numpy/scipy functions (SPEC §2).

Conventions: rows index the first modality's languages (speech), columns the second's (text),
both in the same language order (default ``deu spa fra cmn jpn``).
"""
from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.stats import rankdata

from engine.errors import UserError

__all__ = ["overlap_matrix", "diagonal_ratio", "permutation_test", "spearman_matrix",
           "diagonal_concentration", "bootstrap_ci", "MAX_PERMUTATION_LANGS"]

# 10! = 3,628,800 matchings is still a fraction of a second; beyond that the exact test is not
# what the caller wants.
MAX_PERMUTATION_LANGS = 10


def overlap_matrix(sets_a: Sequence[np.ndarray], sets_b: Sequence[np.ndarray]) -> np.ndarray:
    """``O[i, j] = |set(sets_a[i]) ∩ set(sets_b[j])|`` as int64 ``[len(sets_a), len(sets_b)]``.

    Each entry of ``sets_a`` / ``sets_b`` is a 1-D array of integer neuron indices (e.g. the
    output of ``top_k``). Duplicate indices inside one array are counted once.
    """
    a = [_index_set(s, f"sets_a[{i}]") for i, s in enumerate(sets_a)]
    b = [_index_set(s, f"sets_b[{j}]") for j, s in enumerate(sets_b)]
    out = np.zeros((len(a), len(b)), dtype=np.int64)
    for i, si in enumerate(a):
        for j, sj in enumerate(b):
            out[i, j] = np.intersect1d(si, sj, assume_unique=True).size
    return out


def _index_set(s, name: str) -> np.ndarray:
    arr = np.asarray(s)
    if arr.ndim != 1:
        raise UserError(f"{name} must be a 1-D array of neuron indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise UserError(f"{name} must hold integer neuron indices, got dtype {arr.dtype}")
    return np.unique(arr)


def _square(O, name: str = "O") -> np.ndarray:
    m = np.asarray(O)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise UserError(f"{name} must be a non-empty square [L, L] matrix, got shape {m.shape}")
    if np.isnan(m.astype(np.float64)).any():
        raise UserError(f"{name} contains NaN")
    return m


def diagonal_ratio(O) -> float:
    """``Σ_i O[i, i] / Σ_{i,j} O[i, j]`` for a square non-negative overlap matrix.

    Edge case (decision): an all-zero matrix (no overlap at all) returns **NaN**, not 0 — the
    ratio is undefined there, and 0 would read as "no diagonal preference" when nothing was
    observed. Negative entries raise ``UserError`` (overlaps are counts).
    """
    m = _square(O).astype(np.float64)
    if (m < 0).any():
        raise UserError("overlap matrix has negative entries; it must hold counts")
    total = m.sum()
    if total == 0:
        return float("nan")
    return float(np.trace(m) / total)


def permutation_test(O, *, n_monte_carlo: int | None = None, seed: int = 0) -> tuple[float, float]:
    """Permutation test of diagonal preference over matchings of languages (SPEC §2).

    Statistic ``D(π) = Σ_i O[i, π(i)] / Σ O``; returns ``(D(identity), p)``.

    Exact (``n_monte_carlo=None``): over all ``L!`` matchings, ``p = #{π : D(π) >= D(id)} / L!``.
    The identity is one of them, so ``p >= 1 / L!`` (1/120 for L = 5). L above
    ``MAX_PERMUTATION_LANGS`` raises ``UserError`` (pass ``n_monte_carlo``).
    Monte Carlo (``n_monte_carlo=n``): n uniform random matchings from
    ``numpy.random.default_rng(seed)``, ``p = (1 + #{D(π) >= D(id)}) / (1 + n)``, which counts
    the identity and so never understates p (Phipson & Smyth 2010, Stat. Appl. Genet. Mol. Biol. 9).

    Comparison: integer matrices are compared exactly on the numerators ``Σ_i O[i, π(i)]``;
    float matrices count ``π`` when ``num(π) >= num(id) - 1e-9 * max(1, |Σ O|)`` so that ties
    lost to rounding still count as ties (conservative: it can only raise p).
    All-zero matrix: the statistic is NaN (see ``diagonal_ratio``) and every matching ties, so
    ``p = 1.0``.
    """
    m = _square(O)
    if (m < 0).any():
        raise UserError("overlap matrix has negative entries; it must hold counts")
    L = m.shape[0]
    if n_monte_carlo is None:
        if L > MAX_PERMUTATION_LANGS:
            raise UserError(f"exact permutation test over {L}! matchings is too large; use at most "
                            f"{MAX_PERMUTATION_LANGS} languages or the Monte Carlo test (n_monte_carlo)")
        perms = np.array(list(itertools.permutations(range(L))), dtype=np.intp)  # [L!, L]
    else:
        if n_monte_carlo < 1:
            raise UserError(f"n_monte_carlo must be >= 1, got {n_monte_carlo}")
        perms = np.argsort(np.random.default_rng(seed).random((int(n_monte_carlo), L)), axis=1)
    numerators = m[np.arange(L)[None, :], perms].sum(axis=1)
    observed = np.trace(m)
    if np.issubdtype(m.dtype, np.integer):
        hits = int(np.count_nonzero(numerators >= observed))
    else:
        tol = 1e-9 * max(1.0, abs(float(m.sum())))
        hits = int(np.count_nonzero(numerators >= observed - tol))
    if n_monte_carlo is None:
        return diagonal_ratio(m), hits / math.factorial(L)
    return diagonal_ratio(m), (1 + hits) / (1 + int(n_monte_carlo))


def spearman_matrix(ap_a, ap_b) -> np.ndarray:
    """``R[i, j]`` = Spearman correlation between ``ap_a[i]`` and ``ap_b[j]`` over neurons.

    ``ap_a`` ``[La, N]``, ``ap_b`` ``[Lb, N]`` (e.g. AP of the speech and of the text task at one
    step). Ties get average ranks, as ``scipy.stats.spearmanr`` does; result float64
    ``[La, Lb]``. A constant row has no rank variance: its correlations are NaN (scipy's
    value, without the warning). NaN inputs raise ``UserError``.
    """
    a = np.asarray(ap_a, dtype=np.float64)
    b = np.asarray(ap_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise UserError(f"ap_a and ap_b must be [L, N] with the same N, got {a.shape} and {b.shape}")
    if a.shape[1] < 2:
        raise UserError("Spearman correlation needs at least two neurons")
    if np.isnan(a).any() or np.isnan(b).any():
        raise UserError("AP vectors contain NaN")
    ra = centred_unit_ranks(a)
    rb = centred_unit_ranks(b)
    with np.errstate(invalid="ignore"):
        return np.clip(ra @ rb.T, -1.0, 1.0)


def centred_unit_ranks(x: np.ndarray) -> np.ndarray:
    """Each row of ``x`` ``[L, N]`` as average ranks (ties share their mean rank), centred and
    scaled to unit norm, float64; a row without rank variance is NaN. The Spearman correlation
    of two rows is the dot product of theirs."""
    # average ranks for ties, one row per thread: numpy's sort releases the GIL, and a row of
    # the Large decoder (491,520 neurons) takes ~50 ms to rank
    workers = min(len(x), len(os.sched_getaffinity(0)))
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            r = np.array(list(pool.map(rankdata, x)), dtype=np.float64).reshape(x.shape)
    else:
        r = rankdata(x, axis=1)
    r -= r.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(r, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, r / np.where(norm > 0, norm, 1.0), np.nan)


def diagonal_concentration(R, *, clip_negative: bool = False) -> float:
    """``Σ_i R[i, i] / Σ_{i,j} R[i, j]`` of a square correlation matrix (1/L = uniform mass).

    Negative correlations (decision): by default the **raw** ρ values are used, as the paper's
    formula reads; ``clip_negative=True`` sets negative entries to 0 first (mass
    interpretation). Returns NaN when the denominator is not positive (the ratio is then not a
    share of mass) or when R contains NaN (a constant AP vector).
    """
    m = np.asarray(R, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise UserError(f"R must be a non-empty square [L, L] matrix, got shape {m.shape}")
    if np.isnan(m).any():
        return float("nan")
    if clip_negative:
        m = np.clip(m, 0.0, None)
    total = m.sum()
    if not total > 0:
        return float("nan")
    return float(np.trace(m) / total)


def bootstrap_ci(statistic: Callable[[np.ndarray], float], examples, *, n_boot: int = 1000,
                 seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``statistic`` over resampled examples.

    Parameters
    ----------
    statistic : callable(indices) -> float
        Receives an int64 array of example indices (with repetitions) into the original
        examples and returns the statistic computed on that resample (e.g. AP -> top-k ->
        overlap -> diagonal ratio).
    examples : int or array of labels [n_examples]
        An int ``n``: plain resampling of ``n`` indices with replacement. An array of labels:
        **stratified** resampling — within each label, as many indices as it has, drawn with
        replacement from that label's examples — so every language keeps its positives and its
        size. Indices are returned grouped by label in sorted-label order.
    n_boot : int, seed : int, alpha : float
        ``n_boot`` replicates from ``numpy.random.default_rng(seed)``; the interval is the
        ``alpha/2`` and ``1 - alpha/2`` quantiles (linear interpolation) of the replicates.

    Replicates where the statistic is NaN are dropped; if all are NaN, ``(nan, nan)``.
    Same inputs and seed give the same interval.
    """
    if n_boot < 1:
        raise UserError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise UserError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    if np.ndim(examples) == 0:
        n = int(examples)
        if n < 1:
            raise UserError(f"need at least one example to resample, got {n}")
        strata = [np.arange(n, dtype=np.int64)]
    else:
        labels = np.asarray(examples)
        if labels.ndim != 1 or labels.size == 0:
            raise UserError("examples must be an int or a non-empty 1-D array of labels")
        strata = [np.flatnonzero(labels == v).astype(np.int64) for v in np.unique(labels)]
    values = np.empty(n_boot, dtype=np.float64)
    for b in range(n_boot):
        idx = np.concatenate([s[rng.integers(0, s.size, s.size)] for s in strata])
        values[b] = float(statistic(idx))
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)
