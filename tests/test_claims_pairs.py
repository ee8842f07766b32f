"""The claims suite judges steering runs of any pairs through each pair's own control metric.

The paper steers Latin <-> CJK pairs and its tables name them. A run with other pairs (the
same script: language ID; Cyrillic-Latin: script classes) is judged without an error: cells and
conditions naming pairs the run did not steer are "not applicable", never failures or crashes.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.outputs import claims as C
from engine.outputs import report as R

REPO = Path(__file__).resolve().parent.parent
SAME_SCRIPT = [["deu", "fra"], ["cmn", "jpn"]]


@pytest.fixture(scope="module")
def registry():
    return C.load_registry()


def _cyrillic_latin():
    """The paper's own numbers plus a steered rus -> eng pair, scored by script classes."""
    a = json.loads((REPO / "fixtures" / "analysis_sample.json").read_text(encoding="utf-8"))
    a["steering"]["config"]["pairs"] = a["steering"]["config"].get("pairs", []) + [["rus", "eng"]]
    for task in ("ASR", "TR"):
        for t, rate in ((1, 1.0), (6, 50.0), (11, 80.0)):
            a["steering"]["rows"].append({"src": "rus", "tgt": "eng", "task": task, "step": t,
                                          "intervention": "median", "cyrillic": 100 - rate, "latin": rate,
                                          "control_rate": rate, "control_rate_ci": [rate - 5, rate + 5],
                                          "ft_src": 100 - rate, "ft_tgt": rate, "n": 8, "tokens": 40})
    return a


def test_a_cyrillic_latin_pair_is_judged_by_its_scripts(registry):
    a = _cyrillic_latin()
    for cid, entry in registry["claims"].items():
        v = C.check(cid, a, entry)
        assert "artifact lacks" not in v.detail, (cid, v.detail)
        C.measurements(cid, a)  # the regression path reads the same rows: no KeyError either
    t1 = C.check("T1", a, registry["claims"]["T1"])
    assert t1.passed and t1.applicable  # the paper's pairs, still the paper's numbers
    m = C.measurements("T1", a)
    assert m["cyrillic.rus-eng.TR.6"] == 50.0 and m["latin.rus-eng.TR.6"] == 50.0
    table = R.steering_tables(a, registry)[0]
    row = next(r for r in table["rows"] if r[0] == "rus")
    assert row[3] == "script: Cyrillic → Latin"


def test_pairs_the_run_did_not_steer_are_not_applicable(registry):
    a = _cyrillic_latin()
    keep = {("rus", "eng")}
    a["steering"]["config"]["pairs"] = [list(p) for p in keep]
    a["steering"]["rows"] = [r for r in a["steering"]["rows"] if (r["src"], r["tgt"]) in keep]
    a["steering"]["effect_ratio"]["pairs"] = []
    for cid in ("T1", "T3", "T4", "S2"):
        v = C.check(cid, a, registry["claims"][cid])
        assert not v.applicable and not v.passed and v.not_applicable, (cid, v.detail)
        assert "not applicable" in v.detail
    table = R.steering_tables(a, registry)[0]
    assert table["total"] == 0
    absent = next(r for r in table["rows"] if r[:3] == ["German", "ASR", "Japanese"])
    assert absent[3] == R.NOT_STEERED and absent[4] == "– (100.0)"
    # a counter-example: a paper pair that WAS steered but lost its rows still fails, never n/a
    b = json.loads((REPO / "fixtures" / "analysis_sample.json").read_text(encoding="utf-8"))
    b["steering"]["rows"] = [r for r in b["steering"]["rows"] if not (r["src"] == "deu" and r["tgt"] == "jpn")]
    v = C.check("T1", b, registry["claims"]["T1"])
    assert v.applicable and not v.passed and any("deu" in f for f in v.failures)


@pytest.mark.slow
def test_the_suite_judges_a_tiny_run_with_same_script_pairs(tiny_run, tmp_path):
    from engine.pipeline.runner import ensure_analysis

    overrides = [f"steer.pairs={json.dumps(SAME_SCRIPT)}"]
    path = ensure_analysis("tiny", overrides, out=tiny_run)
    analysis = json.loads(path.read_text(encoding="utf-8"))
    assert {r.get("control_by") for r in analysis["steering"]["rows"]} == {"langid"}
    env = {**os.environ, "STEP_NEURONS_ANALYSIS": str(path), "STEP_NEURONS_REPORTS": str(tmp_path)}
    env.pop("PYTEST_XDIST_WORKER", None)
    done = subprocess.run([sys.executable, "-m", "pytest", "claims/", "--profile", "paper", "-q", "-p",
                           "no:cacheprovider"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    doc = json.loads((tmp_path / "latest" / "claims.json").read_text(encoding="utf-8"))
    outcomes = {cid: rec["verdict"] for cid, rec in doc["claims"].items()}
    assert set(outcomes.values()) <= {"passed", "failed", "skipped"}, (outcomes, done.stdout[-3000:])
    assert "Error" not in done.stdout.replace("AssertionError", ""), done.stdout[-3000:]
    for cid in ("T1", "T3", "T4", "S2"):  # the paper's tables name only Latin <-> CJK pairs
        assert outcomes[cid] == "skipped" and doc["claims"][cid]["paper_check"] == "not applicable", cid
    m = C.measurements("T1", analysis)
    assert m and all(k.startswith("lid.") for k in m)
    html = (tmp_path / "latest" / "claims-report.html").read_text(encoding="utf-8")
    assert "language ID" in html and "not applicable" in html
