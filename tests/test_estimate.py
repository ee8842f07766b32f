from engine.config import load_profile
from engine.estimate import estimate


def test_paper_estimate_is_computed_from_the_large_catalog_without_weights():
    est = estimate(load_profile("paper"))
    assert est["neurons"] == {"speech_encoder": 589_824, "text_encoder": 368_640, "text_decoder": 491_520,
                              "total": 1_449_984}
    n = 5 * 1000
    per_row = {"S2T": 589_824 + 3 * 491_520, "T2T": 368_640 + 3 * 491_520, "ASR": 589_824 + 3 * 491_520}
    assert est["disk_bytes"]["activation_store"] == sum(n * w * 2 for w in per_row.values())
    assert est["examples"]["record_per_task"] == n and est["examples"]["held_out"] == 500
    assert 2.2e9 < est["parameters"] < 2.4e9
    assert est["compute"]["hours"]["total"] > 0


def test_estimate_follows_overrides():
    small = estimate(load_profile("paper", ["data.n_identify=100"]))
    assert small["examples"]["record_per_task"] == 500
    assert small["disk_bytes"]["activation_store"] * 10 == estimate(load_profile("paper"))["disk_bytes"]["activation_store"]
