"""Catalog: paper counts for Large (meta device), layout, locate, JSON round trip, CLI last line."""
import json

import numpy as np
import pytest
from transformers import SeamlessM4Tv2Config

from engine.model.catalog import EXTRAS, GROUPS, Catalog, build_catalog, catalog_command, config_for


@pytest.fixture(scope="module")
def large():
    return build_catalog(SeamlessM4Tv2Config())


@pytest.fixture(scope="module")
def tiny():
    return build_catalog(config_for("tiny"))


def test_large_counts_match_paper(large):
    assert large.counts() == {"speech_encoder": 589_824, "text_encoder": 368_640,
                              "text_decoder": 491_520, "total": 1_449_984}
    per_layer = {"speech_encoder": 24_576, "text_encoder": 15_360, "text_decoder": 20_480}
    for stack, n in per_layer.items():
        layers = {c.layer for c in large.stack(stack)}
        assert layers == set(range(24))
        assert all(sum(c.dim for c in large.stack(stack) if c.layer == i) == n for i in layers)


def test_offsets_are_contiguous_in_catalog_order(tiny):
    for stack in GROUPS:
        comps = tiny.stack(stack)
        assert [c.offset for c in comps] == list(np.cumsum([0] + [c.dim for c in comps[:-1]]))
        assert [c.layer for c in comps] == sorted(c.layer for c in comps)


def test_positions_and_axes(large):
    dec = large.stack("text_decoder")
    inv = {c.name for c in dec if c.position == "step_invariant"}
    assert inv == {"cross_attention.k_proj", "cross_attention.v_proj"}
    assert all(c.position == "encoder_pooled" for s in ("speech_encoder", "text_encoder") for c in large.stack(s))
    bct = {c.name for c in large.stack("speech_encoder") if c.channel_axis == 1}
    assert bct == {"conv_module.pointwise_conv1", "conv_module.glu", "conv_module.depthwise_conv",
                   "conv_module.pointwise_conv2"}
    assert not any("activation_fn" in c.path or "distance_embedding" in c.path for c in large.components)


def test_extras_add_components_only_on_request(tiny):
    extra = build_catalog(config_for("tiny"), extras=EXTRAS)
    names = {c.name for c in extra.components} - {c.name for c in tiny.components}
    assert "ffn.act" in names and any(n.startswith("adapter.") for n in names)
    assert any(n.startswith("intermediate_ffn.") for n in names)
    act = [c for c in extra.components if c.name == "ffn.act"]
    assert {c.stack for c in act} == {"text_encoder", "text_decoder"}
    with pytest.raises(ValueError):
        build_catalog(config_for("tiny"), extras=("activation_fn",))


def test_locate_matches_slow_expansion(tiny):
    rng = np.random.default_rng(0)
    for stack in GROUPS:
        owner = [(c, ch) for c in tiny.stack(stack) for ch in range(c.dim)]  # slow oracle
        flat = rng.choice(len(owner), size=50, replace=False)
        got = {(c.path, int(ch)) for c, chans in tiny.locate(stack, flat) for ch in chans}
        assert got == {(owner[i][0].path, owner[i][1]) for i in flat}
    with pytest.raises(IndexError):
        tiny.locate("text_encoder", np.array([tiny.n_neurons("text_encoder")]))


def test_json_round_trip(tiny):
    d = json.loads(json.dumps(tiny.to_json()))
    assert Catalog.from_json(d) == tiny


def test_cli_last_line_is_counts(capsys):
    class Args:
        config, model, extras, json = "large", None, (), False
    assert catalog_command(Args()) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == {"speech_encoder": 589_824, "text_encoder": 368_640,
                                "text_decoder": 491_520, "total": 1_449_984}
