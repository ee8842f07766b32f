"""The v1 family (SeamlessM4TModel) end to end on a tiny random-weight fixture, built into a
temporary directory by fixtures/build_tiny_v1_model.py (seeded): loader, recorder, steering and
one pipeline run, offline."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_v1(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("build_tiny_v1_model", ROOT / "fixtures" / "build_tiny_v1_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build(tmp_path_factory.mktemp("tiny_v1"), seed=0)


def test_loader_reads_the_family_from_the_config(tiny_v1):
    from engine.model.loader import load_model

    lm = load_model(tiny_v1, langs=["eng", "deu", "jpn"])
    assert type(lm.model).__name__ == "SeamlessM4TModel" and lm.family == "seamless_m4t"


def test_recording_and_steering_on_v1(tiny_v1):
    from engine.model.catalog import build_catalog
    from engine.model.loader import load_model
    from engine.model.recorder import ModelInput
    from engine.model.steering import DECODER, generate, steer

    lm = load_model(tiny_v1)
    cat = build_catalog(lm.model)
    assert any(c.name == "conv_module.batch_norm" for c in cat.components)
    inputs = [ModelInput(example_id=f"x{i}", lang="deu", modality="text", tgt_lang="deu",
                         text=t, waveform=None, reference=t)
              for i, t in enumerate(["Guten Morgen", "Der Hund läuft schnell"])]
    base = generate(lm, cat, inputs, max_new_tokens=8)
    neurons = np.arange(0, cat.n_neurons(DECODER), 7)
    with steer(lm, cat, neurons, np.full(neurons.size, 50.0, dtype=np.float32)):
        steered = generate(lm, cat, inputs, max_new_tokens=8)
    again = generate(lm, cat, inputs, max_new_tokens=8)
    assert [g.output_text for g in again] == [g.output_text for g in base]   # hooks removed
    assert [g.output_text for g in steered] != [g.output_text for g in base]  # and they did act


def test_one_pipeline_run_on_v1(tiny_v1, tmp_path):
    from engine.pipeline import config
    from engine.pipeline import runner as pipeline

    cfg = config.load_profile("tiny", [
        f"model.id='{tiny_v1}'", "data.langs=['deu', 'jpn']", "data.n_identify=6", "data.n_steer=2",
        "rank.k=10", "rank.k_sweep=[5, 10]", "rank.n_boot=3", "steer.k=10", "steer.random_control=false",
        "steer.pairs=[['deu', 'jpn']]", "record.max_new_tokens=11", "steer.max_new_tokens=8"])
    pipeline.run_pipeline(cfg, out=tmp_path)
    analysis = json.loads(next(tmp_path.glob("tiny/report-*/analysis.json")).read_text())
    catalog = json.loads(next(tmp_path.glob("tiny/record-*/catalog.json")).read_text())
    assert any(c["name"] == "conv_module.batch_norm" for c in catalog["components"])
    rows = analysis["steering"]["rows"]
    assert {(r["src"], r["tgt"]) for r in rows} == {("deu", "jpn")}
    assert {r["intervention"] for r in rows} == {"median", "none"}
