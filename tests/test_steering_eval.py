import json
from types import SimpleNamespace

import numpy as np
import pytest

from engine.errors import UserError
from engine.model.steering import DECODER
from engine.pipeline.definitions import preset_values
from engine.pipeline.inputs.tasks import Example
from engine.pipeline.stages import steer as stage
from engine.pipeline.stages.steer import markdown_tables, write_steering_artifacts
from engine.pipeline.steering_run import run_steering
from engine.science import scripts as control
from engine.science.steering_scores import check_held_out, control_rate_ci, effect_ratios, score_outputs

LANGS = ["deu", "spa", "fra", "cmn", "jpn"]
TEXT = {"deu": "Kinder spielen im Park.", "fra": "Les enfants jouent dans le parc.",
        "cmn": "孩子们在公园里玩。", "jpn": "子供たちは公園で遊んでいます。", "spa": "Los niños juegan."}


def example(sid, lang, task, split="steer"):
    modality = "speech" if task == "ASR" else "text"
    return Example(example_id=f"{sid}/{lang}/{task}", sentence_id=sid, lang=lang, task=task,
                   modality=modality, tgt_lang=lang, text=TEXT[lang], reference=TEXT[lang],
                   audio_path=None if modality == "text" else f"/nonexistent/{sid}-{lang}.wav", split=split)


def held_out(langs=("deu", "cmn"), sids=("s10", "s11")):
    return [example(s, lang, task) for lang in langs for task in ("ASR", "TR") for s in sids]


def identify(langs=("deu", "cmn"), sids=("s1", "s2")):
    return [example(s, lang, "ASR", split="identify") for lang in langs for s in sids]


# --- held-out ------------------------------------------------------------------------------


def test_held_out_and_identification_never_overlap():
    check_held_out(held_out(), identify())  # disjoint: fine
    with pytest.raises(UserError, match="overlap"):
        check_held_out(held_out(), identify(sids=("s1", "s11")))  # shared sentence
    with pytest.raises(UserError, match="split 'steer'"):
        check_held_out(held_out() + [example("s12", "deu", "TR", split="identify")], identify())


def test_run_steering_refuses_overlapping_examples():
    with pytest.raises(UserError, match="overlap"):
        run_steering(None, None, held_out=held_out(), identify=identify(sids=("s10",)), ap={}, on_p50={},
                     langs=LANGS)


# --- effect ratio on planted control rates ---------------------------------------------------


def planted_rows():
    """cr[(src, tgt, step)] = (ASR, TR) control rates, with pairs below tau=10 at t=1."""
    cr = {("deu", "cmn", 1): (0.0, 0.0), ("deu", "cmn", 6): (80.0, 20.0), ("deu", "cmn", 11): (90.0, 45.0),
          ("jpn", "fra", 1): (2.2, 0.5), ("jpn", "fra", 6): (40.0, 10.0), ("jpn", "fra", 11): (9.99, 5.0),
          ("cmn", "deu", 6): (50.0, 40.0), ("cmn", "deu", 11): (60.0, 30.0)}
    rows = []
    for (src, tgt, step), (asr, tr) in cr.items():
        for task, value in (("ASR", asr), ("TR", tr)):
            rows.append({"src": src, "tgt": tgt, "task": task, "step": step, "intervention": "median",
                         "latin": 100 - value, "cjk": value, "control_rate": value, "ft_src": 0.0,
                         "ft_tgt": 0.0, "n": 4})
            # other interventions must not leak into the ratios
            rows.append({**rows[-1], "intervention": "random", "control_rate": 99.0})
    return rows


