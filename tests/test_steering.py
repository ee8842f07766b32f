"""Median-value intervention on the tiny fixture model (real SeamlessM4Tv2 classes).

The recording test observes each steered module twice in the SAME forward: an observer
registered before ``steer`` sees the module's own output, one registered after sees what the
rest of the network receives (forward hooks run in registration order). So "every other
neuron unchanged" is checked exactly where it is meaningful: the other channels of a steered
component, and the chosen channels at positions outside the steered range. Components
downstream of a steered one legitimately change; components upstream of the first steered
layer are compared with an unsteered run at the first decoder call (identical inputs).
"""
import numpy as np
import pytest
import torch

from engine.errors import UserError
from engine.model import steering
from engine.model.recorder import ModelInput, record_batches
from engine.model.steering import DECODER, control_neurons, generate, median_activations, random_neurons, steer

TEXTS = ["Das Wetter ist heute schön.", "Kinder spielen im Park.", "Ich hätte gern eine Tasse Kaffee."]


def text_inputs(texts=TEXTS, lang="deu"):
    return [ModelInput(example_id=str(i), lang=lang, modality="text", tgt_lang=lang, text=t)
            for i, t in enumerate(texts)]


def _observer(store, path):
    def hook(module, inputs, output):
        store.setdefault(path, []).append(output.detach().clone())
    return hook


def _register(model, paths, store):
    return [model.get_submodule(p).register_forward_hook(_observer(store, p)) for p in paths]


def _chosen(catalog, rng, per_component=3, layers=(0, 1)):
    """A few channels in every decoder component of ``layers`` (incl. cross-attention k/v)."""
    picks = []
    for comp in catalog.stack(DECODER):
        if comp.layer in layers:
            picks.append(comp.offset + rng.choice(comp.dim, size=per_component, replace=False))
    return np.sort(np.concatenate(picks)).astype(np.int64)


def _record_steered(lm, catalog, neurons, values, from_position, inputs):
    model = lm.model
    paths = [c.path for c in catalog.stack(DECODER)]
    before, after = {}, {}
    calls = []
    def count(module, args, kwargs):
        # absolute start told from the call sequence alone (no cache keyword read): a call of
        # two or more positions starts a pass at 0, a one-position call continues the last
        length = kwargs["input_ids"].shape[1]
        start = calls[-1][0] + calls[-1][1] if length == 1 else 0
        calls.append((start, length))

    pre = model.get_submodule(DECODER).register_forward_pre_hook(count, with_kwargs=True)
    handles = _register(model, paths, before)
    try:
        with steer(lm, catalog, neurons, values, from_position=from_position):
            inner = _register(model, paths, after)
            try:
                gens = generate(lm, catalog, inputs, batch_size=len(inputs), max_new_tokens=8)
            finally:
                for h in inner:
                    h.remove()
    finally:
        for h in handles:
            h.remove()
        pre.remove()
    return gens, before, after, calls


