"""Overlap, permutation test, Spearman and bootstrap against brute force / scipy."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.stats import spearmanr

from engine.errors import UserError
from engine.science.overlap import (
    bootstrap_ci,
    diagonal_concentration,
    diagonal_ratio,
    overlap_matrix,
    permutation_test,
    spearman_matrix,
)
from engine.science.ranking import average_precision, top_k

square_counts = st.integers(1, 6).flatmap(
    lambda L: hnp.arrays(np.int64, (L, L), elements=st.integers(0, 50)))


def brute_force_p(O):
    L = O.shape[0]
    obs = sum(O[i, i] for i in range(L))
    hits = sum(1 for p in itertools.permutations(range(L)) if sum(O[i, p[i]] for i in range(L)) >= obs)
    return hits / math.factorial(L)


def test_overlap_matrix_counts_set_intersections():
    a = [np.array([1, 2, 3, 3]), np.array([7]), np.array([], dtype=np.int64)]
    b = [np.array([3, 2, 9]), np.array([7, 1])]
    np.testing.assert_array_equal(overlap_matrix(a, b), [[2, 1], [0, 1], [0, 0]])
    assert overlap_matrix(a, b).dtype == np.int64


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 5), st.integers(1, 30), st.data())
def test_overlap_matrix_matches_python_sets(L, k, data):
    sets = [[np.array(data.draw(st.lists(st.integers(0, 40), max_size=k)), dtype=np.int64)
             for _ in range(L)] for _ in range(2)]
    expected = [[len(set(x.tolist()) & set(y.tolist())) for y in sets[1]] for x in sets[0]]
    np.testing.assert_array_equal(overlap_matrix(*sets), expected)


def test_diagonal_ratio_values_and_all_zero_is_nan():
    assert diagonal_ratio(np.array([[3, 1], [1, 5]])) == pytest.approx(0.8)
    assert math.isnan(diagonal_ratio(np.zeros((5, 5), dtype=np.int64)))
    with pytest.raises(UserError, match="square"):
        diagonal_ratio(np.zeros((2, 3)))


@settings(max_examples=80, deadline=None)
@given(square_counts)
def test_permutation_p_equals_brute_force(O):
    stat, p = permutation_test(O)
    assert p == pytest.approx(brute_force_p(O), abs=1e-15)
    if O.sum():
        assert stat == pytest.approx(np.trace(O) / O.sum())
    assert 1 / math.factorial(O.shape[0]) <= p <= 1


@settings(max_examples=60, deadline=None)
@given(square_counts, st.data())
def test_consistent_relabelling_leaves_statistics_unchanged(O, data):
    perm = np.array(data.draw(st.permutations(range(O.shape[0]))))
    relabelled = O[np.ix_(perm, perm)]
    r0, r1 = diagonal_ratio(O), diagonal_ratio(relabelled)
    assert (math.isnan(r0) and math.isnan(r1)) or r0 == pytest.approx(r1)
    assert permutation_test(O)[1] == pytest.approx(permutation_test(relabelled)[1])


@pytest.mark.parametrize("L", [2, 3, 4, 5, 6])
def test_planted_diagonal_gives_smallest_p(L):
    O = np.full((L, L), 3) + np.eye(L, dtype=int) * 40
    assert permutation_test(O)[1] == pytest.approx(1 / math.factorial(L))
    # a uniform matrix ties everywhere: p = 1
    assert permutation_test(np.full((L, L), 7))[1] == 1.0


def test_permutation_edge_cases():
    stat, p = permutation_test(np.zeros((3, 3), dtype=np.int64))
    assert math.isnan(stat) and p == 1.0
    # float input: rounding-level ties still count as ties
    O = np.array([[0.1 + 0.2, 0.0], [0.0, 0.0]])
    O2 = np.array([[0.3, 0.0], [0.0, 0.0]])
    assert permutation_test(O)[1] == permutation_test(O2)[1]
    with pytest.raises(UserError, match="too large"):
        permutation_test(np.eye(11))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(3, 60), st.integers(0, 2**31),
       st.booleans())
def test_spearman_matrix_equals_scipy(La, Lb, n, seed, ties):
    rng = np.random.default_rng(seed)
    a, b = rng.random((La, n)), rng.random((Lb, n))
    if ties:
        a, b = np.round(a * 3), np.round(b * 3)
    R = spearman_matrix(a, b)
    for i in range(La):
        for j in range(Lb):
            if np.ptp(a[i]) == 0 or np.ptp(b[j]) == 0:
                assert math.isnan(R[i, j])
            else:
                assert R[i, j] == pytest.approx(spearmanr(a[i], b[j]).statistic, abs=1e-12)


def test_diagonal_concentration_raw_and_clipped():
    R = np.array([[0.8, -0.2], [0.1, 0.6]])
    assert diagonal_concentration(R) == pytest.approx(1.4 / 1.3)
    assert diagonal_concentration(R, clip_negative=True) == pytest.approx(1.4 / 1.5)
    assert diagonal_concentration(np.full((5, 5), 0.3)) == pytest.approx(0.2)  # uniform: 1/L
    assert math.isnan(diagonal_concentration(np.array([[-0.5, 0.1], [0.1, -0.5]])))
    assert math.isnan(diagonal_concentration(np.array([[np.nan, 0.1], [0.1, 0.5]])))


def test_bootstrap_is_seeded_and_percentile():
    x = np.random.default_rng(0).standard_normal(200)
    stat = lambda idx: float(x[idx].mean())  # noqa: E731
    ci = bootstrap_ci(stat, 200, n_boot=300, seed=1)
    assert ci == bootstrap_ci(stat, 200, n_boot=300, seed=1)
    assert ci != bootstrap_ci(stat, 200, n_boot=300, seed=2)
    lo, hi = ci
    assert lo < x.mean() < hi
    se = x.std(ddof=1) / np.sqrt(200)  # percentile CI ≈ mean ± 1.96 se
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.25)


def test_bootstrap_stratified_keeps_every_label_and_its_size():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 2)
    seen = []

    def stat(idx):
        seen.append(np.bincount(labels[idx], minlength=3))
        return 0.0

    bootstrap_ci(stat, labels, n_boot=50, seed=0)
    assert all((c == [5, 3, 2]).all() for c in seen)


def test_bootstrap_nan_replicates_dropped():
    assert all(math.isnan(v) for v in bootstrap_ci(lambda idx: float("nan"), 5, n_boot=5))
    with pytest.raises(UserError):
        bootstrap_ci(lambda idx: 0.0, 5, alpha=1.5)


def test_end_to_end_diagonal_ratio_with_bootstrap():
    # Planted: neuron j responds to language j % L in both modalities -> strong diagonal.
    rng = np.random.default_rng(2)
    L, n, N, k = 3, 90, 60, 5
    labels = np.arange(n) % L
    signal = (labels[:, None] == (np.arange(N) % L)[None, :]).astype(float)
    speech = signal + 0.3 * rng.standard_normal((n, N))
    text = signal + 0.3 * rng.standard_normal((n, N))

    def ratio(idx):
        ap_s = average_precision(speech[idx], labels[idx], n_labels=L)
        ap_t = average_precision(text[idx], labels[idx], n_labels=L)
        O = overlap_matrix([top_k(r, k) for r in ap_s], [top_k(r, k) for r in ap_t])
        return diagonal_ratio(O)

    full = ratio(np.arange(n))
    lo, hi = bootstrap_ci(ratio, labels, n_boot=40, seed=0)
    assert full > 0.9 and lo > 0.5 and lo <= hi <= 1.0


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(2, 60), st.data())
def test_overlap_sweep_equals_overlap_of_top_k_sets_at_every_k(L, N, data):
    # coarse AP levels make large tie groups at the cuts; the secondary key breaks them
    from engine.science.crossmodal import overlap_sweep, set_statistics

    levels = st.sampled_from([0.1, 0.5, 1.0])
    ap_s, ap_t = (data.draw(hnp.arrays(np.float64, (L, N), elements=levels)) for _ in range(2))
    sep_s, sep_t = (data.draw(hnp.arrays(np.float64, (L, N), elements=st.sampled_from([-0.2, 0.0, 0.7])))
                    for _ in range(2))
    ks = sorted(data.draw(st.lists(st.integers(0, N), min_size=1, max_size=4)))
    got = overlap_sweep(ap_s, ap_t, ks, sep_s, sep_t)
    for n, k in enumerate(ks):
        sets_s = [top_k(ap_s[i], k, sep_s[i]) for i in range(L)]
        sets_t = [top_k(ap_t[j], k, sep_t[j]) for j in range(L)]
        np.testing.assert_array_equal(got[n], overlap_matrix(sets_s, sets_t))
    assert set_statistics(ap_s, ap_t, ks[-1], sep_s, sep_t)["matrix"] == got[-1].tolist()


def test_bootstrap_ap_equals_recomputing_each_half_sample_on_its_rows(tmp_path):
    # the compare stage's half-samples (one sort per neuron, 0/1 weighted counts, flat files read
    # one half-sample at a time) against the obvious way: AP of the half's rows, and r likewise
    from engine.pipeline.stages.compare import bootstrap_ap
    from engine.pipeline.store import MatrixStore
    from engine.science.intervals import half_sample_splits
    from engine.science.ranking import point_biserial

    rng = np.random.default_rng(11)
    study = ["deu", "spa", "cmn"]
    sids = [f"s{i}" for i in range(8)]
    example_ids = [f"{sid}/{lang}/T2T" for lang in study for sid in sids]
    langs = [eid.split("/")[1] for eid in example_ids]
    valid = rng.random(len(example_ids)) > 0.2
    for lang in study:  # every language keeps valid rows in both halves
        valid[[i for i, lg in enumerate(langs) if lg == lang]] = True
    meta = {"example_ids": example_ids, "langs": langs, "valid": {"6": valid.tolist()}}
    x = np.round(rng.standard_normal((len(example_ids), 23)), 1).astype(np.float16)  # ties
    store = MatrixStore.create(tmp_path / "m", len(example_ids), 23, rows_per_block=4, cols_per_chunk=8)
    for blk in range(store.n_blocks):
        a, b = store.block_rows(blk)
        store.write_block(blk, x[a:b])
    splits = half_sample_splits(sids, 6, seed=3)
    files = bootstrap_ap(store, meta, "6", splits, study, tmp_path / "boot")
    labels = np.array([study.index(lang) for lang in langs])
    for b in range(6):
        rows = np.array([r for r, eid in enumerate(example_ids) if valid[r] and splits[eid.split("/")[0]][b]])
        ap, sep = files.resample(b)
        np.testing.assert_allclose(ap, average_precision(x[rows], labels[rows], n_labels=3), rtol=0, atol=1e-12)
        np.testing.assert_allclose(sep, point_biserial(x[rows], labels[rows], n_labels=3), rtol=0, atol=1e-6)
    files.delete()
    assert not files.ap_path.exists() and not files.sep_path.exists()
