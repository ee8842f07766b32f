import pytest
import torch

from engine.config import load_profile
from engine.estimate import STAGES, estimate


@pytest.fixture(scope="module")
def paper():
    return estimate(load_profile("paper"))


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
    assert list(paper["stages"]) == list(STAGES)
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
    for name in ("matmul_gmac_s", "generate_ms_per_step", "sha256_mb_s", "ap_us_per_neuron",
                 "bootstrap_us_per_resample_neuron", "resample_statistics_s", "stage_process_rss_mib"):
        assert name in cal and name in text
    if not torch.cuda.is_available():
        assert paper["assumptions"]["gpu"] is not None and "assumed GPU" in text


def test_estimate_follows_overrides(paper):
    small = estimate(load_profile("paper", ["data.n_identify=100", "rank.n_boot=10"]))
    assert small["examples"]["record_per_task"] == 500
    assert small["disk_bytes"]["activation_store"] * 10 == paper["disk_bytes"]["activation_store"]
    assert small["stages"]["compare"]["transient_disk_bytes"] * 10 == paper["stages"]["compare"]["transient_disk_bytes"]
    assert small["stages"]["compare"]["cpu_s"] < paper["stages"]["compare"]["cpu_s"]
