"""Speech recording equals what transformers computes for each utterance alone.

The oracle is transformers' own ``generate`` on one utterance with the feature extractor's
defaults (``pad_to_multiple_of=2``: an odd filterbank frame count gives one masked feature frame),
hooked: encoder components pooled over the positions a lone run treats as valid, decoder
components at every KV-cache step, cross-attention k/v pooled over the mask generate itself gave
the decoder. The recorder must reproduce it for odd and even frame counts, alone and batched with
utterances of other lengths, on the tiny fixture and on a second, differently shaped random config.
Also: the speech encoder's attention implementation is pinned and checked against a hand computation.
"""
import math

import numpy as np
import pytest
import torch

from engine.errors import UserError
from engine.model.catalog import build_catalog
from engine.model.hooks import hooked
from engine.model.loader import TINY_MODEL_DIR, check_attention, load_model
from engine.model.recorder import ModelInput, record_batches
from tests.helpers import assert_close_to_oracle, component_groups, second_model

STEPS = tuple(range(1, 12))
N_NEW = max(STEPS)
# (samples -> valid feature frames L, lone width W): the masked frame at L falls inside the
# adapter's last valid window (stride 8, padding 4) when L % 8 < 4
ODD_IN_WINDOW = [13300, 11000, 13900]  # L = 40, 33, 42; W = L + 1
ODD_OUTSIDE = [12960]  # L = 39, W = 40: the masked frame only feeds a masked adapter output
EVEN = [16000, 9600, 20100]  # L = W = 49, 29, 62
ALL = ODD_IN_WINDOW + ODD_OUTSIDE + EVEN
LANGS = ["deu", "jpn", "spa", "fra", "cmn", "eng"]