def test_effect_ratio_exclusion_and_means_on_planted_rates():
    pytest.importorskip("engine.science.scripts")
    er = effect_ratios(planted_rows(), tau=10.0)
    got = {(p["src"], p["tgt"], p["step"]): p for p in er["pairs"]}
    assert len(got) == 8
    assert got[("deu", "cmn", 6)]["ratio"] == pytest.approx(0.25)
    assert got[("deu", "cmn", 11)]["ratio"] == pytest.approx(0.5)
    assert got[("cmn", "deu", 6)]["ratio"] == pytest.approx(0.8)
    for key in [("deu", "cmn", 1), ("jpn", "fra", 1), ("jpn", "fra", 11)]:  # CR_ASR < tau
        assert got[key]["excluded"] and got[key]["ratio"] is None
    assert not got[("jpn", "fra", 6)]["excluded"]
    assert er["mean"]["6"] == pytest.approx(np.mean([0.25, 0.25, 0.8]))
    assert er["mean"]["11"] == pytest.approx(np.mean([0.5, 0.5]))
    assert er["mean"]["1"] is None  # no valid pair at t=1
    dirs = {(d["src"], d["tgt"]): d["rising"] for d in er["direction"]}
    assert dirs == {("deu", "cmn"): True, ("cmn", "deu"): False, ("jpn", "fra"): None}
    assert {(e["src"], e["tgt"], e["step"]) for e in er["excluded"]} == {
        ("deu", "cmn", 1), ("jpn", "fra", 1), ("jpn", "fra", 11)}
    assert er["n_valid"] == {"1": 0, "6": 3, "11": 2}
    # tau is configurable: with tau=1 the t=1 pair jpn->fra (2.2) becomes valid
    er1 = effect_ratios(planted_rows(), tau=1.0)
    assert er1["mean"]["1"] == pytest.approx(0.5 / 2.2)
    assert er1["tau"] == 1.0


def test_markdown_tables_shape():
    pytest.importorskip("engine.science.scripts")
    rows = planted_rows()
    section = {"rows": rows, "effect_ratio": effect_ratios(rows),
               "qualitative": [{"src": "deu", "tgt": "cmn", "step": 11, "sentence_id": "s10",
                                "gold": "a | b", "asr": "孩子", "tr": "Kinder 孩子"}]}
    md = markdown_tables(section)
    for heading in ("Table 1", "Table 3", "Table 4", "Table 2", "Random control"):
        assert heading in md
    assert "| German | ASR | Chinese | 100.00 | 0.00 | 20.00 | 80.00 | 10.00 | 90.00 |" in md
    assert "| German | Chinese | 6 | 80.00 | 20.00 | 0.25 |" in md
    assert "excluded (ASR < τ)" in md
    assert "a \\| b" in md  # cell text is escaped


# --- end to end on the tiny model -----------------------------------------------------------


def to_input(x):
    """ModelInput with a seeded synthetic waveform (no speech synthesis in unit tests)."""
    from engine.model.recorder import ModelInput

    waveform = None
    if x.modality == "speech":
        seed = sum(map(ord, x.example_id))
        waveform = np.random.default_rng(seed).normal(scale=0.1, size=8000).astype(np.float32)
    return ModelInput(example_id=x.example_id, lang=x.lang, modality=x.modality, tgt_lang=x.tgt_lang,
                      text=x.text if x.modality == "text" else None, waveform=waveform, reference=x.reference)


def planted_stats(n_decoder, steps=(1, 6)):
    rng = np.random.default_rng(0)
    ap = {t: rng.random((len(LANGS), n_decoder)) for t in steps}
    on = {t: (rng.normal(size=(len(LANGS), n_decoder)) * 3).astype(np.float32) for t in steps}
    return ap, on


