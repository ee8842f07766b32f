"""The claims report: files, self-containment, verdict table, latest link, CLI."""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import re
from pathlib import Path

import pytest

from engine.outputs import claims as C
from engine.outputs import report as R
from engine.tools import claims_suite

REPO = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sample():
    return json.loads((REPO / "fixtures" / "analysis_sample.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def registry():
    return C.load_registry()


@pytest.fixture(scope="module")
def written(tmp_path_factory, sample, registry):
    """One report written from the sample with a planted failure on R1 (paper profile)."""
    analysis = copy.deepcopy(sample)
    analysis["step_differences"]["diagonal_ratio"]["1-6"]["ci"] = [-0.02, 0.40]
    verdicts = {cid: C.check(cid, analysis, registry["claims"][cid]) for cid in registry["claims"]}
    outcomes = {cid: {"outcome": "passed" if v.passed else "failed", "message": v.detail}
                for cid, v in verdicts.items() if cid != "T4"}
    out = tmp_path_factory.mktemp("report")
    paths = R.write_report(analysis, verdicts, outcomes, out, profile="paper", registry=registry,
                           run_info={"wall_time_s": 12.5, "analysis_path": "planted.json"})
    return paths, verdicts


@pytest.fixture
def no_figures(monkeypatch):
    """For tests of the text only: figures are drawn and checked by the tests above (6 s a report)."""
    monkeypatch.setattr(R, "make_figures", lambda analysis, registry=None: ({}, {n: "not drawn: test" for n in R.FIGURES}))


def test_figures_are_drawn_without_pyplot_state(sample):
    # a notebook or a headless CI gets the same Figure objects, and none piles up in pyplot
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from engine.outputs import plots

    before = plt.get_fignums()
    for fig in (plots.overlap(sample["overlap"]), plots.spearman(sample["overlap"], steps=[6]),
                plots.k_sweep(sample["k_sweep"]), plots.distribution(sample["distribution"])):
        assert isinstance(fig, Figure)
    assert plt.get_fignums() == before


def test_files_written(written):
    paths, _ = written
    for key in ("md", "html", "json"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0
    assert paths["junit"].name == "junit.xml"
    for name in R.FIGURE_TITLES:
        assert paths[f"figure:{name}"].read_bytes().startswith(PNG)


def test_html_is_self_contained(written):
    text = written[0]["html"].read_text(encoding="utf-8")
    sources = re.findall(r"""src\s*=\s*['"]([^'"]*)""", text)
    assert len(sources) == len(R.FIGURE_TITLES)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    links = re.findall(r"""href\s*=\s*['"]([^'"]*)""", text)
    assert links and all(link.startswith("#") for link in links)  # only anchors within the page
    assert "<link" not in text and "<script" not in text
    for heading in ("Table 1", "Table 3", "Table 4", "Table 2", "At a glance", "Figure 4", "Figure 5", "Figure 6",
                    "Figures 2 and 3", "The run", "Claims in detail"):
        assert heading in text
    assert "Traceback" not in text and "def _c_" not in text


def test_claims_json_has_every_claim(written, registry):
    doc = json.loads(written[0]["json"].read_text(encoding="utf-8"))
    assert doc["profile"] == "paper" and set(doc["claims"]) == set(registry["claims"])
    for cid, rec in doc["claims"].items():
        for key in ("paper", "measured", "ci", "tolerance", "verdict", "paper_check", "source", "statement"):
            assert key in rec, (cid, key)
    assert doc["claims"]["R1"]["verdict"] == "failed" and doc["claims"]["R1"]["paper_check"] == "failed"
    assert doc["claims"]["R1"]["ci"]["diff.1-6"] == [-0.02, 0.40]
    assert doc["claims"]["R8"]["verdict"] == "passed"
    assert doc["claims"]["T4"]["verdict"] == "not run"
    assert doc["summary"] == {"failed": 1, "passed": 16, "not run": 1}


def test_markdown_header_and_verdicts(written):
    md = written[0]["md"].read_text(encoding="utf-8")
    for field in ("profile", "model", "data", "speech backend", "neurons", "intervals", "seeds", "ties at the cuts",
                  "excluded examples", "library versions (pipeline)", "library versions (claims suite)",
                  "pipeline wall time", "claims-suite wall time"):
        assert f"**{field}**" in md, field
    assert "12.5 s" in md and "synthetic/analysis-sample" in md
    row = next(line for line in md.splitlines() if line.startswith("| [R1](#r1) "))
    assert "✗ does not hold" in row and "| Figure 4 |" in row  # the planted failure, beside its figure
    for name in R.FIGURES:
        assert f"(figures/{name}.png)" in md
    # measured value next to the paper value in Table 1, by the pair's own control metric
    assert "| German | ASR | Japanese | script: Latin → CJK | 100.0 (100.0) | 0.0 (0.0) | 39.1 (39.1) |" in md


def test_report_without_analysis_states_the_error(tmp_path, registry):
    paths = R.write_report(None, {}, {"R1": {"outcome": "error", "message": "no GPU"}}, tmp_path,
                           profile="paper", registry=registry,
                           run_info={"error": "the paper profile needs a CUDA device; run on a GPU host"})
    md = paths["md"].read_text(encoding="utf-8")
    assert "**ERROR**: the paper profile needs a CUDA device" in md
    assert "not drawn" in md or "no analysis" in md
    doc = json.loads(paths["json"].read_text())
    assert doc["claims"]["R1"]["verdict"] == "error" and doc["claims"]["R1"]["measured"] is None


def test_claims_json_is_strict_with_nan(tmp_path, sample, registry, no_figures):
    analysis = copy.deepcopy(sample)
    analysis["steering"]["effect_ratio"]["mean"]["6"] = float("nan")
    verdicts = {"S5": C.check("S5", analysis, registry["claims"]["S5"])}
    paths = R.write_report(analysis, verdicts, {}, tmp_path, profile="tiny", registry=registry)
    doc = json.loads(paths["json"].read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert doc["claims"]["S5"]["measured"]["mean.6"] is None and doc["claims"]["S5"]["paper_check"] == "failed"


def test_missing_section_skips_only_its_figure(sample):
    partial = copy.deepcopy(sample)
    del partial["k_sweep"]
    figures, missing = R.make_figures(partial)
    assert set(figures) == set(R.FIGURES) - {"k_sweep"} and "k_sweep" in missing


def test_figures_are_png(sample):
    assert R.figure_overlap(sample["overlap"]).startswith(PNG)
    assert R.figure_spearman(sample["overlap"]).startswith(PNG)
    assert R.figure_k_sweep(sample["k_sweep"]).startswith(PNG)
    assert R.figure_distribution(sample["distribution"]).startswith(PNG)


def test_new_report_dir_and_latest(tmp_path):
    now = dt.datetime(2026, 1, 2, 3, 4, 5)
    a = R.new_report_dir("tiny", tmp_path, now)
    b = R.new_report_dir("tiny", tmp_path, now)
    assert a.name == "tiny-20260102-030405" and b.name == "tiny-20260102-030405-2"
    link = R.update_latest(a)
    assert link.is_symlink() and link.resolve() == a.resolve()
    R.update_latest(b)  # replaces the existing link in place
    assert link.resolve() == b.resolve() and not list(tmp_path.glob(".latest.*"))
    assert not Path(link.readlink()).is_absolute()  # relocatable


def test_reports_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv(R.ENV_REPORTS, str(tmp_path))
    assert R.reports_root() == tmp_path
    monkeypatch.delenv(R.ENV_REPORTS)
    assert R.reports_root() == REPO / "reports"


def test_cli_runs_pytest_on_claims(monkeypatch, tmp_path, capsys):
    calls = []
    import pytest as pytest_module

    monkeypatch.setattr(pytest_module, "main", lambda argv: calls.append(argv) or 1)
    monkeypatch.setenv(R.ENV_REPORTS, str(tmp_path))
    out = R.new_report_dir("paper", tmp_path)
    R.update_latest(out)
    parser = argparse.ArgumentParser()
    claims_suite.claims_arguments(parser)
    args = parser.parse_args(["--profile", "paper", "-n", "2", "--update-baselines", "--", "-k", "R1"])
    assert claims_suite.claims_command(args) == 1
    argv = calls[0]
    assert argv[0] == str(REPO / "claims") and argv[1:3] == ["--profile", "paper"]
    assert "--update-baselines" in argv and argv[argv.index("-n") + 1] == "2" and argv[-2:] == ["-k", "R1"]
    assert str(out.resolve() / "claims-report.html") in capsys.readouterr().out


def test_ties_table_marks_cuts_decided_by_the_secondary_key():
    from engine.outputs.report import ties_table

    rec = [{"task": "S2T", "matrix": "decoder_t1", "step": 1, "lang": lang, "side": "top", "for": ["rank"],
            "k": 50, "value": 1.0, "tied": tied, "above": 0 if tied > 50 else 50 - tied,
            "taken": 50 if tied > 50 else tied} for lang, tied in (("deu", 180), ("fra", 1))]
    header, rows = ties_table({"ties": rec})
    assert header == ["task", "matrix", "side", "k", "for", "deu", "fra"]
    assert rows == [["S2T", "decoder_t1", "top", "50", "rank", "180 tied, took 50 (AP 1.000) \u2020",
                     "1 tied, took 1 (AP 1.000)"]]
    assert ties_table({}) == (["task", "matrix", "side", "k", "for"], [])


def test_glance_separates_regression_from_the_papers_statements(tmp_path, sample, registry, no_figures):
    # a regression profile whose numbers all match their baselines while most paper checks fail:
    # the report must say both, apart, and why the paper is not expected to hold there
    analysis = copy.deepcopy(sample)
    analysis["overlap"]["1"]["diagonal_ratio"] = 0.05  # R1 no longer holds
    verdicts = {cid: C.check(cid, analysis, registry["claims"][cid]) for cid in registry["claims"]}
    outcomes = {cid: {"outcome": "passed"} for cid in registry["claims"]}
    outcomes["S2"] = {"outcome": "failed", "message": "moved"}
    paths = R.write_report(analysis, verdicts, outcomes, tmp_path, profile="tiny", registry=registry)
    doc = json.loads(paths["json"].read_text())
    g = doc["glance"]
    n = len(registry["claims"])
    assert g["regression"]["not_matched"] == ["S2"] and len(g["regression"]["matched"]) == n - 1
    assert "R1" in g["paper"]["does_not_hold"] and "R1" not in g["paper"]["holds"]
    assert "not expected" in g["paper"]["why"] or "too small" in g["paper"]["why"]
    md = paths["md"].read_text(encoding="utf-8")
    first = md.split("## The paper's figures")[0]
    assert f"{n - 1} of {n} claims reproduce" in first and "not: S2" in first
    assert f"{len(g['paper']['holds'])} of {n} hold" in first
    assert first.count("too small") == 1 and md.count("too small") == 1  # the caveat, once
    row = next(line for line in md.splitlines() if line.startswith("| [R1](#r1) "))
    assert "✗ does not hold" in row and "✓ matches" in row


def test_glance_on_the_paper_profile_has_no_regression_verdict(written):
    doc = json.loads(written[0]["json"].read_text(encoding="utf-8"))
    assert doc["glance"]["regression"]["applies"] is False
    assert doc["glance"]["paper"]["does_not_hold"] == ["R1"]


def test_a_moved_baseline_is_a_table_and_one_command_never_a_traceback(tmp_path, sample, registry, no_figures):
    verdicts = {cid: C.check(cid, sample, registry["claims"][cid]) for cid in registry["claims"]}
    moved = [{"key": "diagonal_ratio.1", "baseline": 0.5, "measured": 0.566, "diff": 0.066, "tol": 1e-6,
              "rule": "noise"}]
    longrepr = ("    def judge(claim_id):\n>       assert ok, msg\nE   AssertionError: R1 moved\n"
                "claims/conftest.py:301: AssertionError")
    outcomes = {cid: {"outcome": "passed"} for cid in registry["claims"]}
    outcomes["R1"] = {"outcome": "failed", "message": longrepr, "baseline": {"passed": False, "moved": moved}}
    outcomes["R2"] = {"outcome": "error", "message": longrepr}
    paths = R.write_report(sample, verdicts, outcomes, tmp_path, profile="tiny", registry=registry)
    md, text = paths["md"].read_text(encoding="utf-8"), paths["html"].read_text(encoding="utf-8")
    assert "| diagonal_ratio.1 | 0.500000 | 0.566000 | 0.066000 | 0.000001 | noise |" in md
    assert md.count("python -m engine claims --profile tiny --update-baselines") == 1
    row = next(line for line in md.splitlines() if line.startswith("| [R1](#r1) "))
    assert "✗ moved" in row
    for doc in (md, text):
        assert "conftest.py:301" not in doc and "def judge" not in doc and "assert ok" not in doc
    assert "R1 moved" in md  # the message itself stays


def test_table_1_follows_each_pairs_control_metric(tmp_path, sample, registry, no_figures):
    # a same-script pair (language ID) and a Cyrillic-Latin pair get their own columns, not Latin/CJK
    analysis = copy.deepcopy(sample)
    extra = [{"src": "deu", "tgt": "fra", "task": "ASR", "step": t, "intervention": "median", "script": "latin",
              "control_by": "langid", "control_rate": 40.0 + t, "ft_src": 50.0, "ft_tgt": 40.0, "n": 8}
             for t in (1, 6, 11)]
    extra += [{"src": "rus", "tgt": "eng", "task": "TR", "step": t, "intervention": "median", "cyrillic": 90.0 - t,
               "latin": 10.0 + t, "control_rate": 10.0 + t, "ft_src": 80.0, "ft_tgt": 10.0, "n": 8}
              for t in (1, 6, 11)]
    analysis["steering"]["rows"] += extra
    analysis["steering"]["config"]["pairs"] += [["deu", "fra"], ["rus", "eng"]]
    table = R.steering_tables(analysis, registry)[0]
    rows = {(r[0], r[1], r[2]): r for r in table["rows"]}
    lid = rows[("German", "ASR", "French")]
    assert lid[3] == "language ID" and lid[4:6] == ["–", "41.0"] and lid[-1] == "51.0"
    cyr = rows[("rus", "TR", "English")]
    assert cyr[3] == "script: Cyrillic → Latin" and cyr[4:6] == ["89.0", "11.0"]
    assert table["within"] == table["total"] == 48  # the paper's cells still all within on its own numbers
    paths = R.write_report(analysis, {}, {}, tmp_path, profile="tiny", registry=registry)
    assert "| rus | TR | English | script: Cyrillic → Latin | 89.0 | 11.0 |" in paths["md"].read_text(encoding="utf-8")


def test_cells_beyond_tolerance_are_marked(sample, registry):
    analysis = copy.deepcopy(sample)
    row = next(r for r in analysis["steering"]["rows"] if (r["src"], r["tgt"], r["task"], r["step"],
                                                          r.get("intervention")) == ("deu", "jpn", "ASR", 6, "median"))
    row["latin"], row["cjk"] = 80.0, 20.0  # paper 39.15 / 60.85, tolerance 15
    table = R.steering_tables(analysis, registry)[0]
    line = next(r for r in table["rows"] if r[:3] == ["German", "ASR", "Japanese"])
    assert line[6] == f"80.0 (39.1) {R.MISS}" and line[4] == "100.0 (100.0)"
    assert table["within"] == 47


def test_markdown_figures_are_relative_links_that_exist(written):
    md_path = written[0]["md"]
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md_path.read_text(encoding="utf-8"))
    assert len(links) == len(R.FIGURES)
    for link in links:
        assert not Path(link).is_absolute() and (md_path.parent / link).is_file(), link


def test_step_tokens_are_counted_per_step_and_shown(tmp_path, sample, registry):
    from engine.pipeline.stages.record import step_tokens
    from engine.pipeline.stages.report import step_token_summary

    outputs = [[7, 8, 9], [7], [5, 8], []]
    tokens = step_tokens(outputs, [1, 2, 3], lambda i: f"<{i}>")
    assert tokens == {"1": ["<7>", "<7>", "<5>", None], "2": ["<8>", None, "<8>", None], "3": ["<9>", None, None, None]}
    summary = step_token_summary(tokens, top=1)
    assert summary == {"1": {"n": 3, "top": [["<7>", 2]]}, "2": {"n": 2, "top": [["<8>", 2]]},
                       "3": {"n": 1, "top": [["<9>", 1]]}}
    analysis = {**sample, "step_tokens": {"S2T": step_token_summary({"1": ["Sure", "Sure", "The"], "6": [None] * 3})}}
    paths = R.write_report(analysis, {}, {}, tmp_path, profile="tiny", registry=registry, run_info={})
    md = paths["md"].read_text()
    assert "| S2T | 1 | 3 | \"Sure\" 2, \"The\" 1 |" in md and "| S2T | 6 | 0 | none reached it |" in md
    assert "Tokens at the recorded steps" in paths["html"].read_text()
