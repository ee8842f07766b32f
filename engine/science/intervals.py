"""Confidence intervals of the cross-modal statistics: balanced half-sampling of sentences.

Estimand. Every statistic of ``engine.science.crossmodal`` (diagonal ratio and total of top-k overlap,
the k sweep, Spearman concentration) is a function of the two modalities' AP vectors. Its
estimand is the value on the generating population: the statistic of the AP vectors one would
measure on unboundedly many sentences of each language.

Why not the with-replacement bootstrap. A bootstrap resample draws a sentence several times,
in both modalities at once; that sentence's content then moves both modalities' AP together and
moves the top-k cuts, and a resample has only ~63 % distinct sentences, which shifts every cut
further. On planted populations its intervals covered neither the truth nor their own estimate.

Method: balanced half-samples (McCarthy 1969, "Pseudo-replication: half samples", Rev. Int.
Stat. Inst. 37; Wolter 2007, *Introduction to Variance Estimation*, ch. 3). The sentence ids
are split into two halves at random, the same split for every language and both modalities
(so a sentence and its translations, spoken or written, always stay together); each half is a
replicate with weights 0/1, both halves of every split are used, and no example is
duplicated. The two halves of a split are independent samples of half the size, so their
difference measures the sampling spread of any statistic, smooth or not; the half-samples'
mean against the full estimate measures the bias that AP noise gives the top-k cuts, which
is corrected at the two rates it can shrink at (``interval``; the bias correction is
Quenouille's, as in the jackknife: Efron & Tibshirani 1993, *An Introduction to the
Bootstrap*, ch. 10-11). The interval always contains the estimate.

Coverage, containment, power and size are measured on planted populations by
``python -m engine bench coverage`` (``engine.tools.benchmarks.coverage``).
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from engine.errors import UserError

__all__ = ["Z95", "QUANTILES", "MIN_DEFINED", "half_sample_splits", "half_sample_weights", "interval",
           "se_from_ci", "mean_difference_ci", "ratio_se"]

#: Two-sided 95% normal quantile: turns a 95% interval into a standard error (half-width / Z95).
Z95 = NormalDist().inv_cdf(0.975)
QUANTILES = (2.5, 97.5)
#: An interval needs the statistic defined on at least this share of the half-samples; a
#: statistic that is often undefined (0/0) on half the data has no stable sampling distribution.
MIN_DEFINED = 0.9


def half_sample_splits(sentence_ids, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Membership of each sentence id in ``n_boot`` half-samples (both halves of each split).

    ``sentence_ids``: any iterable of ids (duplicates across languages are one sentence).
    Returns ``{sid: bool [n_boot]}``: replicate ``2s`` is half A of split s, ``2s + 1`` its
    complement; an odd ``n_boot`` drops the last complement. A split is a random permutation of
    the sorted unique ids (``numpy.random.default_rng(seed)``) cut in the middle, so every
    replicate holds ``floor`` or ``ceil`` of half the sentences. Same ids and seed, same splits.
    """
    if n_boot < 0:
        raise UserError(f"n_boot must be >= 0, got {n_boot}")
    ids = sorted({str(s) for s in sentence_ids})
    rng = np.random.default_rng(seed)
    member = np.zeros((len(ids), n_boot), dtype=bool)
    for s in range((n_boot + 1) // 2):
        half = np.zeros(len(ids), dtype=bool)
        half[rng.permutation(len(ids))[: len(ids) // 2]] = True
        member[:, 2 * s] = half
        if 2 * s + 1 < n_boot:
            member[:, 2 * s + 1] = ~half
    return {sid: member[i] for i, sid in enumerate(ids)}


def half_sample_weights(row_sentence_ids, splits: dict[str, np.ndarray]) -> np.ndarray:
    """0/1 weights ``int64 [n_boot, n_rows]``: row i is in replicate b iff its sentence is.

    ``row_sentence_ids``: the sentence id of every row (any modality, any language); ids absent
    from ``splits`` raise ``UserError``. The weights are multiplicities for
    ``ranking.resampled_average_precision``.
    """
    rows = [str(s) for s in row_sentence_ids]
    missing = sorted({s for s in rows if s not in splits})
    if missing:
        raise UserError(f"sentence ids {missing[:3]} have no half-sample membership; build the splits "
                        "from every row's sentence id")
    if not rows:
        return np.zeros((0, 0), dtype=np.int64)
    return np.stack([splits[s] for s in rows], axis=1).astype(np.int64)


def interval(point: float, replicates, *, support=(-math.inf, math.inf),
             min_defined: float = MIN_DEFINED) -> tuple[list[float] | None, str | None]:
    """95% interval of a statistic from its half-sample replicates: ``(ci, reason)``.

    ``point``: the estimate θ on all the data; ``replicates``: float ``[B]``, the statistic on
    each half-sample (NaN where undefined), in complementary pairs ``(2s, 2s + 1)`` as
    ``half_sample_splits`` makes them.

    Spread: ``S² = mean_s (θ_A − θ_B)² / 2`` over the pairs. The two halves of a split are
    independent samples of n/2 sentences, so ``S²`` estimates Var(θ at n/2) for *any*
    statistic, smooth or not (the spread of θ_A around θ given the data does not: for top-k
    statistics it understated the sampling SD by half on planted populations); Var(θ at n/2)
    is at least Var(θ at n), so the interval is conservative by up to √2 for smooth statistics.
    Bias: top-k statistics are biased (AP noise blurs the cuts, more so on half the data). With
    ``θ̄`` the mean of the half-samples, a bias of order 1/n is removed by ``2θ − θ̄``, one of
    order 1/√n by ``θ + (θ − θ̄) / (√2 − 1)``. The interval is the hull of ``c ± z S`` over the
    centres ``c`` in {θ, 2θ − θ̄, θ + (θ − θ̄)/(√2 − 1)}, so it contains ``point``, and is cut to
    ``support``, the statistic's possible values (a share lies in [0, 1]).

    Returns ``(None, reason)`` instead, with a one-line reason, when ``point`` is not finite,
    when there are no complete pairs, or when fewer than ``min_defined`` replicates are finite.
    """
    reps = np.asarray(replicates, dtype=np.float64).ravel()
    if not np.isfinite(point):
        return None, "the estimate itself is undefined"
    if reps.size < 2:
        return None, "no half-samples (n_boot = 0)"
    finite = reps[np.isfinite(reps)]
    if finite.size < min_defined * reps.size:
        return None, (f"undefined on {reps.size - finite.size} of {reps.size} half-samples: "
                      "no stable sampling distribution")
    pairs = reps[: reps.size // 2 * 2].reshape(-1, 2)
    d = pairs[:, 0] - pairs[:, 1]
    d = d[np.isfinite(d)]
    if d.size == 0:
        return None, "no split with the statistic defined on both halves"
    spread = Z95 * math.sqrt(float(np.mean(d ** 2)) / 2)
    p, mean = float(point), float(np.mean(finite))
    centres = (p, 2 * p - mean, p + (p - mean) / (math.sqrt(2) - 1))
    lo, hi = min(centres) - spread, max(centres) + spread
    # cut to the support, never past the estimate (a ratio of sums can round to 1 + 1e-16)
    return [float(max(lo, min(support[0], p))), float(min(hi, max(support[1], p)))], None


def se_from_ci(ci) -> float:
    """Standard error implied by a 95% interval ``[lo, hi]``: ``(hi - lo) / (2 * Z95)``.

    A roughly normal statistic's interval is read this way; an asymmetric interval contributes
    its mean half-width. NaN when ``ci`` is None or holds None.
    """
    if ci is None or ci[0] is None or ci[1] is None:
        return float("nan")
    return (float(ci[1]) - float(ci[0])) / (2.0 * Z95)


def mean_difference_ci(a, a_se, b, b_se) -> tuple[float, float, float]:
    """Mean over items of ``a_i - b_i`` with a normal 95% interval.

    ``a``, ``b``: point estimates, ``a_se``, ``b_se``: their standard errors (sequences of
    one length n >= 1). The items are treated as independent, so
    ``se = sqrt(sum(a_se**2 + b_se**2)) / n``; where ``a_i`` and ``b_i`` are measured on the
    same inputs (steering at two steps on one held-out set) their errors correlate
    positively and this interval is conservative (too wide). Returns ``(mean, lo, hi)``;
    NaN throughout if any input is NaN or n == 0.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    a_se, b_se = np.asarray(a_se, float), np.asarray(b_se, float)
    if a.size == 0 or not all(np.isfinite(x).all() for x in (a, b, a_se, b_se)):
        return float("nan"), float("nan"), float("nan")
    d = float(np.mean(a - b))
    se = float(np.sqrt(np.sum(a_se ** 2 + b_se ** 2)) / a.size)
    return d, d - Z95 * se, d + Z95 * se


def ratio_se(num: float, num_se: float, den: float, den_se: float) -> float:
    """Delta-method standard error of ``num / den`` for independent num and den:
    ``sqrt(num_se**2 + (num/den)**2 * den_se**2) / |den|``. NaN if den is 0 or an input NaN."""
    if den == 0 or any(math.isnan(float(x)) for x in (num, num_se, den, den_se)):
        return float("nan")
    r = num / den
    return math.sqrt(num_se ** 2 + r ** 2 * den_se ** 2) / abs(den)
