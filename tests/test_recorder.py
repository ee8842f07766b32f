"""Recorder on the tiny model: equality with incremental KV-cache generate, batch invariance,
hook coverage, padding exclusion, exclusion of short outputs."""
import numpy as np
import pytest
import torch

import engine.model.recorder as recorder_mod
from engine.model.catalog import build_catalog
from engine.model.loader import TINY_MODEL_DIR, load_model
from engine.model.recorder import ModelInput, excluded_counts, masked_mean, record_batches
from tests.helpers import assert_close_to_oracle, component_groups

ALL_STEPS = tuple(range(1, 12))
TEXTS = [("deu", "Das Wetter ist heute schön, und wir gehen in den Park."), ("cmn", "今天天气很好。"),
         ("fra", "Il fait beau."), ("jpn", "子供たちは公園で遊んでいます。"), ("spa", "Hoy hace buen tiempo.")]
# sample counts giving an even number of fbank frames (1 + (n - 400) // 160), so one example alone
# has no masked pad frame and every encoder position is valid (the simple oracle below); odd
# counts, whose lone run has a masked pad frame, are compared in tests/test_speech_fidelity.py
EVEN = [16000, 9600, 12800]


def wave(n, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * (180 + 40 * seed) * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


def text_inputs(tgt=None):
    return [ModelInput(f"t{i}/{lang}", lang, "text", tgt or "eng", text=text) for i, (lang, text) in enumerate(TEXTS)]


def speech_inputs(lengths, tgt=None):
    langs = ["deu", "jpn", "spa", "fra", "cmn"]
    return [ModelInput(f"s{i}", langs[i % 5], "speech", tgt or langs[i % 5], waveform=wave(n, i))
            for i, n in enumerate(lengths)]


def model_kwargs(lm, item):
    if item.modality == "text":
        enc = lm.tokenizer(item.text, src_lang=item.lang, return_tensors="pt")
        return dict(enc)
    feats = lm.feature_extractor([item.waveform], sampling_rate=16000, return_tensors="pt")
    assert int(feats["attention_mask"].sum()) == feats["attention_mask"].shape[1]
    return {"input_features": feats["input_features"], "attention_mask": feats["attention_mask"]}


def incremental_activity(lm, catalog, item, n_new):
    """Hooks during transformers' KV-cache generate: decoder [positions, neurons], k/v pooled, tokens."""
    seen = {c.path: [] for c in catalog.stack("text_decoder")}
    hooks = {path: (lambda m, i, o, path=path: seen[path].append(o.detach().clone())) for path in seen}
    with recorder_mod.hooked(lm.model, hooks):
        out = lm.model.generate(**model_kwargs(lm, item), tgt_lang=item.tgt_lang, generate_speech=False,
                                max_new_tokens=n_new, do_sample=False, num_beams=1)
    cols = []
    for comp in catalog.stack("text_decoder"):
        calls = seen[comp.path]
        if comp.position == "step_invariant":
            assert len(calls) == 1  # computed once over encoder positions, then cached
            per_pos = calls[0][0].mean(0, keepdim=True)  # single example: every position is valid
            n_pos = sum(x.shape[1] for x in seen[catalog.stack("text_decoder")[0].path])
            cols.append(per_pos.expand(n_pos, -1))
        else:
            assert calls[0].shape[1] == 2 and all(x.shape[1] == 1 for x in calls[1:])  # KV cache in use
            cols.append(torch.cat(calls, dim=1)[0])
    return torch.cat(cols, dim=1).numpy(), out.sequences[0].tolist()


@pytest.mark.parametrize("modality", ["text", "speech"])
def test_recording_equals_incremental_generate(tiny_lm, tiny_catalog, modality):
    items = text_inputs()[:3] if modality == "text" else speech_inputs(EVEN)
    for item in items:
        (rec,) = record_batches(tiny_lm, tiny_catalog, [item], steps=ALL_STEPS, batch_size=1)
        expected, sequence = incremental_activity(tiny_lm, tiny_catalog, item, n_new=max(ALL_STEPS))
        # greedy prefix equals transformers' own generate token for token
        assert rec.output_ids[0] == [t for t in sequence[2:] if t != tiny_lm.tokenizer.eos_token_id][:len(rec.output_ids[0])]
        assert sequence[:2] == [tiny_lm.model.generation_config.decoder_start_token_id, tiny_lm.lang_token_id(item.tgt_lang)]
        for t in ALL_STEPS:
            assert rec.valid[t][0]
            assert_close_to_oracle(rec.decoder[t][0], expected[t], groups=component_groups(tiny_catalog, "text_decoder"),
                                   what=f"{item.example_id} t={t}")


def test_oracle_tolerance_catches_a_step_off_by_one(tiny_lm, tiny_catalog):
    # the summation-order bound is ~1e-4 of each component's scale: the next position's values,
    # what an off-by-one step would record, are far outside it
    expected, _ = incremental_activity(tiny_lm, tiny_catalog, text_inputs()[0], n_new=3)
    with pytest.raises(AssertionError, match="beyond 256 eps"):
        assert_close_to_oracle(expected[2], expected[1], groups=component_groups(tiny_catalog, "text_decoder"))


def test_greedy_prefix_equals_generate_batched_text(tiny_lm, tiny_catalog):
    items = text_inputs()
    (rec,) = record_batches(tiny_lm, tiny_catalog, items, steps=(1, 6), batch_size=8, max_new_tokens=9)
    for item, got in zip(items, rec.output_ids):
        seq = tiny_lm.model.generate(**model_kwargs(tiny_lm, item), tgt_lang="eng", generate_speech=False,
                                max_new_tokens=9, do_sample=False, num_beams=1).sequences[0].tolist()
        assert got == seq[2:2 + len(got)] and len(got) == 9
    assert len({tuple(o) for o in rec.output_ids}) > 1  # outputs depend on the input


def assert_records_equal(batched, singles, catalog, encoder_stack):
    rows = [r for s in singles for r in range(len(s.example_ids))]
    assert len(rows) == len(batched.example_ids)
    enc_groups, dec_groups = component_groups(catalog, encoder_stack), component_groups(catalog, "text_decoder")
    for k, single in enumerate(singles):
        assert single.example_ids[0] == batched.example_ids[k]
        assert single.output_ids[0] == batched.output_ids[k]
        assert_close_to_oracle(batched.encoder[k], single.encoder[0], groups=enc_groups, what=f"encoder row {k}")
        for t in batched.decoder:
            assert batched.valid[t][k] == single.valid[t][0]
            if single.valid[t][0]:
                assert_close_to_oracle(batched.decoder[t][k], single.decoder[t][0], groups=dec_groups,
                                       what=f"decoder row {k} t={t}")


@pytest.mark.parametrize("modality", ["text", "speech"])
def test_batched_equals_one_at_a_time(tiny_lm, tiny_catalog, modality):
    # mixed lengths, so every batch is padded; odd frame counts too for speech
    items = text_inputs() if modality == "text" else speech_inputs([16000, 7000, 12960, 20100])
    (batched,) = record_batches(tiny_lm, tiny_catalog, items, batch_size=len(items))
    singles = list(record_batches(tiny_lm, tiny_catalog, items, batch_size=1))
    assert_records_equal(batched, singles, tiny_catalog, "speech_encoder" if modality == "speech" else "text_encoder")


def test_hook_coverage_and_unused_activation_fn(tiny_lm, tiny_catalog, monkeypatch):
    extras = build_catalog(tiny_lm.model, extras=("ffn.act", "intermediate_ffn", "adapter"))
    hooked_paths = []
    real_hooked = recorder_mod.hooked

    def spy(model, hooks, *args, **kwargs):
        hooked_paths.append(set(hooks))
        return real_hooked(model, hooks, *args, **kwargs)

    monkeypatch.setattr(recorder_mod, "hooked", spy)
    unused_calls = []
    handles = [layer.activation_fn.register_forward_hook(lambda *a: unused_calls.append(1))
               for layer in tiny_lm.model.text_decoder.layers if isinstance(layer.activation_fn, torch.nn.Module)]
    try:
        recs = list(record_batches(tiny_lm, extras, text_inputs()[:2] + speech_inputs([16000, 9000]), batch_size=4))
    finally:
        for h in handles:
            h.remove()
    assert not unused_calls  # the decoder's activation_fn is never called by forward
    adapter_zeroing = {p for p in set().union(*hooked_paths) if p.endswith("_layer_norm") and ".adapter." in p}
    assert set().union(*hooked_paths) - adapter_zeroing == {c.path for c in extras.components}
    for rec in recs:  # buffers start as NaN: a component that never fired would leave NaN columns
        assert not np.isnan(rec.encoder).any()
        for t in rec.decoder:
            assert not np.isnan(rec.decoder[t][rec.valid[t]]).any()
    # the real FFN activation is ffn.act: it equals ReLU of fc1 position by position
    dec = {c.path: c for c in extras.stack("text_decoder")}
    for rec in recs:
        for t, block in rec.decoder.items():
            for layer in range(len(tiny_lm.model.text_decoder.layers)):
                fc1, act = dec[f"text_decoder.layers.{layer}.ffn.fc1"], dec[f"text_decoder.layers.{layer}.ffn.act"]
                np.testing.assert_allclose(block[:, act.offset:act.offset + act.dim],
                                           np.maximum(block[:, fc1.offset:fc1.offset + fc1.dim], 0), atol=1e-6)


def test_channel_axes_and_dims_match_module_outputs(tiny_lm, tiny_catalog):
    shapes = {}
    hooks = {c.path: (lambda m, i, o, p=c.path: shapes.setdefault(p, tuple(o.shape)) and None)
             for c in tiny_catalog.components}
    feats = tiny_lm.feature_extractor([wave(16000, 0)], sampling_rate=16000, return_tensors="pt")
    ids = tiny_lm.tokenizer("Hallo Welt", src_lang="deu", return_tensors="pt")
    with recorder_mod.hooked(tiny_lm.model, hooks), torch.no_grad():
        tiny_lm.model(**feats, decoder_input_ids=torch.tensor([[3, 700, 5, 6, 7]]))
        tiny_lm.model(**ids, decoder_input_ids=torch.tensor([[3, 700, 5]]))
    for c in tiny_catalog.components:
        assert shapes[c.path][c.channel_axis] == c.dim, c.path
        if c.channel_axis == 1:
            assert shapes[c.path][2] != c.dim


def test_pooling_ignores_planted_padding_values():
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.standard_normal((3, 7, 5)), dtype=torch.float32)
    lengths = torch.tensor([7, 3, 1])
    mask = (torch.arange(7)[None] < lengths[:, None]).float()
    planted = x.clone()
    planted[mask == 0] = 1e6
    expected = torch.stack([x[b, :n].mean(0) for b, n in enumerate(lengths.tolist())])  # slow oracle
    assert_close_to_oracle(masked_mean(planted, -1, mask), expected, what="pooled (B, T, C)")
    assert_close_to_oracle(masked_mean(planted.transpose(1, 2), 1, mask), expected, what="pooled (B, C, T)")


