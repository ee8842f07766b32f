"""average_precision against scikit-learn (the oracle), top_k / bottom_k tie-breaking."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import average_precision_score

from engine.errors import UserError
from engine.science.ranking import (
    average_precision,
    bottom_k,
    cut_ties,
    point_biserial,
    resampled_average_precision,
    top_k,
)

#: AP is a sum over at most n <= 5,000 thresholds (the largest test matrix) of precisions <= 1
#: weighted by recall steps that sum to 1; two summation orders of it differ by at most n * eps64.
TOL = 5000 * np.finfo(np.float64).eps


def sklearn_ap(scores, labels, n_labels):
    """The slow obvious oracle: one sklearn call per (label, neuron), on float64 values."""
    x = np.asarray(scores, dtype=np.float64)
    return np.array([[average_precision_score(labels == l, x[:, j]) for j in range(x.shape[1])]
                     for l in range(n_labels)])


def naive_ap_without_tie_groups(scores, labels, n_labels):
    """A deliberately wrong AP: every sorted position is a threshold (ties not grouped)."""
    x = np.asarray(scores, dtype=np.float64)
    out = np.zeros((n_labels, x.shape[1]))
    for j in range(x.shape[1]):
        order = np.argsort(-x[:, j], kind="stable")
        for l in range(n_labels):
            hit = (labels[order] == l).astype(float)
            tp = np.cumsum(hit)
            out[l, j] = np.sum(hit * tp / np.arange(1, len(hit) + 1)) / hit.sum()
    return out


@st.composite
def ranking_problem(draw):
    n_labels = draw(st.integers(1, 6))
    n = draw(st.integers(max(2, n_labels), 300))
    n_neurons = draw(st.integers(1, 12))
    labels = draw(hnp.arrays(np.int64, n, elements=st.integers(0, n_labels - 1)))
    labels[:n_labels] = np.arange(n_labels)  # every label has a positive
    labels = labels[draw(st.permutations(range(n)))]
    kind = draw(st.sampled_from(["random", "fp16", "levels", "constant", "mixed"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n_neurons))
    if kind == "fp16":
        x = x.astype(np.float16)
    elif kind == "levels":
        x = rng.integers(0, draw(st.integers(1, 5)), size=(n, n_neurons)).astype(np.float32)
    elif kind == "constant":
        x = np.full((n, n_neurons), 0.25, dtype=np.float32)
    elif kind == "mixed":  # constant, tied and distinct columns side by side
        x[:, 0] = 1.0
        if n_neurons > 1:
            x[:, 1] = np.round(x[:, 1])
        x = x.astype(np.float32)
    return x, labels, n_labels, draw(st.integers(1, 5))


@settings(max_examples=150, deadline=None)
@given(ranking_problem(), st.sampled_from(["auto", "sort"]))
def test_ap_equals_sklearn(problem, method):
    # fp16 inputs take the counting-sort path under "auto", the comparison sort under "sort"
    x, labels, n_labels, chunk = problem
    ap = average_precision(x, labels, n_labels=n_labels, chunk_size=chunk, method=method)
    assert ap.shape == (n_labels, x.shape[1]) and ap.dtype == np.float64
    np.testing.assert_allclose(ap, sklearn_ap(x, labels, n_labels), rtol=0, atol=TOL)


@settings(max_examples=40, deadline=None)
@given(ranking_problem())
def test_torch_and_numpy_paths_agree(problem):
    x, labels, n_labels, chunk = problem
    a = average_precision(x, labels, n_labels=n_labels, chunk_size=chunk)
    b = average_precision(torch.from_numpy(x), torch.from_numpy(labels), n_labels=n_labels)
    np.testing.assert_array_equal(a, b)


def test_planted_counterexample_wrong_tie_handling_is_caught():
    # Sorting without grouping ties depends on the order inside a tie; sklearn does not.
    labels = np.array([1, 0, 1, 0])
    x = np.array([[1.0], [1.0], [0.0], [0.0]])
    wrong = naive_ap_without_tie_groups(x, labels, 2)
    right = sklearn_ap(x, labels, 2)
    assert np.abs(wrong - right).max() > 1e-3  # the oracle test above would fail on `wrong`
    np.testing.assert_allclose(average_precision(x, labels), right, atol=TOL)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 400), st.data(), st.floats(-1e3, 1e3, allow_nan=False, width=16))
def test_oracle_comparison_fails_for_ungrouped_ties(n, data, value):
    # Planted: a tied column whose positives come first in input order. Ungrouped ties give
    # AP = 1; sklearn (one threshold) gives the positive rate; so the oracle test above would
    # fail for an implementation that skips tie grouping, and ours must agree with sklearn.
    n_pos = data.draw(st.integers(1, n - 1))
    labels = np.r_[np.ones(n_pos, int), np.zeros(n - n_pos, int)]
    x = np.full((n, 1), value, dtype=np.float16)
    wrong = naive_ap_without_tie_groups(x, labels, 2)
    right = sklearn_ap(x, labels, 2)
    assert wrong[1, 0] == 1.0 and abs(right[1, 0] - n_pos / n) < TOL
    assert np.abs(wrong - right).max() > TOL
    np.testing.assert_allclose(average_precision(x, labels), right, rtol=0, atol=TOL)


@settings(max_examples=60, deadline=None)
@given(st.data(), st.sampled_from([np.float16, "bfloat16"]))
def test_radix_path_on_arbitrary_16bit_values(data, dtype):
    # any finite bit pattern: -0.0 vs +0.0, subnormals, the largest magnitudes, few levels
    n = data.draw(st.integers(2, 200))
    n_labels = data.draw(st.integers(1, min(4, n)))
    labels = np.arange(n) % n_labels
    pool = data.draw(st.lists(st.integers(0, 2**16 - 1), min_size=1, max_size=8))
    raw = np.array(data.draw(st.lists(st.sampled_from(pool), min_size=n * 3, max_size=n * 3)),
                   dtype=np.uint16).reshape(n, 3)
    if dtype == "bfloat16":
        x = torch.from_numpy(raw.view(np.int16)).view(torch.bfloat16)
        finite = torch.isfinite(x)
        x = torch.where(finite, x, torch.zeros_like(x))
        as64 = x.to(torch.float64).numpy()
    else:
        x = raw.view(np.float16).copy()
        x[~np.isfinite(x)] = -0.0
        as64 = x.astype(np.float64)
    ref = sklearn_ap(as64, labels, n_labels)
    np.testing.assert_allclose(average_precision(x, labels, n_labels=n_labels), ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(average_precision(x, labels, n_labels=n_labels, method="sort"), ref,
                               rtol=0, atol=TOL)


def test_signed_zeros_tie():
    labels = np.array([1, 0, 1, 0])
    x = np.array([[0.0], [-0.0], [-0.0], [0.0]], dtype=np.float16)
    np.testing.assert_allclose(average_precision(x, labels), [[0.5], [0.5]], atol=TOL)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_low_precision_dtypes_see_the_ties_sklearn_sees(dtype):
    rng = np.random.default_rng(3)
    n = 2000
    labels = rng.integers(0, 5, n)
    x = torch.from_numpy(rng.standard_normal((n, 16))).to(dtype)
    ap = average_precision(x, labels)
    ref = sklearn_ap(x.to(torch.float64).numpy(), labels, 5)
    np.testing.assert_allclose(ap, ref, rtol=0, atol=TOL)


def test_thousands_of_examples_multiword_packing():
    # 4,000 positives of one label force the packed counts into two int64 words
    rng = np.random.default_rng(4)
    labels = rng.choice(5, 5000, p=[0.8, 0.05, 0.05, 0.05, 0.05])
    x = np.round(rng.standard_normal((5000, 6)) * 4).astype(np.float16)
    np.testing.assert_allclose(average_precision(x, labels, chunk_size=4),
                               sklearn_ap(x, labels, 5), rtol=0, atol=TOL)


def test_many_labels():
    rng = np.random.default_rng(5)
    labels = np.arange(300) % 20
    x = rng.integers(0, 7, (300, 5)).astype(np.float32)
    np.testing.assert_allclose(average_precision(x, labels), sklearn_ap(x, labels, 20), atol=TOL)


def test_constant_neuron_gets_positive_rate():
    labels = np.array([0, 0, 0, 1, 2, 2])
    ap = average_precision(np.full((6, 3), -1.5, dtype=np.float32), labels)
    np.testing.assert_allclose(ap, np.repeat([[3 / 6], [1 / 6], [2 / 6]], 3, axis=1), atol=TOL)


def test_single_positive_and_two_examples():
    labels = np.array([1, 0, 0, 0, 0])
    x = np.array([[0.1], [0.9], [0.3], [0.1], [0.2]])
    np.testing.assert_allclose(average_precision(x, labels), sklearn_ap(x, labels, 2), atol=TOL)
    np.testing.assert_allclose(average_precision(np.array([[1.0], [2.0]]), np.array([0, 1])),
                               [[0.5], [1.0]], atol=TOL)


def test_chunking_does_not_change_results():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 4, 500)
    x = rng.standard_normal((500, 37)).astype(np.float16)
    ref = average_precision(x, labels, chunk_size=37)
    ref_r = average_precision(x, labels, chunk_size=37, return_separation=True)[1]
    for chunk in (1, 5, 16):
        np.testing.assert_array_equal(average_precision(x, labels, chunk_size=chunk), ref)
        np.testing.assert_array_equal(average_precision(x, labels, chunk_size=chunk, return_separation=True)[1],
                                      ref_r)
    np.testing.assert_array_equal(average_precision(x, labels, memory_budget_mb=0.001), ref)
    for threads in (1, 2, 3):
        np.testing.assert_array_equal(average_precision(x, labels, chunk_size=5, threads=threads), ref)


def test_empty_neuron_axis():
    assert average_precision(np.zeros((4, 0), np.float32), np.array([0, 1, 0, 1])).shape == (2, 0)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_rejected(bad, dtype):
    x = np.zeros((4, 3), dtype=dtype)
    x[2, 1] = bad
    with pytest.raises(UserError, match="NaN or infinite"):
        average_precision(x, np.array([0, 1, 0, 1]))


def test_label_errors():
    x = np.zeros((4, 2), dtype=np.float32)
    with pytest.raises(UserError, match=r"label\(s\) \[1\] have no positive"):
        average_precision(x, np.array([0, 2, 0, 2]))
    with pytest.raises(UserError, match="no positive"):
        average_precision(x, np.array([0, 0, 1, 1]), n_labels=3)
    with pytest.raises(UserError, match="n_labels"):
        average_precision(x, np.array([0, 3, 1, 2]), n_labels=2)
    with pytest.raises(UserError, match="negative"):
        average_precision(x, np.array([0, -1, 1, 1]))
    with pytest.raises(UserError, match="shape"):
        average_precision(x, np.array([0, 1, 1]))
    with pytest.raises(UserError, match="method"):
        average_precision(x, np.array([0, 1, 1, 0]), method="fast")
    with pytest.raises(UserError, match="2-D"):
        average_precision(np.zeros(4), np.array([0, 1, 1, 0]))


def test_top_k_bottom_k_tie_break_by_lower_index():
    ap = np.array([0.5, 0.9, 0.5, 0.1, 0.9, 0.1, 0.0, -0.0])
    np.testing.assert_array_equal(top_k(ap, 4), [1, 4, 0, 2])
    np.testing.assert_array_equal(bottom_k(ap, 5), [6, 7, 3, 5, 0])
    assert top_k(ap, 0).shape == (0,) and top_k(ap, 0).dtype == np.int64


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 60), elements=st.sampled_from([0.0, 0.25, 0.5, 1.0])),
       st.data())
def test_top_k_matches_sorted_oracle(ap, data):
    k = data.draw(st.integers(0, len(ap)))
    oracle_top = sorted(range(len(ap)), key=lambda i: (-ap[i], i))[:k]
    oracle_bottom = sorted(range(len(ap)), key=lambda i: (ap[i], i))[:k]
    assert top_k(ap, k).tolist() == oracle_top
    assert bottom_k(ap, k).tolist() == oracle_bottom


def test_top_k_errors():
    with pytest.raises(UserError, match="outside"):
        top_k(np.zeros(3), 4)
    with pytest.raises(UserError, match="NaN"):
        bottom_k(np.array([0.1, np.nan]), 1)


def test_bench_ap_command_last_line_is_json(capsys):
    import json

    from engine.tools.cli import main

    assert main(["bench", "ap", "--examples", "60", "--neurons", "40", "--langs", "3",
                 "--sklearn-neurons", "5", "--repeats", "1"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("speedup_vs_sklearn", "time_vs_sort", "max_abs_err_vs_sklearn", "peak_rss_mb"):
        assert key in figures
    assert figures["max_abs_err_vs_sklearn"] <= TOL


def test_bench_parser_options():
    import argparse

    from engine.tools.benchmarks import bench_arguments

    parser = argparse.ArgumentParser()
    bench_arguments(parser)
    args = parser.parse_args(["record", "--steps", "1,3", "--examples", "4"])
    assert args.bench == "record" and args.steps == (1, 3) and args.examples == 4
    assert args.layers == 2 and args.batch_size == 8
    args = parser.parse_args(["ap"])
    assert (args.examples, args.neurons, args.langs, args.device) == (5000, 20480, 5, "cpu")
    with pytest.raises(SystemExit):
        parser.parse_args(["record", "--steps", "a,b"])


def test_on_device_cpu_keeps_the_stored_block_and_its_ap():
    from engine.science.ranking import on_device

    rng = np.random.default_rng(5)
    block = rng.standard_normal((40, 7)).astype(np.float16)
    labels = rng.integers(0, 3, 40)
    labels[:3] = [0, 1, 2]
    assert on_device(block, "cpu") is block
    # fp16 takes the counting sort, float32 the comparison sort: equal up to summation order
    np.testing.assert_allclose(average_precision(on_device(block, "cpu"), labels),
                               average_precision(block.astype(np.float32), labels), rtol=0, atol=1e-12)


@pytest.mark.gpu
def test_cuda_ranking_equals_cpu_ranking():
    from engine.science.ranking import on_device

    rng = np.random.default_rng(6)
    block = rng.standard_normal((300, 50)).astype(np.float16)
    labels = rng.integers(0, 5, 300)
    np.testing.assert_allclose(average_precision(on_device(block, "cuda"), labels),
                               average_precision(block, labels), atol=1e-12)


# ---------------------------------------------------------------------------------------------
# The secondary key (point-biserial r), ties at the cut, resamples without re-sorting


def pearson_with_label(x, labels, n_labels):
    """The slow obvious oracle of the point-biserial r: scipy's Pearson r per (label, neuron)."""
    from scipy.stats import pearsonr

    x = np.asarray(x, dtype=np.float64)
    out = np.zeros((n_labels, x.shape[1]))
    for l in range(n_labels):
        y = (labels == l).astype(np.float64)
        for j in range(x.shape[1]):
            if np.ptp(x[:, j]) > 0 and 0 < y.sum() < len(y):
                out[l, j] = pearsonr(x[:, j], y).statistic
    return out