def wave(n, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * (150 + 37 * seed) * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


def speech_items(lengths, tgt="eng"):
    return [ModelInput(f"s{i}-{n}", LANGS[i % 6], "speech", tgt, waveform=wave(n, i)) for i, n in enumerate(lengths)]


def _pool(x, axis, n):
    """Mean over the first ``n`` positions of one example's output (batch index 0)."""
    x = x[0].transpose(0, 1) if axis == 1 else x[0]
    return x[:n].double().mean(0)


def lone_truth(lm, catalog, item, n_new=N_NEW):
    """transformers' own generate on ``item`` alone, feature extractor defaults, hooked.

    Returns (encoder [n_enc], decoder {step: [n_dec]}, output tokens after the language tag).
    Valid positions of a lone utterance: conformer rate, the frames its feature mask marks (the
    masked pad frame excluded); adapter rate, the first min(sub-sampled length, width) outputs, the
    keys the adapter's attention is given; cross-attention k/v, the positions generate's
    ``encoder_attention_mask`` marks.
    """
    model = lm.model
    feats = lm.feature_extractor([item.waveform], sampling_rate=16000, return_tensors="pt")
    mask = feats["attention_mask"]
    enc_seen, dec_seen, cross = {}, {}, []
    hooks = {}
    for comp in catalog.stack("speech_encoder"):
        hooks[comp.path] = lambda m, i, o, p=comp.path: enc_seen.setdefault(p, []).append(o.detach().clone())
    for comp in catalog.stack("text_decoder"):
        hooks[comp.path] = lambda m, i, o, p=comp.path: dec_seen.setdefault(p, []).append(o.detach().clone())
    handle = model.text_decoder.register_forward_pre_hook(
        lambda m, a, kw: cross.append(kw["encoder_attention_mask"].clone()), with_kwargs=True)
    try:
        with hooked(model, hooks), torch.no_grad():
            out = model.generate(input_features=feats["input_features"].to(lm.dtype), attention_mask=mask,
                                 tgt_lang=item.tgt_lang, generate_speech=False, max_new_tokens=n_new,
                                 do_sample=False, num_beams=1)
    finally:
        handle.remove()
    n_frames = int(mask.sum())
    n_sub = int(model._compute_sub_sample_lengths_from_attention_mask(mask)[0])  # transformers' own formula
    enc = []
    for comp in catalog.stack("speech_encoder"):
        (x,) = enc_seen[comp.path]  # the encoder runs once
        width = x.shape[2] if comp.channel_axis == 1 else x.shape[1]
        n = min(n_sub, width) if comp.position == "adapter_pooled" else n_frames
        enc.append(_pool(x, comp.channel_axis, n))
    cross_n = int(cross[0][0].sum())
    assert cross[0][0, :cross_n].all()  # a prefix mask
    cols = []
    n_pos = None
    for comp in catalog.stack("text_decoder"):
        calls = dec_seen[comp.path]
        if comp.position == "step_invariant":
            assert len(calls) == 1
            cols.append(("inv", _pool(calls[0], comp.channel_axis, cross_n)))
        else:
            assert calls[0].shape[1] == 2 and all(x.shape[1] == 1 for x in calls[1:])  # KV cache in use
            per_pos = torch.cat(calls, dim=1)[0].double()
            n_pos = per_pos.shape[0]
            cols.append(("pos", per_pos))
    dec = torch.cat([c if kind == "pos" else c[None].expand(n_pos, -1) for kind, c in cols], dim=1).numpy()
    seq = out.sequences[0].tolist()
    assert seq[:2] == [model.generation_config.decoder_start_token_id, lm.lang_token_id(item.tgt_lang)]
    tokens = []
    for tok in seq[2:]:
        if tok == lm.tokenizer.eos_token_id:
            break
        tokens.append(tok)
    return torch.cat(enc).numpy(), {t: dec[t] for t in range(n_pos)}, tokens


def assert_equal_to_lone(lm, catalog, items, batch_size):
    """Every recorded value equals transformers' lone run of its example (encoder, and decoder at
    every step the lone run has) up to summation order (tests/helpers.py), tokens identical."""
    recs = list(record_batches(lm, catalog, items, steps=STEPS, batch_size=batch_size))
    rows = [(rec, k) for rec in recs for k in range(len(rec.example_ids))]
    enc_groups, dec_groups = component_groups(catalog, "speech_encoder"), component_groups(catalog, "text_decoder")
    for item, (rec, k) in zip(items, rows):
        assert rec.example_ids[k] == item.example_id
        enc, dec, tokens = lone_truth(lm, catalog, item)
        assert rec.output_ids[k] == tokens[:len(rec.output_ids[k])], item.example_id
        assert_close_to_oracle(rec.encoder[k], enc, groups=enc_groups, what=f"{item.example_id} encoder")
        for t in STEPS:
            if t - 1 <= len(tokens):  # the step exists in the lone run
                assert rec.valid[t][k]
                assert_close_to_oracle(rec.decoder[t][k], dec[t], groups=dec_groups, what=f"{item.example_id} t={t}")


@pytest.fixture(scope="module")
def tiny(tiny_lm):
    return tiny_lm, build_catalog(tiny_lm.model, extras=("intermediate_ffn", "adapter"))


@pytest.fixture(scope="module")
def second(tiny_lm):
    lm = second_model(tiny_lm)
    return lm, build_catalog(lm.model, extras=("intermediate_ffn", "adapter"))


def test_fixture_lengths_are_what_the_test_means(tiny):
    lm, _ = tiny
    for n in ALL:
        mask = lm.feature_extractor([wave(n, 0)], sampling_rate=16000, return_tensors="pt")["attention_mask"][0]
        n_valid, width = int(mask.sum()), mask.shape[0]
        assert width == (n_valid + 1 if n in ODD_IN_WINDOW + ODD_OUTSIDE else n_valid)
        if n in ODD_IN_WINDOW:
            assert n_valid % 8 < 4
        if n in ODD_OUTSIDE:
            assert n_valid % 8 >= 4


@pytest.mark.parametrize("n", ALL)
def test_lone_recording_equals_generate_odd_and_even(tiny, n):
    lm, catalog = tiny
    assert_equal_to_lone(lm, catalog, speech_items([n]), batch_size=1)


@pytest.mark.parametrize("order", [ALL, ALL[::-1], [20100, 13300, 9600, 11000]])
def test_batched_recording_equals_lone_generate(tiny, order):
    lm, catalog = tiny
    assert_equal_to_lone(lm, catalog, speech_items(order), batch_size=4)


def test_second_config_generates_long_enough(second):
    lm, catalog = second
    for item in speech_items(ALL[:3]):
        _, _, tokens = lone_truth(lm, catalog, item)
        assert len(tokens) >= 8  # the comparison below covers most steps, not only the first ones


@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_second_config_recording_equals_lone_generate(second, batch_size):
    lm, catalog = second
    assert_equal_to_lone(lm, catalog, speech_items(ALL), batch_size=batch_size)


def hand_attention(attn, hidden, n_valid, chunk_size, left_chunks):
    """The conformer's self-attention written out: scores + relative-key bias, keys masked to the
    example's valid frames and to its attention chunks with -inf, softmax, weighted values.
    Returns (output (B, T, C), rows (B, T) that have a key to attend to; the others are NaN)."""
    B, T, _ = hidden.shape
    H, D = attn.num_heads, attn.head_size
    q, k, v = (lin(hidden).view(B, T, H, D).transpose(1, 2) for lin in (attn.linear_q, attn.linear_k, attn.linear_v))
    scores = q @ k.transpose(2, 3) / math.sqrt(D)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    if attn.position_embeddings_type == "relative_key":
        dist = (j - i).clamp(-attn.left_max_position_embeddings, attn.right_max_position_embeddings)
        emb = attn.distance_embedding(dist + attn.left_max_position_embeddings)  # (T, T, D)
        scores = scores + torch.einsum("bhld,lrd->bhlr", q, emb) / math.sqrt(D)
    allowed = j[None] < n_valid[:, None, None]  # (B, T, T): padded keys are never attended
    if chunk_size is not None:
        chunk = i // chunk_size
        start = (chunk - left_chunks).clamp(min=0) * chunk_size if left_chunks >= 0 else torch.zeros_like(chunk)
        allowed = allowed & (j >= start) & (j < (chunk + 1) * chunk_size)
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    return attn.linear_out(out.transpose(1, 2).reshape(B, T, H * D)), allowed.any(-1)


@pytest.mark.parametrize("which", ["tiny", "second"])
def test_speech_encoder_attention_equals_hand_computation(tiny, second, which):
    lm, _ = tiny if which == "tiny" else second
    model, config = lm.model, lm.model.config
    waves = [wave(n, i) for i, n in enumerate([9600, 20100, 13300])]  # padded batch, one masked pad frame
    feats = lm.feature_extractor(waves, sampling_rate=16000, return_tensors="pt", padding=True)
    n_valid = feats["attention_mask"].sum(1)
    for layer in range(len(model.speech_encoder.encoder.layers)):
        attn = model.speech_encoder.encoder.layers[layer].self_attn
        seen = {}

        def keep_input(module, args, kwargs):
            seen["in"] = (args[0] if args else kwargs["hidden_states"]).clone()

        def keep_output(module, args, output):
            seen["out"] = output[0].clone()

        pre = attn.register_forward_pre_hook(keep_input, with_kwargs=True)
        post = attn.register_forward_hook(keep_output)
        try:
            with torch.no_grad():
                model.speech_encoder(**feats)
                expected, rows = hand_attention(attn, seen["in"], n_valid, config.speech_encoder_chunk_size,
                                          config.speech_encoder_left_chunk_num)
        finally:
            pre.remove()
            post.remove()
        # rows with no key exist only past an utterance's end in a padded batch (chunks there hold
        # no valid frame); every row of a lone run, its masked pad frame included, has one
        lone_width = torch.tensor([lm.feature_extractor([w], sampling_rate=16000)["input_features"][0].shape[0]
                                   for w in waves])
        assert rows[torch.arange(rows.shape[1])[None] < lone_width[:, None]].all()
        assert_close_to_oracle(seen["out"][rows], expected[rows], what="chunked attention")


def test_other_attention_implementations_are_refused(tiny):
    with pytest.raises(UserError, match="attn_implementation 'eager' is not supported"):
        load_model(str(TINY_MODEL_DIR), attn_implementation="eager")
    lm = load_model(str(TINY_MODEL_DIR))  # its own: this test changes its attention
    check_attention(lm.model)  # what the loader pins passes
    lm.model.set_attn_implementation("eager")
    with pytest.raises(UserError, match="'eager' is not supported"):
        check_attention(lm.model)
    _, catalog = tiny
    with pytest.raises(UserError, match="'eager' is not supported"):
        next(record_batches(lm, catalog, speech_items([16000])))


def test_unreproducible_chunk_rows_are_refused_when_batched(tiny_lm):
    """left_chunk_num 0: a masked pad frame starting a chunk attends to nothing; batched, refused."""
    lm = second_model(tiny_lm)
    lm.model.config.speech_encoder_left_chunk_num = 0
    catalog = build_catalog(lm.model)
    # 13300 samples: 40 valid frames + 1 masked; chunk size 9 does not divide 40, 8 does
    lm.model.config.speech_encoder_chunk_size = 8
    items = speech_items([13300, 20100])
    with pytest.raises(UserError, match="s0-13300.*batch_size 1"):
        list(record_batches(lm, catalog, items, steps=(1,), batch_size=2))
    assert_equal_to_lone(lm, catalog, items[:1], batch_size=1)  # alone it is what transformers computes
    lm.model.config.speech_encoder_chunk_size = 9
    list(record_batches(lm, catalog, items, steps=(1,), batch_size=2))  # 40 % 9 != 0: nothing to refuse