def test_speech_padding_frames_do_not_change_encoder_record(tiny_lm, tiny_catalog, monkeypatch):
    items = speech_inputs([16000, 9600])
    (clean,) = record_batches(tiny_lm, tiny_catalog, items, batch_size=2)
    real = tiny_lm.feature_extractor.__class__.__call__

    def plant(self, *args, **kwargs):  # huge values in padded feature frames
        out = real(self, *args, **kwargs)
        out["input_features"][out["attention_mask"] == 0] = 1e4
        return out

    monkeypatch.setattr(tiny_lm.feature_extractor.__class__, "__call__", plant)
    (dirty,) = record_batches(tiny_lm, tiny_catalog, items, batch_size=2)
    assert_close_to_oracle(dirty.encoder, clean.encoder, groups=component_groups(tiny_catalog, "speech_encoder"),
                           what="encoder")
    for t in clean.decoder:
        assert_close_to_oracle(dirty.decoder[t], clean.decoder[t], groups=component_groups(tiny_catalog, "text_decoder"),
                               what=f"decoder t={t}")


def test_short_outputs_are_excluded_and_counted(tiny_lm, tiny_catalog):
    items = text_inputs(tgt="deu")[:3]
    items[0].reference, items[1].reference, items[2].reference = "a", "Das Wetter ist heute schön und warm", "b c d e"
    recs = list(record_batches(tiny_lm, tiny_catalog, items, prefix="gold", batch_size=2))
    lens = [len(o) for r in recs for o in r.output_ids]
    valid = {t: np.concatenate([r.valid[t] for r in recs]) for t in (1, 6, 11)}
    for t in (1, 6, 11):
        assert valid[t].tolist() == [n >= t - 1 for n in lens]
        for r in recs:
            assert np.isnan(r.decoder[t][~r.valid[t]]).all() and not np.isnan(r.decoder[t][r.valid[t]]).any()
    counts = excluded_counts(recs)
    assert counts["TR"][1] == {"deu": 0} and counts["T2T"][1] == {"cmn": 0, "fra": 0}  # deu->deu is TR
    assert counts["TR"][6] == {"deu": 1}  # the one-token reference ends before step 6
    assert sum(sum(counts[task][11].values()) for task in counts) == int((~valid[11]).sum()) > 0
    # greedy decoding cut short by max_new_tokens is excluded the same way
    (rec,) = record_batches(tiny_lm, tiny_catalog, items, batch_size=3, max_new_tokens=4)
    assert rec.valid[6].tolist() == [False] * 3 and rec.valid[1].all()
    assert rec.tasks == ["TR", "T2T", "T2T"]