@settings(max_examples=60, deadline=None)
@given(ranking_problem())
def test_separation_is_pearson_r_with_the_label(problem):
    x, labels, n_labels, chunk = problem
    ap, r = average_precision(x, labels, n_labels=n_labels, chunk_size=chunk, return_separation=True)
    np.testing.assert_array_equal(ap, average_precision(x, labels, n_labels=n_labels, chunk_size=chunk))
    np.testing.assert_allclose(r, pearson_with_label(x, labels, n_labels), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(r, point_biserial(x, labels, n_labels=n_labels))
    assert np.all(np.abs(r) <= 1.0)


def test_separation_does_not_modify_float64_input_and_constant_neuron_is_zero():
    labels = np.array([0, 0, 1, 1, 2])
    x = np.c_[np.full(5, 3.0), np.arange(5.0)]
    before = x.copy()
    _, r = average_precision(x, labels, return_separation=True)
    np.testing.assert_array_equal(x, before)
    assert np.all(r[:, 0] == 0.0) and r[2, 1] > 0 and r[0, 1] < 0


def planted_tie_problem(seed, n_per_lang=12, n_perfect=40, n_noise=30, L=3):
    """Activations where language 0 has ``n_perfect`` perfect separators (AP = 1.0) placed at the
    *end* of the flat index, with planted, distinct margins, plus noise neurons before them."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(L), n_per_lang)
    noise = rng.standard_normal((labels.size, n_noise))
    gaps = rng.permutation(np.linspace(0.5, 4.0, n_perfect))  # larger gap, larger r
    perfect = rng.uniform(0, 0.2, (labels.size, n_perfect)) + (labels == 0)[:, None] * gaps[None, :]
    return np.c_[noise, perfect].astype(np.float32), labels, n_noise, gaps


def test_planted_tie_group_larger_than_k_is_cut_by_separation():
    x, labels, n_noise, gaps = planted_tie_problem(0)
    k = 10
    ap, r = average_precision(x, labels, return_separation=True)
    perfect = n_noise + np.arange(gaps.size)
    assert np.all(ap[0, perfect] == 1.0) and np.count_nonzero(ap[0] == 1.0) == gaps.size > k
    chosen = top_k(ap[0], k, r[0])
    # the k tied neurons with the largest r, best first, deterministic, not the lowest indices
    expected = perfect[np.lexsort((perfect, -r[0, perfect]))][:k]
    np.testing.assert_array_equal(chosen, expected)
    assert not np.array_equal(np.sort(chosen), perfect[:k])
    # r orders the planted perfect separators by their planted gap (monotone, saturating)
    from scipy.stats import spearmanr
    assert spearmanr(r[0, perfect], gaps).statistic > 0.9
    for _ in range(3):
        np.testing.assert_array_equal(top_k(ap[0], k, r[0]), chosen)
    assert cut_ties(ap[0], k) == {"k": k, "value": 1.0, "tied": gaps.size, "above": 0, "taken": k}


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 80), elements=st.sampled_from([0.0, 0.25, 0.5, 1.0])),
       st.data())
def test_top_k_holds_everything_above_the_cut_and_orders_ties_by_separation(ap, data):
    k = data.draw(st.integers(0, len(ap)))
    sep = data.draw(hnp.arrays(np.float64, len(ap), elements=st.sampled_from([-0.5, 0.0, 0.3, 0.9])))
    idx = range(len(ap))
    assert top_k(ap, k, sep).tolist() == sorted(idx, key=lambda i: (-ap[i], -sep[i], i))[:k]
    assert bottom_k(ap, k, sep).tolist() == sorted(idx, key=lambda i: (ap[i], sep[i], i))[:k]
    chosen = set(top_k(ap, k, sep).tolist())
    if k:
        tie = cut_ties(ap, k)
        above = {i for i in idx if ap[i] > tie["value"]}
        assert above <= chosen and len(above) == tie["above"]
        assert tie["tied"] == int(np.sum(ap == tie["value"])) and tie["taken"] == k - tie["above"]
        low = cut_ties(ap, k, "bottom")
        assert {i for i in idx if ap[i] < low["value"]} <= set(bottom_k(ap, k, sep).tolist())
    for kk in range(k + 1):  # a smaller k is a prefix: one ordering serves a whole k sweep
        assert top_k(ap, kk, sep).tolist() == top_k(ap, k, sep).tolist()[:kk]


def test_cut_ties_edge_cases():
    assert cut_ties(np.array([0.2, 0.1]), 0) == {"k": 0, "value": None, "tied": 0, "above": 0, "taken": 0}
    assert cut_ties(np.array([0.2, 0.1, 0.1]), 2, "bottom") == {"k": 2, "value": 0.1, "tied": 2,
                                                                "above": 0, "taken": 2}
    with pytest.raises(UserError, match="side"):
        cut_ties(np.zeros(3), 1, "middle")
    with pytest.raises(UserError, match="separation"):
        top_k(np.zeros(3), 1, np.zeros(4))


@st.composite
def resample_problem(draw):
    x, labels, n_labels, chunk = draw(ranking_problem())
    n = len(labels)
    B = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    weights = np.zeros((B, n), np.int64)
    for b in range(B):  # stratified: within each label, as many draws as it has rows
        for l in range(n_labels):
            rows = np.flatnonzero(labels == l)
            np.add.at(weights[b], rng.choice(rows, rows.size), 1)
    return x, labels, n_labels, chunk, weights


@settings(max_examples=80, deadline=None)
@given(resample_problem(), st.sampled_from(["auto", "sort"]))
def test_resampled_ap_equals_sklearn_on_duplicated_rows(problem, method):
    x, labels, n_labels, chunk, weights = problem
    ap, r = resampled_average_precision(x, labels, weights, n_labels=n_labels, chunk_size=chunk,
                                        method=method)
    assert ap.shape == r.shape == (len(weights), n_labels, x.shape[1])
    for b, w in enumerate(weights):
        rows = np.repeat(np.arange(len(labels)), w)
        np.testing.assert_allclose(ap[b], sklearn_ap(x[rows], labels[rows], n_labels), rtol=0, atol=TOL)
        np.testing.assert_allclose(r[b], pearson_with_label(x[rows], labels[rows], n_labels),
                                   rtol=0, atol=1e-9)


def test_resampled_ap_multiword_packing_and_errors():
    rng = np.random.default_rng(7)
    labels = rng.choice(5, 3000, p=[0.8, 0.05, 0.05, 0.05, 0.05])
    x = np.round(rng.standard_normal((3000, 4)) * 4).astype(np.float16)
    w = rng.integers(0, 3, (2, 3000))
    ap, _ = resampled_average_precision(x, labels, w, chunk_size=3)
    for b in range(2):
        rows = np.repeat(np.arange(3000), w[b])
        np.testing.assert_allclose(ap[b], sklearn_ap(x[rows], labels[rows], 5), rtol=0, atol=TOL)
    with pytest.raises(UserError, match="no example of label"):
        resampled_average_precision(x, labels, np.where(labels == 2, 0, 1)[None])
    with pytest.raises(UserError, match=">= 0"):
        resampled_average_precision(x, labels, -np.ones((1, 3000), int))
    with pytest.raises(UserError, match="shape"):
        resampled_average_precision(x, labels, np.ones((1, 5), int))


def test_tie_records_cover_every_cut_later_stages_take():
    from engine.pipeline.stages.report import tie_records

    ap = np.array([[1.0, 1.0, 1.0, 0.5, 0.2, 0.2], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    rec = tie_records("S2T", "decoder_t1", ap, ["deu", "fra"], {"rank": 2, "steer": 1})
    assert [(r["lang"], r["side"], r["k"], r["for"]) for r in rec] == [("deu", "top", 2, ["rank"]),
                                                                        ("fra", "top", 2, ["rank"])]
    assert (rec[0]["tied"], rec[0]["taken"], rec[0]["step"]) == (3, 2, 1) and rec[1]["tied"] == 1
    asr = tie_records("ASR", "decoder_t6", ap, ["deu", "fra"], {"rank": 2, "steer": 2})
    assert [(r["side"], r["for"]) for r in asr if r["lang"] == "deu"] == [("top", ["steer"]), ("bottom", ["steer"])]
    bottom = next(r for r in asr if r["lang"] == "deu" and r["side"] == "bottom")
    assert (bottom["value"], bottom["tied"], bottom["taken"]) == (0.2, 2, 2)
    assert tie_records("ASR", "encoder", ap, ["deu", "fra"], {"rank": 2, "steer": 2}) == []


def test_control_neurons_break_ties_by_separation():
    from engine.model.steering import control_neurons

    ap = np.array([1.0, 1.0, 1.0, 0.5, 0.1, 0.1, 0.1])
    sep = np.array([0.2, 0.9, 0.5, 0.0, -0.1, -0.8, -0.3])
    np.testing.assert_array_equal(control_neurons(ap, 2, sep), [1, 2, 5, 6])
    np.testing.assert_array_equal(control_neurons(ap, 2), [0, 1, 4, 5])  # no key: lower index


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_descending_keys_preserve_order_over_every_16bit_pattern(dtype):
    # exhaustive: every finite fp16 / bf16 value; keys ascend exactly as values descend, and two
    # keys are equal exactly when the values are (-0.0 == +0.0)
    from engine.science.ranking import _descending_keys

    bits = np.arange(2**16, dtype=np.uint16)
    values = torch.from_numpy(bits.view(np.int16)).view(dtype).to(torch.float64).numpy()
    finite = np.isfinite(values)
    bits, values = bits[finite], values[finite]
    keys = _descending_keys(bits).astype(np.int64)
    order = np.argsort(keys, kind="stable")
    v, k = values[order], keys[order]
    assert np.all(np.diff(v) <= 0)
    np.testing.assert_array_equal(np.diff(k) == 0, np.diff(v) == 0)


@settings(max_examples=40, deadline=None)
@given(st.data(), st.sampled_from([torch.float16, torch.bfloat16]))
def test_compiled_kernels_equal_the_numpy_path_bit_for_bit(data, dtype):
    # engine.science.ap_kernels replaced the numpy radix pipeline on CPU; the numpy path stays as the
    # fallback (and for > 256 labels or > 65,536 resampled rows), so the two must agree exactly,
    # on contiguous and strided inputs, with few distinct values (many ties) or many.
    import engine.science.ranking as ranking
    n = data.draw(st.integers(2, 400))
    n_labels = data.draw(st.integers(1, min(6, n)))
    levels = data.draw(st.sampled_from([3, 50, 10_000]))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    labels = np.r_[np.arange(n_labels), rng.integers(0, n_labels, n - n_labels)]
    x = torch.from_numpy(rng.integers(-levels, levels, (n, 9)) / 7.0).to(dtype)
    if data.draw(st.booleans()):
        x = x.t().contiguous().t()  # column-major storage: the kernels read a row-major copy
    x = x[:, data.draw(st.integers(0, 4)):]
    w = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(3)])
    w[:, :n_labels] += 1  # every label keeps a positive weight
    chunk = data.draw(st.sampled_from([None, 1, 4]))
    fast = average_precision(x, labels, n_labels=n_labels, chunk_size=chunk, return_separation=True)
    fast_b = resampled_average_precision(x, labels, w, n_labels=n_labels, chunk_size=chunk)
    try:
        ranking._COMPILED = False
        slow = average_precision(x, labels, n_labels=n_labels, chunk_size=chunk, return_separation=True)
        slow_b = resampled_average_precision(x, labels, w, n_labels=n_labels, chunk_size=chunk)
    finally:
        ranking._COMPILED = True
    for a, b in zip(fast + fast_b, slow + slow_b):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_compiled_kernels_reject_non_finite_values(dtype, bad):
    x = torch.zeros((300, 200), dtype=dtype)
    x[123, 170] = bad
    labels = np.arange(300) % 3
    with pytest.raises(UserError, match="NaN or infinite"):
        average_precision(x, labels)
    with pytest.raises(UserError, match="NaN or infinite"):
        resampled_average_precision(x, labels, np.ones((2, 300), int))
