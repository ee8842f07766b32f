"""Cross-modal statistics of one decoding step, with their intervals, on plain arrays.

The compare stage and ``compare_activations`` (anyone's recordings) compute through these
functions, so the two cannot disagree. Inputs are the two modalities' AP matrices ``[L, N]``
(speech = rows, text = columns of every L x L matrix, in one language order) and their
secondary keys (point-biserial r, which breaks ties of equal AP, ``ranking.top_k``).

Intervals come from balanced half-samples of the sentences (``engine.science.intervals``): every
replicate's AP is the exact AP of that half. The Spearman statistics carry a second check:
rank correlations over N neurons are attenuated by AP sampling noise wherever most neurons
differ little between languages, and no resampling undoes that. Their interval is given only
where the AP ranks are reliable (split-half reliability, Spearman–Brown corrected, at least
``RELIABILITY_MIN`` in every modality and language) and, for the concentration, where the
denominator ``Σ R`` is bounded away from zero; otherwise it is ``None`` with the reason in
``ci_notes``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from engine.errors import UserError
from engine.science import intervals as iv
from engine.science import overlap as ov
from engine.science.ranking import average_precision, resampled_average_precision, top_k

__all__ = ["overlap_sweep", "statistics_of_overlap", "set_statistics", "rank_statistics",
           "replicate_statistics", "summarize_step", "step_differences", "compare_activations",
           "compare_steps", "step_points",
           "MONTE_CARLO_PERMUTATIONS", "RELIABILITY_MIN"]

#: Random matchings of the Monte Carlo permutation test, used above ``ov.MAX_PERMUTATION_LANGS``.
MONTE_CARLO_PERMUTATIONS = 100_000
#: Split-half reliability (Spearman–Brown) of every AP vector below which the Spearman
#: statistics' interval is withheld. On the planted populations of ``bench coverage`` the
#: concentration's interval covered the truth in 29 of 30 cases at reliabilities 0.74-0.79 and in
#: 31 of 60 at about 0.6 (the attenuation no longer cancels in the ratio).
RELIABILITY_MIN = 0.7
#: Memory for one batch of half-samples' AP and r in ``compare_activations`` (both sides).
REPLICATE_MEMORY_MB = 256
#: Statistics with an interval per step, in artifact order.
STATS = ("diagonal_ratio", "total", "spearman_diag_concentration", "spearman_diag_concentration_clipped")
_ANY = (-float("inf"), float("inf"))
#: Possible values of the statistics whose intervals are cut to them (differences: their spans).
SUPPORT = {"diagonal_ratio": (0.0, 1.0), "total": (0.0, float("inf")), "sweep_mean": (0.0, 1.0),
           "spearman_diag_concentration_clipped": (0.0, 1.0)}
_RANKED = ("spearman_diag_concentration", "spearman_diag_concentration_clipped")


#: How the intervals are made, as the artifacts say it. The module was engine.intervals when
#: artifacts began to carry this text (it is engine.science.intervals now): the wording stays, so
#: artifacts keep their bytes.
CI_METHOD = "balanced half-samples; hull of percentile and basic 95% intervals (engine.intervals)"


def overlap_sweep(ap_speech: np.ndarray, ap_text: np.ndarray, ks, sep_speech: np.ndarray | None = None,
                  sep_text: np.ndarray | None = None) -> np.ndarray:
    """Overlap matrices ``O[k_index, i, j] = |top_k(speech_i) ∩ top_k(text_j)|`` for every k in ``ks``.

    ``ap_*``: ``[L, N]`` AP; ``sep_*``: ``[L, N]`` secondary keys (``ranking.top_k``). One
    ordering of the top ``max(ks)`` per (side, language) serves every k, because top-k under a
    total order is a prefix of top-K for k <= K: a neuron is in both top-k sets iff the larger
    of its two positions is below k. int64 ``[len(ks), L, L]``; equals ``overlap_matrix`` of
    the ``top_k`` sets for each k (tested).
    """
    L, N = ap_speech.shape
    ks = [int(k) for k in ks]
    K = max(ks) if ks else 0
    sep_speech = [None] * L if sep_speech is None else sep_speech
    sep_text = [None] * L if sep_text is None else sep_text
    orders_s = [top_k(ap_speech[i], K, sep_speech[i]) for i in range(L)]
    orders_t = [top_k(ap_text[j], K, sep_text[j]) for j in range(L)]
    out = np.zeros((len(ks), L, L), dtype=np.int64)
    position = np.full(N, K, dtype=np.int64)  # K = "not in the top K"
    rank = np.arange(K)
    bounds = np.asarray(ks)
    for j in range(L):
        position[orders_t[j]] = rank
        for i in range(L):
            last = np.sort(np.maximum(rank, position[orders_s[i]]))
            out[:, i, j] = np.searchsorted(last, bounds, side="left")
        position[orders_t[j]] = K
    return out


def permutation_method(n_langs: int, seed: int = 0) -> dict:
    """How ``statistics_of_overlap`` tests L languages: exact up to 10, Monte Carlo above."""
    if n_langs <= ov.MAX_PERMUTATION_LANGS:
        return {"method": "exact", "matchings": int(np.prod(np.arange(1, n_langs + 1)))}
    return {"method": "monte_carlo", "matchings": MONTE_CARLO_PERMUTATIONS, "seed": int(seed)}


def statistics_of_overlap(O: np.ndarray, seed: int = 0) -> dict:
    """The overlap-based statistics of one matrix: matrix, diagonal ratio, total, permutation test.

    ``perm_method`` says which test gave ``perm_p``: exact over L! matchings for L <= 10, else
    Monte Carlo over ``MONTE_CARLO_PERMUTATIONS`` random matchings with ``seed``.
    """
    method = permutation_method(len(O), seed)
    n_mc = None if method["method"] == "exact" else MONTE_CARLO_PERMUTATIONS
    stat, p = ov.permutation_test(O, n_monte_carlo=n_mc, seed=seed)
    return {"matrix": np.asarray(O).tolist(), "diagonal_ratio": ov.diagonal_ratio(O), "total": int(np.sum(O)),
            "perm_stat": float(stat), "perm_p": float(p), "perm_method": method}


def set_statistics(ap_speech: np.ndarray, ap_text: np.ndarray, k: int, sep_speech: np.ndarray | None = None,
                   sep_text: np.ndarray | None = None) -> dict:
    """Overlap-based statistics of top-k sets of two AP matrices ``[L, N]`` (ties broken by ``sep_*``)."""
    return statistics_of_overlap(overlap_sweep(ap_speech, ap_text, [k], sep_speech, sep_text)[0])


def rank_statistics(ap_speech: np.ndarray, ap_text: np.ndarray) -> dict:
    """Spearman matrix ``R[i, j]`` over neurons and its diagonal concentration, raw and clipped."""
    R = ov.spearman_matrix(ap_speech, ap_text)
    # the paper's formula uses raw rho; the clipped variant is reported beside it because a
    # near-zero sum of mixed-sign correlations makes the raw ratio meaningless
    return {"spearman": R.tolist(), "spearman_diag_concentration": ov.diagonal_concentration(R),
            "spearman_diag_concentration_clipped": ov.diagonal_concentration(R, clip_negative=True)}


def replicate_statistics(ap_s, ap_x, sep_s, sep_x, k: int, ks) -> dict:
    """Every statistic of one replicate: set statistics at k, the diagonal ratio at every k of
    the sweep (all sets from one ordering per side and language), and the rank statistics.

    Also returns ``"ranks"``: the centred unit ranks ``(speech [L, N], text [L, N])`` whose
    inner products are Spearman correlations (for the split-half reliability)."""
    ks = list(ks)
    O = overlap_sweep(ap_s, ap_x, [k, *ks], sep_s, sep_x)
    us, ux = ov.centred_unit_ranks(np.asarray(ap_s, np.float64)), ov.centred_unit_ranks(np.asarray(ap_x, np.float64))
    R = np.clip(us @ ux.T, -1.0, 1.0)
    return {"diagonal_ratio": ov.diagonal_ratio(O[0]), "total": float(O[0].sum()),
            "spearman_diag_concentration": ov.diagonal_concentration(R),
            "spearman_diag_concentration_clipped": ov.diagonal_concentration(R, clip_negative=True),
            "spearman_sum": float(R.sum()), "sweep": [ov.diagonal_ratio(o) for o in O[1:]],
            "ranks": (us, ux)}


def _reliability(r_half: np.ndarray) -> np.ndarray:
    # Spearman–Brown: the reliability of the full sample from the correlation of its halves
    return 2 * r_half / (1 + r_half)


def summarize_step(point: dict, replicates: Iterable[tuple], k: int, ks: Sequence[int],
                   n_boot: int) -> tuple[dict, dict]:
    """One step's entry with intervals, from the point AP and the half-samples' AP.

    ``point``: ``{"ap_s", "ap_x", "sep_s", "sep_x"}`` on all the data; ``replicates``: yields
    ``(ap_s, sep_s, ap_x, sep_x)`` of half-samples ``0..n_boot-1`` in order (``2s`` and
    ``2s + 1`` complementary). Returns ``(entry, reps)``: ``entry`` has the overlap keys
    (``matrix``, ``diagonal_ratio``, ``total``, ``perm_*``, ``spearman``, concentrations), each
    statistic's ``*_ci`` (``[lo, hi]`` or None), ``ci_notes`` (why an interval is None),
    ``ci_method``, ``reliability`` and the sweep ``k_sweep``; ``reps`` holds the replicate
    values (float ``[n_boot]``, ``"sweep"``: ``[n_boot, len(ks)]``) for ``step_differences``.
    """
    ks = [int(v) for v in ks]
    ap_s, ap_x, sep_s, sep_x = point["ap_s"], point["ap_x"], point["sep_s"], point["sep_x"]
    O = overlap_sweep(ap_s, ap_x, [k, *ks], sep_s, sep_x)
    entry = {"k": int(k), **statistics_of_overlap(O[0]), **rank_statistics(ap_s, ap_x)}
    R = np.asarray(entry["spearman"])
    sweep_point = [ov.diagonal_ratio(o) for o in O[1:]]
    values = {s: [] for s in (*STATS, "spearman_sum")}
    sweep, half_r = [], {"speech": [], "text": []}
    held = None
    for b, rep in enumerate(replicates):
        st = replicate_statistics(rep[0], rep[2], rep[1], rep[3], k, ks)
        for s in values:
            values[s].append(st[s])
        sweep.append(st["sweep"])
        if b % 2 == 0:
            held = st["ranks"]
        else:
            for side, a, c in (("speech", held[0], st["ranks"][0]), ("text", held[1], st["ranks"][1])):
                half_r[side].append(np.einsum("ln,ln->l", a, c))
    reps = {s: np.asarray(v, np.float64) for s, v in values.items()}
    reps["sweep"] = np.asarray(sweep, np.float64).reshape(len(sweep), len(ks))
    notes, cis = {}, {}
    point_values = {**{s: entry[s] for s in STATS}, "spearman_sum": float(R.sum())}
    for s in (*STATS, "spearman_sum"):
        cis[s], why = iv.interval(point_values[s], reps[s], support=SUPPORT.get(s, _ANY)) if n_boot else (None, "n_boot = 0")
        if why:
            notes[s] = why
    reliability = {side: (_reliability(np.nanmean(np.asarray(v), axis=0)).tolist() if v else None)
                   for side, v in half_r.items()}
    if n_boot:
        lowest = min(min(v) for v in reliability.values()) if all(reliability.values()) else float("nan")
        unreliable = not lowest >= RELIABILITY_MIN
        near_zero = cis["spearman_sum"] is None or cis["spearman_sum"][0] <= 0 <= cis["spearman_sum"][1]
        for s in _RANKED:
            if cis[s] is None:
                continue
            if unreliable:
                cis[s], notes[s] = None, (f"AP ranks unreliable: split-half reliability {lowest:.2f} < "
                                          f"{RELIABILITY_MIN}, so the rank correlation is attenuated by sampling noise")
            elif s == "spearman_diag_concentration" and near_zero:
                cis[s], notes[s] = None, ("denominator sum(R) is not bounded away from 0 (its interval "
                                          f"{_fmt(cis['spearman_sum'])}), so the ratio has no stable distribution")
    for s in STATS:
        entry[f"{s}_ci"] = cis[s]
    notes.pop("spearman_sum", None)
    entry.update({"n_boot": int(n_boot), "ci_method": CI_METHOD, "ci_notes": notes, "reliability": reliability})
    sweep_cis = [iv.interval(p, reps["sweep"][:, i], support=(0.0, 1.0))[0] if n_boot else None
                 for i, p in enumerate(sweep_point)]
    entry["k_sweep"] = {"ks": ks, "diagonal_ratio": sweep_point, "diagonal_ratio_ci": sweep_cis}
    reps["sweep_mean"] = reps["sweep"].mean(axis=1) if ks else np.zeros(len(sweep))
    return entry, reps


def _fmt(ci) -> str:
    return "none" if ci is None else f"[{ci[0]:.3g}, {ci[1]:.3g}]"


#: The statistics whose step-to-step differences the ordering claims read.
DIFFERENCE_STATS = ("diagonal_ratio", "total", "sweep_mean")


def step_differences(points: dict, reps: dict) -> dict:
    """``stat(a) − stat(b)`` for every pair of steps a < b, with an interval from the same half-samples.

    ``points``: ``{step: {stat: value}}`` (``sweep_mean``: the mean diagonal ratio over the k
    sweep); ``reps``: ``{step: {stat: float [n_boot]}}`` from ``summarize_step``, the same
    sentence splits at every step. Returns ``{stat: {"a-b": {"estimate", "ci", "note"}}}``.
    An ordering "a above b" holds on the data when the interval's lower bound is above 0.
    """
    steps = sorted(points, key=int)
    out = {}
    for s in DIFFERENCE_STATS:
        out[s] = {}
        for i, a in enumerate(steps):
            for b in steps[i + 1:]:
                d = float(points[a][s]) - float(points[b][s])
                ra, rb = reps[a][s], reps[b][s]
                span = SUPPORT.get(s, _ANY)
                ci, why = (iv.interval(d, ra - rb, support=(span[0] - span[1], span[1] - span[0]))
                           if len(ra) and len(ra) == len(rb) else (None, "no half-samples"))
                out[s][f"{a}-{b}"] = {"estimate": d, "ci": ci, "note": why}
    return out


def _check_inputs(speech, text, langs, sentence_ids, k, ks, n_boot):
    s, x = np.asarray(speech), np.asarray(text)
    if s.ndim != 2 or s.shape != x.shape:
        raise UserError(f"speech and text must be arrays [n, N] of one shape, got {s.shape} and {x.shape}")
    n, N = s.shape
    if len(langs) != n or len(sentence_ids) != n:
        raise UserError(f"langs ({len(langs)}) and sentence_ids ({len(sentence_ids)}) need one entry per row ({n})")
    keys = list(zip(map(str, sentence_ids), map(str, langs)))
    if len(set(keys)) != n:
        raise UserError("a (sentence id, language) pair occurs twice; each row must be one sentence in one language")
    if not 1 <= int(k) <= N or any(not 1 <= int(v) <= N for v in ks):
        raise UserError(f"k and every k of ks must be in 1..N={N}, got k={k}, ks={list(ks)}")
    if n_boot < 0 or n_boot == 1:
        raise UserError(f"n_boot must be 0 (no intervals) or >= 2 (half-samples come in pairs), got {n_boot}")
    return s, x


def _prepare(speech, text, langs, sentence_ids, n_boot, seed):
    study = list(dict.fromkeys(str(v) for v in langs))
    labels = np.array([study.index(str(v)) for v in langs])
    weights = iv.half_sample_weights(sentence_ids, iv.half_sample_splits(sentence_ids, n_boot, seed))
    return study, labels, weights


def _one_step(s, x, labels, L, weights, k, ks, n_boot) -> tuple[dict, dict]:
    ap_s, sep_s = average_precision(s, labels, n_labels=L, return_separation=True)
    ap_x, sep_x = average_precision(x, labels, n_labels=L, return_separation=True)

    def replicates():
        # as many half-samples per sort as REPLICATE_MEMORY_MB holds: AP and r, float64, both sides
        chunk = max(1, int(REPLICATE_MEMORY_MB * 2 ** 20 // (4 * 8 * L * s.shape[1])))
        for start in range(0, n_boot, chunk):
            w = weights[start:start + chunk]
            (as_, rs), (ax, rx) = (resampled_average_precision(m, labels, w, n_labels=L) for m in (s, x))
            for b in range(len(w)):
                yield as_[b], rs[b], ax[b], rx[b]

    return summarize_step({"ap_s": ap_s, "ap_x": ap_x, "sep_s": sep_s, "sep_x": sep_x},
                          replicates(), k, ks, n_boot)


def compare_activations(speech, text, langs, sentence_ids, *, k: int, ks=(), n_boot: int = 200,
                        seed: int = 0) -> dict:
    """The compare stage's statistics of one step on in-memory activations.

    Parameters
    ----------
    speech, text : float arrays ``[n, N]`` (numpy or torch)
        Row i of each is sentence ``sentence_ids[i]`` in language ``langs[i]``, spoken and
        written; N neurons (any recording: nnsight, TransformerLens, pyvene).
    langs, sentence_ids : sequences of length n
        Languages are ordered by first appearance; sentences with one id across languages are
        translations and stay together in every half-sample.
    k : top-k size; ks : the k sweep (diagonal ratio at each k).
    n_boot : number of half-samples (0: no intervals); seed : their sentence splits.

    Returns
    -------
    dict with the keys of one step's ``overlap`` entry of the compare stage (``langs``, ``k``,
    ``matrix``, ``diagonal_ratio``, ``total``, ``perm_stat``, ``perm_p``, ``perm_method``,
    ``spearman``, ``spearman_diag_concentration`` and ``_clipped``, each statistic's ``_ci``,
    ``ci_notes``, ``ci_method``, ``reliability``, ``n_boot``) and ``k_sweep``: ``ks``,
    ``diagonal_ratio``, ``diagonal_ratio_ci``. Several steps, with their differences:
    ``compare_steps``.
    """
    s, x = _check_inputs(speech, text, langs, sentence_ids, k, ks, n_boot)
    study, labels, weights = _prepare(s, x, langs, sentence_ids, n_boot, seed)
    entry, _ = _one_step(s, x, labels, len(study), weights, k, ks, n_boot)
    return {"langs": study, **entry}


def compare_steps(speech: dict, text: dict, langs, sentence_ids, *, k: int, ks=(), n_boot: int = 200,
                  seed: int = 0) -> dict:
    """``compare_activations`` at several decoding steps, with the steps' differences.

    ``speech``, ``text``: ``{step: [n, N] array}`` with the same rows at every step. Returns the
    compare stage's ``overlap`` (``{step: entry}``), ``k_sweep`` (``ks``, ``diagonal_ratio`` and
    ``diagonal_ratio_ci`` per step) and ``step_differences`` (``step_differences``: one set of
    sentence splits for every step, so a difference's interval is that of the difference).
    """
    steps = sorted(speech, key=int)
    if sorted(text, key=int) != steps:
        raise UserError(f"speech and text must have the same steps, got {sorted(speech)} and {sorted(text)}")
    out = {"overlap": {}, "k_sweep": {"ks": [int(v) for v in ks], "diagonal_ratio": {}, "diagonal_ratio_ci": {}}}
    points, reps = {}, {}
    for t in steps:
        s, x = _check_inputs(speech[t], text[t], langs, sentence_ids, k, ks, n_boot)
        study, labels, weights = _prepare(s, x, langs, sentence_ids, n_boot, seed)
        entry, reps[str(t)] = _one_step(s, x, labels, len(study), weights, k, ks, n_boot)
        sweep = entry.pop("k_sweep")
        out["overlap"][str(t)] = {"langs": study, **entry}
        out["k_sweep"]["diagonal_ratio"][str(t)] = sweep["diagonal_ratio"]
        out["k_sweep"]["diagonal_ratio_ci"][str(t)] = sweep["diagonal_ratio_ci"]
        points[str(t)] = step_points(entry, sweep)
    out["step_differences"] = step_differences(points, reps)
    return out


def step_points(entry: dict, sweep: dict) -> dict:
    """The point values ``step_differences`` compares, from a step's entry and its sweep."""
    ratios = sweep["diagonal_ratio"]
    return {"diagonal_ratio": entry["diagonal_ratio"], "total": entry["total"],
            "sweep_mean": float(np.mean(ratios)) if ratios else float("nan")}