@pytest.mark.parametrize("from_position", [None, 3])
def test_recording_shows_medians_exactly_at_chosen_neurons_and_positions(tiny_lm, tiny_catalog, from_position):
    rng = np.random.default_rng(0)
    neurons = _chosen(tiny_catalog, rng)
    values = rng.normal(size=neurons.size).astype(np.float32) * 3.0
    value_of = dict(zip(neurons.tolist(), values.tolist()))
    gens, before, after, calls = _record_steered(tiny_lm, tiny_catalog, neurons, values, from_position, text_inputs())
    # KV-cache decoding: positions 0..1, then one position per call; then the recorder's
    # teacher-forced forward over [start, tag] (no cache)
    assert calls[0] == (0, 2) and calls[-1] == (0, 2)
    assert [c for c in calls[1:-1]] == [(p, 1) for p in range(2, len(calls))]
    assert len(calls) > 3
    n_checked = 0
    for comp in tiny_catalog.stack(DECODER):
        mine = neurons[(neurons >= comp.offset) & (neurons < comp.offset + comp.dim)]
        channels = mine - comp.offset
        others = np.setdiff1d(np.arange(comp.dim), channels)
        expected = torch.tensor([value_of[int(n)] for n in mine])
        raw_calls, seen_calls = before[comp.path], after[comp.path]
        assert len(raw_calls) == len(seen_calls)
        for call, (raw, seen) in enumerate(zip(raw_calls, seen_calls)):
            # other channels of the same component, same forward: untouched
            assert torch.equal(seen[..., others], raw[..., others])
            if comp.position == "step_invariant":
                set_positions = np.arange(seen.shape[1])  # every encoder position, always
            else:
                assert len(calls) == len(seen_calls)
                start = calls[call][0]
                absolute = start + np.arange(seen.shape[1])
                set_positions = np.flatnonzero(absolute >= (from_position or 0))
            keep = np.setdiff1d(np.arange(seen.shape[1]), set_positions)
            sel = seen[:, set_positions][..., channels]
            assert torch.equal(sel, expected.expand_as(sel))
            assert torch.equal(seen[:, keep][..., channels], raw[:, keep][..., channels])
            n_checked += sel.numel()
        if comp.position == "step_invariant":
            # k/v over encoder positions are computed once per forward pass and then cached
            assert len(seen_calls) == sum(start == 0 for start, _ in calls) == 2
    assert n_checked > 0
    if from_position is not None:
        # the first call (positions 0..1) and the one at position 2 kept every neuron's own value
        assert [start for start, _ in calls[:2]] == [0, 2]
        for comp in tiny_catalog.stack(DECODER):
            if comp.position != "step_invariant":
                for call in (0, 1):
                    assert torch.equal(after[comp.path][call], before[comp.path][call])


def test_upstream_of_first_steered_layer_matches_unsteered_run(tiny_lm, tiny_catalog):
    rng = np.random.default_rng(1)
    neurons = _chosen(tiny_catalog, rng, layers=(1,))
    values = np.full(neurons.size, 5.0, dtype=np.float32)
    paths = [c.path for c in tiny_catalog.stack(DECODER)]
    plain = {}
    handles = _register(tiny_lm.model, paths, plain)
    try:
        generate(tiny_lm, tiny_catalog, text_inputs(), batch_size=3, max_new_tokens=8)
    finally:
        for h in handles:
            h.remove()
    _, before, after, _ = _record_steered(tiny_lm, tiny_catalog, neurons, values, None, text_inputs())
    changed_downstream = False
    for comp in tiny_catalog.stack(DECODER):
        if comp.layer == 0:
            assert torch.equal(after[comp.path][0], plain[comp.path][0])
        elif not torch.equal(before[comp.path][0], plain[comp.path][0]):
            changed_downstream = True
    # layer 1's later components read steered earlier ones: they must differ (else the test is void)
    assert changed_downstream


def test_k0_reproduces_unsteered_output_token_for_token(tiny_lm, tiny_catalog):
    inputs = text_inputs()
    plain = generate(tiny_lm, tiny_catalog, inputs, batch_size=2, max_new_tokens=10)
    with steer(tiny_lm, tiny_catalog, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)):
        steered = generate(tiny_lm, tiny_catalog, inputs, batch_size=2, max_new_tokens=10)
    assert [g.output_ids for g in steered] == [g.output_ids for g in plain]
    assert all(len(g.output_ids) == 10 for g in plain)
    ap_row = np.random.default_rng(0).random(tiny_catalog.n_neurons(DECODER))
    assert control_neurons(ap_row, 0).size == 0


def test_strong_steering_changes_output(tiny_lm, tiny_catalog):
    """Guard against a steering that silently does nothing."""
    inputs = text_inputs()
    plain = generate(tiny_lm, tiny_catalog, inputs, batch_size=3, max_new_tokens=10)
    neurons = np.arange(tiny_catalog.n_neurons(DECODER))
    values = np.random.default_rng(3).normal(size=neurons.size).astype(np.float32) * 5
    with steer(tiny_lm, tiny_catalog, neurons, values):
        steered = generate(tiny_lm, tiny_catalog, inputs, batch_size=3, max_new_tokens=10)
    assert [g.output_ids for g in steered] != [g.output_ids for g in plain]