def test_run_steering_end_to_end(tiny_lm, tiny_catalog, tmp_path):
    pytest.importorskip("engine.science.scripts")
    ap, on = planted_stats(tiny_catalog.n_neurons(DECODER))
    kwargs = dict(held_out=held_out(), identify=identify(), ap=ap, on_p50=on, langs=LANGS, k=20,
                  steps=(1, 6), pairs=[("deu", "cmn"), ("cmn", "deu")], batch_size=2, max_new_tokens=6,
                  to_input=to_input)
    result = run_steering(tiny_lm, tiny_catalog, **kwargs)
    rows = result.section["rows"]
    # 2 pairs x 2 tasks x 2 steps x {median, random} + 2 sources x 2 tasks baseline (one tgt each)
    assert len(rows) == 2 * 2 * 2 * 2 + 2 * 2
    for r in rows:
        assert r["n"] == 2
        assert (r["control_rate"] is None) == (r["tokens"] == 0)
        assert r["control_rate"] is None or 0.0 <= r["control_rate"] <= 100.0
        assert 0.0 <= r["ft_tgt"] <= 100.0
    er = result.section["effect_ratio"]
    assert len(er["pairs"]) == 4 and set(er["mean"]) == {"1", "6"}
    assert len(result.section["qualitative"]) == 4
    q = result.section["qualitative"][0]
    assert q["gold"] == TEXT[q["src"]]
    assert q["asr"] == result.outputs[f"{q['src']}>{q['tgt']}/ASR/{q['step']}/median"][0]["text"]
    # deterministic, including the random control
    again = run_steering(tiny_lm, tiny_catalog, **kwargs)
    assert again.outputs == result.outputs
    # the steering does something on this model (else the test could not fail)
    assert any(result.outputs[f"deu>cmn/TR/{t}/median"] != result.outputs["deu/TR/none"] for t in (1, 6))
    # what the steer stage writes: the section, every text, and the tables
    paths = write_steering_artifacts(result, tmp_path)
    assert [p.name for p in paths] == ["steering.json", "steering_outputs.json", "steering_tables.md"]
    assert json.loads(paths[0].read_text())["rows"] == json.loads(json.dumps(rows))
    assert json.loads(paths[1].read_text()) == json.loads(json.dumps(result.outputs))
    assert paths[2].read_text(encoding="utf-8") == markdown_tables(result.section)
    assert "Table 1" in paths[2].read_text()


def test_k0_steering_equals_baseline(tiny_lm, tiny_catalog):
    pytest.importorskip("engine.science.scripts")
    ap, on = planted_stats(tiny_catalog.n_neurons(DECODER), steps=(6,))
    result = run_steering(tiny_lm, tiny_catalog, held_out=held_out(langs=("deu",)), identify=identify(langs=("deu",)),
                          ap=ap, on_p50=on, langs=LANGS, k=0, steps=(6,), pairs=[("deu", "jpn")],
                          batch_size=2, max_new_tokens=6, to_input=to_input, positions="from_t")
    for task in ("ASR", "TR"):
        assert result.outputs[f"deu>jpn/{task}/6/median"] == result.outputs[f"deu/{task}/none"]
        assert result.outputs[f"deu>jpn/{task}/6/random"] == result.outputs[f"deu/{task}/none"]


def test_bad_arguments(tiny_lm, tiny_catalog):
    ap, on = planted_stats(tiny_catalog.n_neurons(DECODER))
    base = dict(held_out=held_out(), identify=identify(), ap=ap, on_p50=on, langs=LANGS, steps=(1, 6),
                to_input=to_input)
    with pytest.raises(UserError, match="positions"):
        run_steering(tiny_lm, tiny_catalog, **base, positions="sometimes")
    with pytest.raises(UserError, match="intervention"):
        run_steering(tiny_lm, tiny_catalog, **base, interventions=("zero",))
    with pytest.raises(UserError, match=r"ap\[11\]"):
        run_steering(tiny_lm, tiny_catalog, **{**base, "steps": (1, 11)})
    with pytest.raises(UserError, match="held-out ASR examples for 'fra'"):
        run_steering(tiny_lm, tiny_catalog, **base, pairs=[("fra", "cmn")])


