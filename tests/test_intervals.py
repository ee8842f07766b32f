"""Intervals of the cross-modal statistics (engine.science.intervals, engine.science.crossmodal): the half-sample
design, the interval rule, the Monte Carlo permutation test, ``compare_activations`` against the
compare stage, and coverage, containment, power and size on planted populations."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.errors import UserError
from engine.science import crossmodal as cm
from engine.science import intervals as iv
from engine.science import overlap as ov


def test_half_samples_are_complementary_pairs_shared_by_every_row_of_a_sentence():
    sids = [f"s{i}" for i in range(9)]
    splits = iv.half_sample_splits(sids * 3, 6, seed=4)
    assert splits.keys() == set(sids)
    member = np.stack([splits[s] for s in sids])  # [sentences, replicates]
    for b in range(0, 6, 2):
        assert (member[:, b] ^ member[:, b + 1]).all()  # each split's halves partition the sentences
        assert member[:, b].sum() in (4, 5)
    assert len({tuple(member[:, b]) for b in range(0, 6, 2)}) > 1  # splits differ
    # the same sentence gets the same weight in every language and modality
    rows = [s for s in sids for _ in ("deu", "spa")]
    w = iv.half_sample_weights(rows, splits)
    assert w.shape == (6, 18) and (w[:, 0::2] == w[:, 1::2]).all()
    assert splits["s3"].tolist() == iv.half_sample_splits(sids, 6, seed=4)["s3"].tolist()  # deterministic
    assert iv.half_sample_splits(sids, 5, 0)["s0"].shape == (5,)
    with pytest.raises(UserError, match="no half-sample membership"):
        iv.half_sample_weights(["s0", "zz"], splits)


def test_interval_spread_from_independent_halves_and_bias_from_their_mean():
    z = iv.Z95
    # complementary pairs theta +- a: spread Z95 * sqrt(mean((2a)^2) / 2), no bias
    ci, why = iv.interval(0.5, [0.6, 0.4, 0.45, 0.55])
    spread = z * np.sqrt((0.2 ** 2 + 0.1 ** 2) / 2 / 2)
    assert why is None and ci == pytest.approx([0.5 - spread, 0.5 + spread])
    # the half-samples sit 0.1 above the estimate: the bias-corrected centres lie below it
    ci, _ = iv.interval(0.5, [0.7, 0.5, 0.65, 0.55])
    low_centre = 0.5 - 0.1 / (np.sqrt(2) - 1)
    assert ci == pytest.approx([low_centre - spread, 0.5 + spread])
    assert iv.interval(0.5, [0.7, 0.5, 0.65, 0.55], support=(0.2, 1.0))[0][0] == 0.2
    assert iv.interval(1.0 + 2e-16, [1.0, 1.0], support=(0.0, 1.0))[0][1] == 1.0 + 2e-16  # never past the estimate
    rng = np.random.default_rng(0)
    for _ in range(200):
        p, r = rng.normal(), rng.normal(rng.normal(), rng.uniform(0.01, 3), 2 * rng.integers(1, 25))
        lo, hi = iv.interval(p, r)[0]
        assert lo <= p <= hi


def test_interval_of_a_mean_covers_at_the_half_sample_rate():
    # oracle: the mean of n normal values; the interval's half-width estimates Z95 * sd at n/2
    rng = np.random.default_rng(1)
    n, hits, widths = 200, 0, []
    sids = [f"s{i}" for i in range(n)]
    w = iv.half_sample_weights(sids, iv.half_sample_splits(sids, 40, 0)).astype(bool)
    for _ in range(400):
        x = rng.standard_normal(n)
        lo, hi = iv.interval(x.mean(), [x[m].mean() for m in w])[0]
        hits += lo <= 0.0 <= hi
        widths.append(hi - lo)
    assert np.median(widths) == pytest.approx(2 * iv.Z95 * np.sqrt(2 / n), rel=0.15)
    assert hits / 400 >= 0.97  # conservative by design (sd at n/2 = sqrt(2) sd at n)


def test_interval_withholds_with_a_reason():
    assert iv.interval(float("nan"), [1.0, 2.0]) == (None, "the estimate itself is undefined")
    assert iv.interval(1.0, [])[0] is None
    ci, why = iv.interval(1.0, [1.0, np.nan, np.nan, 2.0])
    assert ci is None and "undefined on 2 of 4 half-samples" in why
    assert iv.interval(1.0, [1.0] * 19 + [np.nan])[0] is not None
    assert iv.interval(1.0, [1.0])[0] is None  # one half-sample has no complement


def test_se_from_ci_and_mean_difference_ci():
    assert iv.se_from_ci([10.0, 10.0 + 2 * iv.Z95]) == pytest.approx(1.0)
    assert np.isnan(iv.se_from_ci(None)) and np.isnan(iv.se_from_ci([None, 1.0]))
    d, lo, hi = iv.mean_difference_ci([5.0, 7.0], [1.0, 2.0], [1.0, 1.0], [2.0, 1.0])
    se = np.sqrt(1 + 4 + 4 + 1) / 2
    assert (d, lo, hi) == pytest.approx((5.0, 5.0 - iv.Z95 * se, 5.0 + iv.Z95 * se))
    assert all(np.isnan(x) for x in iv.mean_difference_ci([], [], [], []))
    assert np.isnan(iv.mean_difference_ci([1.0], [float("nan")], [0.0], [1.0])[1])


def test_ratio_se_matches_simulation():
    rng = np.random.default_rng(1)
    num, num_se, den, den_se = 30.0, 4.0, 70.0, 3.0
    r = rng.normal(num, num_se, 400_000) / rng.normal(den, den_se, 400_000)
    assert iv.ratio_se(num, num_se, den, den_se) == pytest.approx(r.std(), rel=0.02)
    assert iv.ratio_se(0.0, 2.0, 50.0, 3.0) == pytest.approx(2.0 / 50.0)
    assert np.isnan(iv.ratio_se(1.0, 1.0, 0.0, 1.0))


@pytest.mark.parametrize("L", [3, 5])
def test_monte_carlo_permutation_p_estimates_the_exact_one(L):
    rng = np.random.default_rng(L)
    O = rng.integers(0, 20, (L, L)) + np.diag(rng.integers(0, 15, L))
    _, exact = ov.permutation_test(O)
    _, mc = ov.permutation_test(O, n_monte_carlo=20_000, seed=1)
    assert abs(mc - exact) < 4 * np.sqrt(exact * (1 - exact) / 20_000) + 1 / 20_000
    assert ov.permutation_test(O, n_monte_carlo=50, seed=1) == ov.permutation_test(O, n_monte_carlo=50, seed=1)


def test_above_ten_languages_the_test_is_monte_carlo_and_says_so():
    L = 12
    O = np.full((L, L), 3) + np.diag(np.full(L, 30))
    st = cm.statistics_of_overlap(O)
    assert st["perm_method"] == {"method": "monte_carlo", "matchings": cm.MONTE_CARLO_PERMUTATIONS, "seed": 0}
    assert st["perm_p"] == pytest.approx(1 / (1 + cm.MONTE_CARLO_PERMUTATIONS))  # nothing beats the identity
    assert cm.statistics_of_overlap(O[:5, :5])["perm_method"] == {"method": "exact", "matchings": 120}
    with pytest.raises(UserError, match="Monte Carlo"):
        ov.permutation_test(O)


def _planted_arrays(n=60, L=4, N=300, seed=0):
    rng = np.random.default_rng(seed)
    langs = [f"l{i}" for _ in range(n) for i in range(L)]
    sids = [f"s{s}" for s in range(n) for _ in range(L)]
    lab = np.array([int(x[1:]) for x in langs])
    content = rng.standard_normal((n * L, N))
    mu = np.zeros((L, N))
    for i in range(L):
        mu[i, 20 * i:20 * i + 20] = 1.5  # shared by both modalities: a diagonal overlap
    speech = content + rng.standard_normal((n * L, N)) + mu[lab]
    text = content + rng.standard_normal((n * L, N)) + mu[lab]
    return speech.astype(np.float32), text.astype(np.float32), langs, sids


def test_compare_activations_keys_containment_and_errors():
    speech, text, langs, sids = _planted_arrays()
    out = cm.compare_activations(speech, text, langs, sids, k=20, ks=(10, 20, 40), n_boot=20, seed=3)
    for key in ("langs", "k", "matrix", "diagonal_ratio", "total", "perm_stat", "perm_p", "perm_method",
                "spearman", "spearman_diag_concentration", "spearman_diag_concentration_clipped",
                "diagonal_ratio_ci", "total_ci", "spearman_diag_concentration_ci", "ci_notes", "n_boot"):
        assert key in out, key
    assert out["langs"] == ["l0", "l1", "l2", "l3"] and out["diagonal_ratio"] > 0.8
    for stat in cm.STATS:
        ci = out[f"{stat}_ci"]
        assert (ci is None and stat in out["ci_notes"]) or ci[0] <= out[stat] <= ci[1], stat
    for v, ci in zip(out["k_sweep"]["diagonal_ratio"], out["k_sweep"]["diagonal_ratio_ci"]):
        assert ci[0] <= v <= ci[1]
    assert out == cm.compare_activations(speech, text, langs, sids, k=20, ks=(10, 20, 40), n_boot=20, seed=3)
    bare = cm.compare_activations(speech, text, langs, sids, k=20, n_boot=0)
    assert bare["diagonal_ratio_ci"] is None and bare["ci_notes"]["diagonal_ratio"] == "n_boot = 0"
    assert bare["diagonal_ratio"] == out["diagonal_ratio"]
    with pytest.raises(UserError, match="one shape"):
        cm.compare_activations(speech, text[:, :10], langs, sids, k=5)
    with pytest.raises(UserError, match="occurs twice"):
        cm.compare_activations(speech, text, langs, ["s0"] * len(sids), k=5)
    with pytest.raises(UserError, match="k and every k"):
        cm.compare_activations(speech, text, langs, sids, k=10_000)


def test_compare_stage_computes_through_compare_activations(tiny_run):
    # the stage reads AP from the rank stage and half-samples from the store; compare_activations
    # gets the same rows as arrays: every number of the step's entry must agree
    from engine.outputs.results import open_run
    from engine.pipeline.config import load_profile
    from engine.pipeline.run import Run, matrices
    from engine.pipeline.store import MatrixStore

    cfg = load_profile("tiny")
    run = Run(cfg, tiny_run)
    analysis = open_run("tiny", out=tiny_run).analysis
    metas = {task: json.loads((run.dir("record") / task / "meta.json").read_text()) for task in ("S2T", "T2T")}
    for step in map(str, cfg["record"]["steps"]):
        rows = {}
        for task in ("S2T", "T2T"):
            m = metas[task]
            rows[task] = {tuple(e.split("/")[:2]): r for r, e in enumerate(m["example_ids"]) if m["valid"][step][r]}
        if rows["S2T"].keys() != rows["T2T"].keys():
            continue  # compare_activations takes rows valid in both modalities; this step's differ
        keys = sorted(rows["T2T"], key=lambda key: (cfg["data"]["langs"].index(key[1]), rows["T2T"][key]))
        arrays = [MatrixStore(matrices(run, task)[f"decoder_t{step}"]).read(np.array([rows[task][key] for key in keys]))
                  for task in ("S2T", "T2T")]
        got = cm.compare_activations(arrays[0], arrays[1], [key[1] for key in keys], [key[0] for key in keys],
                                     k=cfg["rank"]["k"], ks=cfg["rank"]["k_sweep"], n_boot=cfg["rank"]["n_boot"],
                                     seed=cfg["rank"]["seed"])
        want = analysis["overlap"][step]
        assert set(want) <= set(got)
        for key, value in want.items():
            assert json.dumps(got[key], sort_keys=True) == json.dumps(value, sort_keys=True), (step, key)
        assert got["k_sweep"]["diagonal_ratio"] == analysis["k_sweep"]["diagonal_ratio"][step]
        assert got["k_sweep"]["diagonal_ratio_ci"] == analysis["k_sweep"]["diagonal_ratio_ci"][step]
        return
    pytest.fail("no step of the tiny run has the same valid rows in both modalities")


def _intervals(node, path=""):
    """Every (path, estimate, [lo, hi] or None) interval of an analysis artifact."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith("_ci") and isinstance(value, dict):  # k_sweep.diagonal_ratio_ci per step
                for step, cis in value.items():
                    for i, (v, ci) in enumerate(zip(node[key[:-3]][step], cis)):
                        yield f"{path}.{key}.{step}[{i}]", v, ci
            elif key.endswith("_ci") and key != "control_rate_ci" and key[:-3] in node:
                if isinstance(value, list) and value and isinstance(value[0], list):  # the k sweep
                    for i, (v, ci) in enumerate(zip(node[key[:-3]], value)):
                        yield f"{path}.{key}[{i}]", v, ci
                else:
                    yield f"{path}.{key}", node[key[:-3]], value
            elif key == "ci" and "estimate" in node:
                yield f"{path}.ci", node["estimate"], value
            elif key == "control_rate_ci":
                yield f"{path}.{key}", node["control_rate"], value
            else:
                yield from _intervals(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _intervals(value, f"{path}[{i}]")


def test_every_interval_of_the_tiny_analysis_contains_its_estimate(tiny_run):
    from engine.outputs.results import open_run

    analysis = open_run("tiny", out=tiny_run).analysis
    found = list(_intervals(analysis))
    kinds = {p.split(".")[1] for p, _, _ in found}
    assert {"overlap", "k_sweep", "step_differences", "steering"} <= kinds, kinds
    outside = [(p, v, ci) for p, v, ci in found if ci is not None and not ci[0] <= v <= ci[1]]
    assert not outside, outside[:5]
    assert sum(ci is not None for _, _, ci in found) >= 50
    # a withheld interval says why
    for t, e in analysis["overlap"].items():
        for stat in cm.STATS:
            assert (e[f"{stat}_ci"] is None) == (stat in e["ci_notes"]), (t, stat)


def _pooled(coverage: dict, judged: bool) -> tuple[int, int]:
    keys = [k for k in coverage if ("-" in k.rsplit(".", 1)[1]) == judged and not k.startswith("ratio.")]
    return sum(coverage[k]["covered"] for k in keys), sum(coverage[k]["intervals"] for k in keys)


def test_coverage_power_and_size_on_planted_populations():
    # the small version of `python -m engine bench coverage` (README figures come from the full one)
    from engine.tools.benchmarks import coverage as cov

    common = dict(n=300, n_neurons=1000, k=40, ks=[20, 30, 40], n_boot=20, seed=0, verbose=False)
    power = cov.study(cov.PAPER_LIKE, replicates=20, **common)
    size = cov.study(cov.NULL, replicates=10, **common)
    judged, marginal = _pooled(power["coverage"], True), _pooled(power["coverage"], False)
    print(f"\ncoverage of the step differences the claims judge: {judged[0]}/{judged[1]}; "
          f"of the steps' diagonal ratio and total: {marginal[0]}/{marginal[1]}; containment "
          f"{power['containment']:.3f}; power {power['holds']}; null {size['holds']}; withheld {power['withheld']}")
    assert power["containment"] == 1.0 and size["containment"] == 1.0
    assert judged[0] >= 0.9 * judged[1] and marginal[0] >= 0.9 * marginal[1]
    assert all(v >= 0.9 for v in power["holds"].values()), power["holds"]
    assert size["holds"]["R1"] <= 0.05 and size["holds"]["R2"] <= 0.05, size["holds"]


def test_coverage_study_fails_intervals_that_do_not_cover(monkeypatch):
    # a planted counter-example: intervals of zero width around the estimate
    from engine.tools.benchmarks import coverage as cov

    monkeypatch.setattr(iv, "interval", lambda point, reps, **kw: ([float(point)] * 2, None)
                        if np.isfinite(point) else (None, "undefined"))
    study = cov.study(cov.PAPER_LIKE, replicates=3, n=200, n_neurons=1000, k=40, ks=[20, 40], n_boot=4, seed=0,
                      verbose=False)
    judged = _pooled(study["coverage"], True)
    assert judged[0] < 0.9 * judged[1], judged