def test_full_sequence_forward_from_position(tiny_lm, tiny_catalog):
    """Without a cache, one call covers positions 0..T-1: only positions >= t are set."""
    comp = next(c for c in tiny_catalog.stack(DECODER) if c.name == "ffn.fc1" and c.layer == 1)
    neurons = np.array([comp.offset + 7], dtype=np.int64)
    enc = tiny_lm.tokenizer(TEXTS[:1], src_lang="deu", return_tensors="pt")
    dec = torch.tensor([[3, tiny_lm.lang_token_id("deu"), 10, 11, 12, 13, 14]])
    seen = {}
    with steer(tiny_lm, tiny_catalog, neurons, np.array([9.5], dtype=np.float32), from_position=4):
        h = _register(tiny_lm.model, [comp.path], seen)
        try:
            with torch.no_grad():
                tiny_lm.model(**enc, decoder_input_ids=dec, use_cache=False)
        finally:
            h[0].remove()
    out = seen[comp.path][0][0, :, 7]
    assert torch.all(out[4:] == 9.5) and not torch.any(out[:4] == 9.5)


def _hook_counts(model):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


def test_hooks_removed_even_on_error(tiny_lm, tiny_catalog):
    baseline = _hook_counts(tiny_lm.model)
    neurons = _chosen(tiny_catalog, np.random.default_rng(2))
    values = np.ones(neurons.size, dtype=np.float32)
    with pytest.raises(RuntimeError, match="boom"):
        with steer(tiny_lm, tiny_catalog, neurons, values, from_position=2):
            assert _hook_counts(tiny_lm.model) != baseline
            raise RuntimeError("boom")
    assert _hook_counts(tiny_lm.model) == baseline


def test_steer_validates_input(tiny_lm, tiny_catalog):
    baseline = _hook_counts(tiny_lm.model)
    n = tiny_catalog.n_neurons(DECODER)
    with pytest.raises(UserError, match="equal length"):
        with steer(tiny_lm, tiny_catalog, np.array([1, 2]), np.array([1.0])):
            pass
    with pytest.raises(UserError, match="range|lie in"):
        with steer(tiny_lm, tiny_catalog, np.array([n]), np.array([1.0])):
            pass
    with pytest.raises(UserError, match="distinct"):
        with steer(tiny_lm, tiny_catalog, np.array([1, 1]), np.array([1.0, 1.0])):
            pass
    with pytest.raises(UserError, match="finite"):
        with steer(tiny_lm, tiny_catalog, np.array([1]), np.array([np.nan])):
            pass
    with pytest.raises(UserError, match="from_position"):
        with steer(tiny_lm, tiny_catalog, np.array([1]), np.array([1.0]), from_position=-1):
            pass
    assert _hook_counts(tiny_lm.model) == baseline


def test_control_neurons_is_top_union_bottom():
    rng = np.random.default_rng(0)
    ap = np.round(rng.random(500), 2)  # many ties
    got = control_neurons(ap, 20)
    order = sorted(range(ap.size), key=lambda i: (-ap[i], i))  # obvious top-k, ties -> low index
    rev = sorted(range(ap.size), key=lambda i: (ap[i], i))
    assert got.tolist() == sorted(set(order[:20]) | set(rev[:20]))
    assert got.dtype == np.int64 and got.size == 40
    assert control_neurons(ap[:30], 20).tolist() == list(range(30))  # 2k > n: every neuron
    with pytest.raises(UserError):
        control_neurons(ap, -1)


def test_random_neurons_seeded_uniform_without_replacement():
    a = random_neurons(1000, 50, [0, 2, 6])
    assert a.tolist() == random_neurons(1000, 50, [0, 2, 6]).tolist()
    assert a.tolist() != random_neurons(1000, 50, [0, 2, 11]).tolist()
    assert np.unique(a).size == 50 and a.min() >= 0 and a.max() < 1000 and np.all(np.diff(a) > 0)
    with pytest.raises(UserError):
        random_neurons(10, 11, 0)
    # uniform: every neuron drawn about equally often over many seeds
    counts = np.bincount(np.concatenate([random_neurons(20, 5, s) for s in range(2000)]), minlength=20)
    assert counts.min() > 400 and counts.max() < 600  # expectation 500


