import contextlib
import io
import json

import pytest
import torch

from engine.files import REPO_ROOT
from engine.pipeline.config import load_profile
from engine.tools import estimate as estimate_mod
from engine.tools.cli import main
from engine.tools.estimate import STAGES, calibrate, estimate


@pytest.fixture(scope="module")
def paper():
    """``python -m engine estimate --profile paper``, as a user runs it: printed lines, then JSON."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["estimate", "--profile", "paper"]) == 0
    *lines, last = out.getvalue().strip().splitlines()
    return {**json.loads(last), "lines": lines}


def test_paper_estimate_is_computed_from_the_large_catalog_without_weights(paper):
    est = paper
    assert est["neurons"] == {"speech_encoder": 589_824, "text_encoder": 368_640, "text_decoder": 491_520,
                              "total": 1_449_984}
    n = 5 * 1000
    # one speech-encoder matrix serves S2T and ASR; decoder matrices per task and step
    stored = {"speech_encoder": 589_824, "text_encoder": 368_640, "decoders": 3 * 3 * 491_520}
    assert est["disk_bytes"]["activation_store"] == sum(n * w * 2 for w in stored.values())
    assert est["examples"]["encoder_passes"] == 2 * n
    assert est["examples"]["record_per_task"] == n and est["examples"]["held_out"] == 500
    assert 2.2e9 < est["parameters"] < 2.4e9
    assert est["compute"]["hours"]["total"] > 0


def test_every_stage_has_time_ram_and_disk_and_gpu_figures_on_cuda(paper):
    assert sorted(paper["stages"]) == sorted(STAGES)
    for stage, figs in paper["stages"].items():
        assert figs["time_s"] > 0 and figs["cpu_s"] > 0 and figs["peak_rss_bytes"] > 0 and figs["disk_bytes"] > 0, stage
    weights = paper["parameters"] * 2  # bf16
    for stage in ("record", "steer"):  # the model is loaded: its weights are in GPU memory
        assert paper["stages"][stage]["gpu_peak_bytes"] >= weights
    # the bootstrap scratch of compare: two sides x n_boot x languages x decoder neurons, float32
    assert paper["stages"]["compare"]["transient_disk_bytes"] == 2 * 100 * 5 * 491_520 * 4
    # the resamples live in that scratch, not in memory: compare's memory follows one store block
    # and a few [L, N] vectors, far below the n_boot x L x N of all resamples
    compare = paper["stages"]["compare"]
    assert paper["stages"]["data"]["peak_rss_bytes"] + 40 * 5 * 491_520 < compare["peak_rss_bytes"]
    assert compare["peak_rss_bytes"] < compare["transient_disk_bytes"]


def test_measured_figures_and_gpu_assumptions_are_stated(paper):
    text = "\n".join(paper["lines"])
    cal = paper["calibration"]
    for name in ("sha256_mb_s", "ap_us_per_neuron",
                 "bootstrap_us_per_resample_neuron", "resample_statistics_s", "stage_process_rss_mib"):
        assert name in cal and name in text
    if not torch.cuda.is_available():
        # the stated GPU model replaces what the CPU cannot measure for it: no CPU matmul figures
        assert paper["assumptions"]["gpu"] is not None and "assumed GPU" in text
        assert "matmul_gmac_s" not in cal and all(paper["stages"][s]["gpu_s"] > 0 for s in ("record", "steer"))
    else:
        assert "matmul_gmac_s" in cal


def test_estimate_follows_overrides(paper, monkeypatch):
    if not torch.cuda.is_available():
        # a CUDA profile on a CPU-only machine is costed by the stated GPU model: multiplying bf16
        # matrices on a CPU that emulates bf16 took 25 minutes there, then was thrown away
        def refuse(*a, **k):
            raise AssertionError("calibrated on the CPU for a GPU run")
        monkeypatch.setattr(calibrate, "matmul", refuse)
        monkeypatch.setattr(calibrate, "generate", refuse)
    small = estimate(load_profile("paper", ["data.n_identify=100", "rank.n_boot=10"]))
    assert small["examples"]["record_per_task"] == 500
    assert small["disk_bytes"]["activation_store"] * 10 == paper["disk_bytes"]["activation_store"]
    assert small["stages"]["compare"]["transient_disk_bytes"] * 10 == paper["stages"]["compare"]["transient_disk_bytes"]
    assert small["stages"]["compare"]["cpu_s"] < paper["stages"]["compare"]["cpu_s"]


def test_cpu_matmul_calibration_shrinks_rows_when_products_are_slow(monkeypatch):
    # bf16 on a CPU that emulates it is ~50-100x slower than fp32: the encode rows shrink until a
    # product fits the budget, so the calibration's own cost stays bounded on any CPU
    calls = []
    real = torch.nn.functional.linear
    monkeypatch.setattr(calibrate, "MATMUL_CALL_BUDGET_S", 1e-9)  # every product "too slow"
    monkeypatch.setattr(torch.nn.functional, "linear", lambda x, w: calls.append(x.shape[0]) or real(x, w))
    out = calibrate.matmul("cpu", torch.float32, 64, {4})
    assert set(calls) == {16, 4} and len(calls) <= 6  # the 16-row probe and B=4, once each after a warm-up
    assert out["encode"] > 0 and out["decode"][4] > 0


def test_shared_work_divides_in_whole_units_over_ranks_and_the_rest_does_not():
    one = (100.0, 1000.0)  # CPU s, device s in one process; 900 device s of it shareable
    assert estimate_mod.busiest_rank(one, (0.0, 900.0), 10, 1) == (100.0, 1000.0)
    assert estimate_mod.busiest_rank(one, (0.0, 900.0), 10, 5) == pytest.approx((100.0, 280.0))
    assert estimate_mod.busiest_rank(one, (0.0, 900.0), 10, 4) == pytest.approx((100.0, 370.0))  # 3 of 10 units
    assert estimate_mod.busiest_rank(one, (0.0, 900.0), 10, 32) == pytest.approx((100.0, 190.0))  # 1 unit each
    assert estimate_mod.busiest_rank(one, (0.0, 0.0), 0, 8) == (100.0, 1000.0)


def test_the_launch_and_the_stage_that_bounds_it_are_stated(paper):
    assert paper["launch"] == {"nodes": 1, "gpus_per_node": 1, "ranks": 1,
                               "bounded_by": max(STAGES, key=lambda s: paper["stages"][s]["time_s"])}
    assert any(x.startswith("launch: 1 node(s) x 1 GPU(s) = 1 rank(s)") for x in paper["lines"])


@pytest.mark.parametrize("name", ["qwen2-audio", "voxtral"])
def test_a_speech_llm_cost_model_counts_each_parameter_once(name):
    # audio encoder, projector, LM layers, token embedding and output projection: every weight of
    # the checkpoint's architecture in exactly one part (a part that took in another, such as the
    # whole model for the audio encoder, would break the sum)
    from engine.model.catalog import config_for
    from engine.model.loader import model_class

    mcfg = config_for(name)
    with torch.device("meta"):
        model = model_class(mcfg)(mcfg)
    shape = estimate_mod.model_shape(model, mcfg)
    embed = mcfg.text_config.vocab_size * mcfg.text_config.hidden_size
    lm_norm = mcfg.text_config.hidden_size
    parts = shape["p_speech"] + shape["p_projector"] + shape["p_dec"] + embed + lm_norm + shape["p_lm"]
    assert parts == sum(p.numel() for p in model.parameters())
    assert shape["dec_layers"] == mcfg.text_config.num_hidden_layers
    assert shape["projector_positions"] == {"qwen2-audio": 750, "voxtral": 375}[name]


@pytest.mark.parametrize("profile, per_s", [("tiny-qwen2-audio", 25.0), ("tiny-voxtral", 0.0)])
def test_a_speech_llm_prompt_is_measured_with_the_runs_processor(profile, per_s):
    # Qwen2-Audio's LM reads 25 audio tokens per second of the utterance; Voxtral's always reads
    # its whole 30 s window (375 tokens)
    from engine.model.loader import read_config

    cfg = load_profile(profile)
    mcfg = read_config(cfg["model"]["id"])
    fixture = REPO_ROOT / cfg["model"]["id"]
    w = estimate_mod.prompt_widths(cfg, mcfg, {"deu": ["Das Wetter ist heute schön."]}, fixture)
    assert w["source"] == "the run's processor" and w["speech_per_s"] == per_s
    assert w["speech_fixed"] > (375 if per_s == 0 else 0) and w["text"] > 5
    other = {**cfg, "model": {**cfg["model"], "id": "nobody/not-cached"}}  # offline, never downloaded
    assert estimate_mod.prompt_widths(other, mcfg, None, fixture)["source"].startswith("the fixture's")