def test_run_experiment_wiring(tiny_lm, tiny_catalog, tmp_path, monkeypatch):
    """The pipeline's steer stage: config keys, file names of the rank stage, outputs written."""
    steps = (6,)
    ap, on = planted_stats(tiny_catalog.n_neurons(DECODER), steps=steps)
    ap, on = {6: ap[6][:3]}, {6: on[6][:3]}  # rows of data.langs
    (tmp_path / "rank" / "ASR").mkdir(parents=True)
    np.save(tmp_path / "rank" / "ASR" / "decoder_t6_on_p50.npy", on[6])
    langs = ("deu", "cmn")  # steer.pairs below: deu<->cmn
    views = {("ASR", "steer"): [x for x in held_out(langs) if x.task == "ASR"],
             ("TR", "steer"): [x for x in held_out(langs) if x.task == "TR"]}
    monkeypatch.setattr(stage, "load_sep", lambda run, task, name: np.zeros_like(ap[6]))
    monkeypatch.setattr(stage, "task_examples", lambda run, task, split: views.get(
        (task, split), identify(langs) if (task, split) == ("ASR", "identify") else []))
    monkeypatch.setattr(stage, "load_ap", lambda run, task, name: {"decoder_t6": ap[6]}[name])
    monkeypatch.setattr(stage, "model_inputs", lambda run, xs: [to_input(x) for x in xs])
    texts = {}
    for x in held_out(("deu", "spa", "cmn")):
        texts.setdefault(x.sentence_id, {})[x.lang] = x.text
    monkeypatch.setattr(stage, "load_selection", lambda run: SimpleNamespace(
        identify_ids=[], sentences=[SimpleNamespace(sentence_id=s, texts=t) for s, t in texts.items()]))

    class FakeRun:
        cfg = {"record": {"steps": list(steps)}, "data": {"langs": ["deu", "spa", "cmn"]}, "model": {"batch_size": 4},
               "steer": {"k": 5, "tau": 10.0, "positions": "from_t", "max_new_tokens": 5,
                         "random_control": False, "seed": 0, "pairs": [["deu", "cmn"], ["cmn", "deu"]]},
               "definitions": preset_values("paper_text")}

        def dir(self, stage):
            (tmp_path / stage).mkdir(exist_ok=True)
            return tmp_path / stage

        def model(self):
            return tiny_lm

        def catalog(self):
            return tiny_catalog

    result = stage.run_experiment(FakeRun())
    stage.write_steering_artifacts(result, tmp_path / "steer")
    section = result.section
    assert {r["intervention"] for r in section["rows"]} == {"median", "none"}
    assert section["config"]["positions"] == "from_t" and section["config"]["k"] == 5
    assert {(r["src"], r["tgt"]) for r in section["rows"]} == {("deu", "cmn"), ("cmn", "deu")}
    assert (tmp_path / "steer" / "steering_tables.md").read_text().startswith("### Table 1")
    assert json.loads((tmp_path / "steer" / "steering_outputs.json").read_text())


def test_pair_without_classified_tokens_is_excluded_not_fatal():
    pytest.importorskip("engine.science.scripts")
    rows = [r for r in planted_rows() if r["step"] == 6]
    for r in rows:
        if (r["src"], r["task"]) == ("cmn", "TR"):
            r["control_rate"] = None  # e.g. every output empty
    er = effect_ratios(rows)
    got = {(p["src"], p["tgt"]): p for p in er["pairs"]}
    assert got[("cmn", "deu")]["excluded"] and got[("cmn", "deu")]["reason"] == "no classified token"
    assert er["mean"]["6"] == pytest.approx(0.25)
    assert "excluded (no classified token)" in markdown_tables(
        {"rows": rows, "effect_ratio": er, "qualitative": []})


def test_score_outputs_scripts_and_fasttext():
    pytest.importorskip("engine.science.scripts")
    texts = ["Kinder spielen im Park.", "孩子们在公园里玩。"]  # 4 Latin words, 8 Han characters
    s = score_outputs(texts, "deu", "cmn")
    assert s["latin"] == pytest.approx(100 * 4 / 12) and s["cjk"] == pytest.approx(100 * 8 / 12)
    assert s["control_rate"] == s["cjk"] and s["n"] == 2 and s["tokens"] == 12
    assert 40 < s["ft_src"] < 60 and 40 < s["ft_tgt"] < 60
    empty = score_outputs(["", " "], "deu", "cmn")  # no text: fastText 0 too
    assert empty["control_rate"] is None and empty["latin"] is None and empty["ft_tgt"] == 0.0


def test_control_rate_ci_brackets_the_rate_and_matches_a_brute_force_bootstrap():
    texts = ["我们 today 学习", "hello world", "中文中文", "", "mixed 中 text"]
    lo, hi = control_rate_ci(texts, "cjk", n_boot=300, seed=3)
    assert lo <= control.control_rate(texts, "cjk") <= hi
    rng = np.random.default_rng(3)
    idx = rng.integers(0, len(texts), size=(300, len(texts)))
    rates = []
    for row in idx:
        sample = [texts[i] for i in row]
        toks = [t for s in sample for t in control.classify_tokens(s)]
        if toks:
            rates.append(100.0 * sum(t == "cjk" for t in toks) / len(toks))
    assert np.allclose([lo, hi], np.percentile(rates, [2.5, 97.5]))
    assert control_rate_ci(["", "123"], "cjk") is None
    assert control_rate_ci(["中文"] * 4, "cjk") == [100.0, 100.0]