def test_median_activations_oracle():
    rng = np.random.default_rng(0)
    act = rng.normal(size=(13, 37)).astype(np.float32)
    act[2] = np.nan  # an example whose output ended before the step
    act[:, 5] = np.nan  # a neuron with no valid value
    langs = ["deu", "fra", "deu", "jpn", "deu", "fra", "deu", "jpn", "jpn", "deu", "fra", "deu", "cmn"]
    on, off = median_activations(act, langs, "deu", chunk_cols=8)
    for j in range(37):
        col_on = [act[i, j] for i in range(13) if langs[i] == "deu" and not np.isnan(act[i, j])]
        col_off = [act[i, j] for i in range(13) if langs[i] != "deu" and not np.isnan(act[i, j])]
        if j == 5:
            assert np.isnan(on[j]) and np.isnan(off[j])
        else:
            assert on[j] == pytest.approx(float(np.median(col_on)))
            assert off[j] == pytest.approx(float(np.median(col_off)))
    with pytest.raises(UserError, match="spa"):
        median_activations(act, langs, "spa")


def test_recorder_sees_medians_while_steering(tiny_lm, tiny_catalog):
    """A recording (engine.model.recorder) taken inside steer() shows the medians at the chosen
    neurons at every step, pooled cross-attention k/v included, and not elsewhere by chance."""
    rng = np.random.default_rng(5)
    neurons = _chosen(tiny_catalog, rng, per_component=2)
    values = (rng.normal(size=neurons.size) * 4 + 10).astype(np.float32)  # far from normal values
    inputs = text_inputs()
    with steer(tiny_lm, tiny_catalog, neurons, values):
        (rec,) = list(record_batches(tiny_lm, tiny_catalog, inputs, steps=(1, 6, 11), batch_size=3,
                                     max_new_tokens=11))
    (plain,) = list(record_batches(tiny_lm, tiny_catalog, inputs, steps=(1, 6, 11), batch_size=3, max_new_tokens=11))
    for t in (1, 6, 11):
        assert rec.valid[t].all()
        np.testing.assert_allclose(rec.decoder[t][:, neurons], np.broadcast_to(values, (3, neurons.size)),
                                   rtol=1e-5, atol=1e-5)
        assert not np.allclose(plain.decoder[t][:, neurons], values, atol=1e-3)


@pytest.mark.parametrize("keyword", ["past_key_values", "cache"])
def test_decoder_position_read_from_cache_whatever_its_keyword(keyword):
    # transformers <= 5.23 passes the decoder's cache as past_key_values=, 5.24 as cache=
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    cache.self_attention_cache.update(torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5, 4), 0)
    state = steering._CallPositions()
    hook = steering._decoder_call_positions(state)
    hook(None, (), {"input_ids": torch.zeros(1, 1, dtype=torch.long), keyword: cache, "use_cache": True})
    assert (state.start, state.length) == (5, 1)
    hook(None, (), {"input_ids": torch.zeros(1, 4, dtype=torch.long), keyword: None, "use_cache": False})
    assert (state.start, state.length) == (0, 4)


def test_decoder_position_fails_loudly_when_it_cannot_be_told():
    state = steering._CallPositions()
    hook = steering._decoder_call_positions(state)
    hook(None, (), {"input_ids": torch.zeros(1, 2, dtype=torch.long)})
    # an incremental call whose cache is hidden somewhere the hook does not know
    with pytest.raises(UserError, match="cannot tell the absolute decoder position"):
        hook(None, (), {"input_ids": torch.zeros(1, 1, dtype=torch.long)})
    with pytest.raises(UserError, match="cache of unknown type in 'kv_cache'"):
        hook(None, (), {"input_ids": torch.zeros(1, 1, dtype=torch.long), "kv_cache": ((1, 2),)})