def test_bad_arguments_are_user_errors(tiny_lm, tiny_catalog):
    from engine.errors import UserError

    with pytest.raises(UserError):
        list(record_batches(tiny_lm, tiny_catalog, text_inputs(), steps=(0, 6)))
    with pytest.raises(UserError):
        list(record_batches(tiny_lm, tiny_catalog, text_inputs(), prefix="beam"))
    with pytest.raises(UserError):
        list(record_batches(tiny_lm, tiny_catalog, text_inputs(), prefix="gold"))  # no references


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, atol", [("float32", 1e-4), ("bfloat16", 0.1)])
def test_cuda_recording_matches_cpu(tiny_lm, tiny_catalog, dtype, atol):
    """The paper runs on a GPU: same tokens and (within the dtype's precision) same activity."""
    cpu = tiny_lm
    gpu = load_model(str(TINY_MODEL_DIR), device="cuda", dtype=dtype)
    items = text_inputs() + speech_inputs([16000, 23000])
    ref = list(record_batches(cpu, tiny_catalog, items, batch_size=4))
    got = list(record_batches(gpu, tiny_catalog, items, batch_size=4))
    for a, b in zip(ref, got):
        if dtype == "float32":
            assert a.output_ids == b.output_ids
        np.testing.assert_allclose(b.encoder, a.encoder, atol=atol, rtol=0.05)
        # in bf16 greedy tokens may differ, and with them every later prefix: compare step 1 only
        for t in (a.decoder if dtype == "float32" else [1]):
            both = a.valid[t] & b.valid[t]
            np.testing.assert_allclose(b.decoder[t][both], a.decoder[t][both], atol=atol, rtol=0.05)
