"""engine.open_run on the tiny profile's finished run: typed access equals the artifacts, and
the README's Python example runs as written."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

import engine
from engine.errors import UserError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def analysis_path():
    from engine.pipeline.runner import ensure_analysis

    return ensure_analysis("tiny", out=REPO / "runs")


@pytest.fixture(scope="module")
def run(analysis_path):
    # the report directory itself: other tests finish runs with other settings under runs/tiny
    return engine.open_run(analysis_path.parent)


def test_opens_the_run_behind_the_analysis(run, analysis_path):
    assert run.report_dir == analysis_path.parent
    assert run.analysis == json.loads(analysis_path.read_text())
    assert run.langs == run.meta["langs"] and run.steps == [1, 6, 11]


def test_overlap_and_k_sweep_are_the_artifact_values(run):
    for t in run.steps:
        o, raw = run.overlap(t), run.analysis["overlap"][str(t)]
        assert np.array_equal(o.matrix, np.asarray(raw["matrix"]))
        assert o.diagonal_ratio == raw["diagonal_ratio"] and o.perm_p == raw["perm_p"]
        assert list(o.diagonal_ratio_ci) == raw["diagonal_ratio_ci"]
    assert run.k_sweep.ks == run.analysis["k_sweep"]["ks"]


def test_top_k_neurons_are_located_by_the_catalog(run):
    from engine.science.ranking import top_k

    row = run.ap("S2T", 6)[run.langs.index("fra")]
    got = run.top_k("S2T", "fra", step=6, k=7)
    assert [n.flat for n in got] == list(top_k(row, 7))
    for n in got:
        comp = next(c for c in run.catalog.stack("text_decoder") if c.layer == n.layer and c.name == n.component)
        assert comp.offset + n.channel == n.flat and n.ap == row[n.flat]
    assert run.bottom_k("T2T", "jpn", k=3)[0].stack == "text_encoder"


def test_control_set_is_what_steering_used(run):
    from engine.model.steering import control_neurons

    k = run.analysis["steering"]["config"]["k"]
    expect = control_neurons(run.ap("ASR", 11)[run.langs.index("deu")], k)
    assert [n.flat for n in run.control_set("deu", 11)] == list(expect)


def test_distribution_for_the_runs_own_language_equals_the_stored_one(run):
    stored = run.analysis["distribution"]
    # recomputed from AP with another k, then back at the run's k
    other = run.distribution(stored["lang"], k=stored["k"] + 1)
    assert other["k"] == stored["k"] + 1
    lang = next(l for l in run.langs if l != stored["lang"])
    fresh = run.distribution(lang, k=stored["k"])
    assert sum(fresh["speech_encoder"]["by_layer"]) == stored["k"]
    assert run.distribution() is stored


def test_steering_outputs_and_verdicts(run):
    row = run.steering("median")[0]
    outs = run.outputs(row["src"], row["task"], row["tgt"], row["step"])
    assert len(outs) == row["n"]
    assert len(run.outputs(row["src"], row["task"])) == row["n"]
    verdicts = run.verdicts()
    assert set(verdicts) >= {"R1", "S4"}


def test_plots_return_figures_for_any_step_language_k(run):
    from matplotlib.figure import Figure

    assert isinstance(run.plot_overlap(steps=[6]), Figure)
    assert isinstance(run.plot_spearman(), Figure)
    assert isinstance(run.plot_k_sweep(steps=[1, 11]), Figure)
    assert isinstance(run.plot_distribution("cmn", k=10, steps=[1]), Figure)
    with pytest.raises(UserError, match="step"):
        run.plot_overlap(steps=[7])
    assert isinstance(run.plot_control_rate(steps=[6, 11]), Figure)
    assert isinstance(run.plot_fasttext(paper=False), Figure)
    with pytest.raises(UserError, match="step"):
        run.plot_control_rate(steps=[7])


def test_every_report_figure_is_the_open_run_plot(run):
    # a notebook redraws exactly what the report shows: same function, same data, same paper values
    from engine.outputs import report

    figures, missing = report.make_figures(run.analysis)
    assert not missing and set(figures) == set(report.FIGURES)
    for name, png in figures.items():
        assert report.figures.png(getattr(run, f"plot_{name}")()) == png, name


def test_bad_names_get_one_line_errors(run, tmp_path):
    with pytest.raises(UserError, match="task 'TR'"):
        run.ap("TR")
    with pytest.raises(UserError, match="language 'eng'"):
        run.top_k("S2T", "eng")
    with pytest.raises(UserError, match="no finished run"):
        engine.open_run(tmp_path)
    with pytest.raises(UserError, match="no run at"):
        engine.open_run("no-such-profile", out=tmp_path)


def test_readme_python_example_runs_as_written(analysis_path, monkeypatch, capsys):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(REPO)  # as a user would, from the checkout where `engine run` wrote runs/
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "Neuron(stack=" in printed and "'R1':" in printed
