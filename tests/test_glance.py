"""The report's one line per claim: units, rounding, intervals only where they exist, "n/a"."""
import copy
import json
from pathlib import Path

import pytest

from engine.outputs import claims as C
from engine.outputs import glance as G

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def registry():
    return C.load_registry()


@pytest.fixture(scope="module")
def sample():
    return json.loads((REPO / "fixtures" / "analysis_sample.json").read_text(encoding="utf-8"))


def test_units_and_rounding():
    assert G.percent(0.566, fraction=True) == "56.6%"
    assert G.percent(0.34625, fraction=True) == "34.6%"
    assert G.percent(91.69) == "91.7%" and G.percent(0) == "0.0%"
    assert G.percent(-0.0102, fraction=True) == "−1.0%"  # a true minus sign
    assert G.ratio(0.355) in ("0.35", "0.36") and G.ratio(0.49) == "0.49"
    assert G.count(118.0) == "118"
    assert G.p_value(0.0083) == "p = 0.008" and G.p_value(0.5583) == "p = 0.558"
    assert G.p_value(0.0004) == "p < 0.001" and G.p_value(1.0) == "p = 1.000"


@pytest.mark.parametrize("missing", [None, float("nan"), float("inf"), "x"])
def test_missing_values_read_na(missing):
    for text in (G.percent(missing), G.percent(missing, fraction=True), G.ratio(missing), G.count(missing),
                 G.p_value(missing)):
        assert text == "n/a"


def test_interval_only_where_one_exists():
    assert G.interval([0.1, 0.2575], lambda x: G.percent(x, fraction=True)) == "[10.0%, 25.8%]"
    assert G.interval([-0.29, 0.03]) == "[−0.29, 0.03]"
    for absent in (None, [], [None, 0.2], [float("nan"), float("nan")], [0.1]):
        assert G.interval(absent) == ""


def test_on_the_papers_own_numbers_ours_reads_as_the_paper(sample, registry):
    # analysis_sample.json is the paper's numbers: every headline stated as a number must then
    # print exactly the paper's string, in the same unit and format
    lines = {}
    for cid, entry in registry["claims"].items():
        v = C.check(cid, sample, entry)
        lines[cid] = C.headline(cid, v.measured, v.ci, entry["paper"], entry.get("tolerance"), sample,
                                (len(entry["paper"].get("cells", [])),) * 2)
    for cid in ("R1", "R5", "S5"):
        assert lines[cid]["ours"] == lines[cid]["paper"], (cid, lines[cid])
    assert lines["R1"]["paper"] == "56.6% at t=1 (vs 34.6%, 36.8%)"
    assert lines["R1"]["interval"].startswith("[") and lines["R1"]["interval"].endswith("%]")
    assert lines["S5"]["paper"] == "0.36 → 0.49"
    assert lines["S3"]["ours"] == "10.3% to 63.1%" == lines["S3"]["paper"]
    assert lines["T1"]["ours"] == "48 of 48 within ±15 pp"
    assert lines["R8"]["ours"].startswith("peak layer 0") and lines["R7"]["paper"] == "peak layers 4–10"
    assert lines["R2"]["interval"] == "" and lines["R2"]["ours"].startswith("largest p = ")
    for line in lines.values():
        assert not any(w in " ".join(line.values()) for w in ("nan", "None", "inf")), line


def test_nan_and_absent_values_never_print_nan(sample, registry):
    broken = copy.deepcopy(sample)
    for t in broken["overlap"]:
        broken["overlap"][t]["diagonal_ratio"] = float("nan")
        broken["overlap"][t]["diagonal_ratio_ci"] = None
    broken["steering"]["effect_ratio"]["mean"]["11"] = None
    for cid in ("R1", "S5"):
        entry = registry["claims"][cid]
        v = C.check(cid, broken, entry)
        line = C.headline(cid, v.measured, v.ci, entry["paper"], entry.get("tolerance"), broken)
        text = " ".join(line.values())
        assert "n/a" in text and not any(w in text for w in ("nan", "None")), line
    assert C.headline("R1", None, None, registry["claims"]["R1"]["paper"], None)["ours"] == "n/a"
    assert C.headline("R1", {}, None, registry["claims"]["R1"]["paper"], None)["interval"] == ""
