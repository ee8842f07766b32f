"""The authors' module set as a catalog (``build_catalog(..., modules="all_hooked")``), checked against
an independent re-statement of their selection and recorded at the right rate.

Their code (konta3738/generation-step-aware-framework): ``selfcond/models.py``
``TorchModel._compute_response_infos`` hooks every module but the root and containers, runs
``_perform_dummy_inference`` (family "seamlessm4t": the text encoder, the speech encoder and the
decoder, batch 1, in that order) and keeps every tensor output; ``_collect_responses_info_for_model``
keeps those whose module's class name is exactly Linear, Conv1d, LayerNorm, Embedding or GLU, whose
shape after the batch has 2 or 3 dims, under ``text_encoder.``, ``speech_encoder.`` or
``text_decoder.``; ``selfcond/responses.py`` ``read_responses_from_cached`` skips names holding
``self_attn.distance_embedding`` or ``feature_projection``. Re-stated here on real forwards, at two
sizes: the axis whose size follows the input's length is time, the other holds the channels.

Models: the tiny v2 fixture, a differently shaped random v2 (two adapter layers, kernel 6 > stride
3; tests/helpers.second_model) and a tiny random v1 (relative-position conformer: its
``self_attn.linear_pos`` is in the set, pooled over relative positions).
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import re

import numpy as np
import pytest
import torch
from transformers import SeamlessM4TConfig, SeamlessM4Tv2Config

from engine.errors import UserError
from engine.model.catalog import GROUPS, Catalog, build_catalog, config_for
from engine.model.loader import LoadedModel
from engine.model.recorder import ModelInput, RecordOptions, record_batches
from engine.science.distribution import distribution
from tests.helpers import REPO, assert_close_to_oracle, component_groups, second_model

STACKS = ("text_encoder.", "speech_encoder.", "text_decoder.")
KINDS = ["Linear", "Conv1d", "LayerNorm", "Embedding", "GLU"]
SKIP = {"self_attn.distance_embedding", "feature_projection"}
STEPS = (1, 2, 6)


def tiny_v1(tiny_lm) -> LoadedModel:
    """A seeded random SeamlessM4T v1 of the tiny v2 fixture's sizes (fixtures/build_tiny_v1_model.py's
    config), with the fixture's tokenizer, feature extractor and generation config."""
    from transformers import SeamlessM4TModel

    spec = importlib.util.spec_from_file_location("build_tiny_v1_model", REPO / "fixtures" / "build_tiny_v1_model.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    config = builder.tiny_v1_config()
    config._attn_implementation = "sdpa"  # what engine.model.loader pins
    torch.manual_seed(0)
    model = SeamlessM4TModel(config).eval()
    model.generation_config = tiny_lm.model.generation_config
    return LoadedModel(model=model, tokenizer=tiny_lm.tokenizer, feature_extractor=tiny_lm.feature_extractor,
                       model_id="random-tiny-v1", revision=None, device=torch.device("cpu"), dtype=torch.float32)


@pytest.fixture(scope="module", params=["tiny", "second", "v1"])
def model(request, tiny_lm):
    lm = {"tiny": lambda: tiny_lm, "second": lambda: second_model(tiny_lm), "v1": lambda: tiny_v1(tiny_lm)}[
        request.param]()
    return request.param, lm, build_catalog(lm.model, modules="all_hooked")


# ------------------------------------------------------------------------------------------------
# the selection
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def authors_responses(model, seq_len: int, frames: int, enc_len: int, dec_len: int) -> list[tuple[str, str, tuple]]:
    """``(module name, class name, shape after the batch)`` of every tensor output of one dummy
    inference as theirs runs it (``_compute_response_infos`` / ``_perform_dummy_inference``)."""
    infos = []

    def hook(name, module, inputs, output):
        kind = str(module.__class__).split(".")[-1].split("'")[0]
        for o in output if isinstance(output, (list, tuple)) else [output]:
            if o is not None and type(o) is torch.Tensor:
                infos.append((name, kind, tuple(o.size())[1:]))

    handles = [m.register_forward_hook(lambda mod, i, o, n=n: hook(n, mod, i, o))
               for n, m in model.named_modules()
               if not isinstance(m, (torch.nn.Sequential, torch.nn.ModuleList)) and m is not model]
    cfg = model.config
    g = torch.Generator().manual_seed(seq_len)
    try:
        model.text_encoder(input_ids=torch.randint(0, cfg.vocab_size, (1, seq_len), generator=g),
                           attention_mask=torch.ones(1, seq_len, dtype=torch.long))
        model.speech_encoder(input_features=torch.randn(1, frames, cfg.feature_projection_input_dim, generator=g),
                             attention_mask=torch.ones(1, frames, dtype=torch.long))
        model.text_decoder(input_ids=torch.full((1, dec_len), cfg.decoder_start_token_id),
                           attention_mask=torch.ones(1, dec_len, dtype=torch.long),
                           encoder_hidden_states=torch.randn(1, enc_len, cfg.hidden_size, generator=g),
                           encoder_attention_mask=torch.ones(1, enc_len, dtype=torch.long), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return infos


def authors_selection(model) -> dict[str, tuple[int, int]]:
    """Their rule on two dummy inferences of different lengths: ``{module path: (channels, channel
    axis)}``; the channel axis is the one whose size did not change with the lengths (1 for
    ``[B, C, T]``, -1 for ``[B, T, C]``)."""
    runs = [authors_responses(model, 7, 40, 8, 3), authors_responses(model, 11, 64, 13, 5)]
    picked = []
    for infos in runs:
        kept = {}
        for name, kind, shape in infos:
            if (kind in KINDS and len(shape) in [2, 3] and name.startswith(STACKS)
                    and not any(s in f"{name}:0" for s in SKIP)):
                kept.setdefault(name, set()).add(shape)
        picked.append(kept)
    assert picked[0].keys() == picked[1].keys()
    out = {}
    for name in picked[0]:
        (a,), (b,) = picked[0][name], picked[1][name]  # a module called twice gives one shape
        assert len(a) == 2, (name, a)
        same = [k for k in range(2) if a[k] == b[k]]
        assert len(same) == 1, (name, a, b)  # exactly one axis follows the lengths
        out[name] = (a[same[0]], 1 if same[0] == 0 else -1)
    return out


def test_the_catalog_is_the_authors_selection(model):
    name, lm, catalog = model
    assert {c.path: (c.dim, c.channel_axis) for c in catalog.components} == authors_selection(lm.model)
    # grouped into the three stacks, named_modules order inside each; offsets contiguous per stack
    order = [n for n, _ in lm.model.named_modules() if n in {c.path for c in catalog.components}]
    assert [c.path for c in catalog.components] == [p for s in GROUPS for p in order if p.startswith(s + ".")]
    for stack in GROUPS:
        comps = catalog.stack(stack)
        assert [c.offset for c in comps] == list(np.cumsum([0] + [c.dim for c in comps[:-1]]))
    # the word embeddings are ScaledWordEmbedding, not Embedding: not in the set
    assert not any("embed_tokens" in c.path or "distance_embedding" in c.path for c in catalog.components)
    # layer: the number of the layer it sits in, -1 outside a numbered conformer / transformer layer
    for c in catalog.components:
        m = re.match(r"(speech_encoder\.encoder|text_encoder|text_decoder)\.layers\.(\d+)\.(.+)", c.path)
        assert (c.layer, c.name) == ((int(m[2]), m[3]) if m else (-1, c.path.split(".", 1)[1])), c.path
    # the paper's table is inside it, each component as the paper-table catalog has it
    paper = build_catalog(lm.model)
    hooked = {c.path: dataclasses.replace(c, offset=0) for c in catalog.components}
    missing = [c.path for c in paper.components if c.name != "conv_module.batch_norm"
               and hooked.get(c.path) != dataclasses.replace(c, offset=0)]
    assert not missing, missing
    if name == "v1":  # BatchNorm1d is not one of their classes; the relative-position projection is
        assert not any(c.name == "conv_module.batch_norm" for c in catalog.components)
        assert {c.position for c in catalog.components if c.name == "self_attn.linear_pos"} == {"relative_pooled"}
    if name == "second":
        assert {c.name.split(".")[2] for c in catalog.components if c.name.startswith("adapter.")} == {"0", "1"}


def test_positions_follow_where_each_module_runs(model):
    _, _, catalog = model
    for c in catalog.components:
        if c.stack == "text_decoder":
            kv = c.name in ("cross_attention.k_proj", "cross_attention.v_proj")
            want = "step_invariant" if kv else "decoder_step"
        elif c.name.startswith("adapter."):
            before = c.name.endswith(("residual_layer_norm", "self_attn_layer_norm"))
            want = "adapter_in_pooled" if before else "adapter_pooled"
        elif c.name == "inner_layer_norm":
            want = "final_pooled"
        elif c.name == "self_attn.linear_pos":
            want = "relative_pooled"
        else:
            want = "encoder_pooled"
        assert c.position == want, c.path


def test_the_large_model_counts(capsys):
    paper = build_catalog(SeamlessM4Tv2Config())
    hooked = build_catalog(SeamlessM4Tv2Config(), modules="all_hooked")
    extra = {g: hooked.n_neurons(g) - paper.n_neurons(g) for g in GROUPS}
    table = {c.path for c in paper.components}
    where: dict[str, int] = {}
    for c in hooked.components:
        if c.path not in table:
            key = c.stack + ":" + (c.name.split(".")[0] if c.layer < 0 and c.name != "encoder.layer_norm" else c.name)
            where[key] = where.get(key, 0) + c.dim
    v1_paper, v1_hooked = build_catalog(SeamlessM4TConfig()), build_catalog(SeamlessM4TConfig(), modules="all_hooked")
    v1_extra = {g: v1_hooked.n_neurons(g) - v1_paper.n_neurons(g) for g in GROUPS}
    with capsys.disabled():
        print(f"\nall_hooked on v2 Large adds {extra} neurons ({sum(extra.values()):,}) to the paper's table "
              f"{paper.counts()}: {where}; v1 Large: {v1_extra}")
    assert extra == {"speech_encoder": 49_152, "text_encoder": 1_024, "text_decoder": 1_024}
    assert where == {"speech_encoder:final_layer_norm": 24 * 1024, "speech_encoder:encoder.layer_norm": 1024,
                     "speech_encoder:intermediate_ffn": 4096 + 1024,
                     # residual and attention norms, two convolutions (2 x 2048), the GLU, q/k/v/out,
                     # the FFN's norm and its two linears
                     "speech_encoder:adapter": 1024 + 2048 + 1024 + 1024 + 2048 + 4 * 1024 + 1024 + 4096 + 1024,
                     "speech_encoder:inner_layer_norm": 1024, "text_encoder:layer_norm": 1024,
                     "text_decoder:layer_norm": 1024}
    # v1 Large: BatchNorm1d out of each layer, linear_pos in: the same counts
    assert v1_extra == extra


def test_the_paper_table_keeps_its_bytes_and_the_options_are_checked():
    digests = {"large": "d53ad21f3738fd925f60eb359bfa97dcd2917f00bfc44257798de660ff84de77",
               "tiny": "393767f85129b4d637323be1570fa27fd1890133d5e1a1a567220a8082aa3d5f"}
    for name, digest in digests.items():
        default = json.dumps(build_catalog(config_for(name)).to_json())
        assert hashlib.sha256(default.encode()).hexdigest() == digest
        assert json.dumps(build_catalog(config_for(name), modules="paper_table").to_json()) == default
    hooked = build_catalog(config_for("tiny"), modules="all_hooked")
    assert Catalog.from_json(json.loads(json.dumps(hooked.to_json()))) == hooked
    with pytest.raises(UserError, match="SeamlessM4T only"):
        build_catalog(config_for("qwen2-audio"), modules="all_hooked")
    with pytest.raises(UserError, match="paper_table or all_hooked"):
        build_catalog(config_for("tiny"), modules="everything")
    with pytest.raises(ValueError, match="extras"):
        build_catalog(config_for("tiny"), extras=("adapter",), modules="all_hooked")


def test_the_catalog_command_lists_the_authors_set(capsys):
    from engine.model.catalog import catalog_command

    class Args:
        config, model, extras, json, modules = "large", None, (), False, "all_hooked"
    assert catalog_command(Args()) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == ("speech_encoder: 24 layers, 448 components, per layer [25600], 24,576 outside them, "
                      "638,976 neurons")
    assert json.loads(out[-1])["total"] == 1_449_984 + 49_152 + 2 * 1024


def test_the_distribution_counts_modules_outside_a_layer_as_components_only(tiny_lm):
    catalog = build_catalog(tiny_lm.model, modules="all_hooked")
    comps = catalog.group("speech_encoder")
    rng = np.random.default_rng(3)
    ap = rng.random(catalog.n_neurons("speech_encoder"))
    ap[[c.offset for c in comps if c.layer < 0]] = 2.0  # some of the top-k outside every layer
    k = 300
    dist = distribution(ap, comps, k)
    outside = sum(dist["by_component"][c.name] for c in comps if c.layer < 0)
    assert outside >= sum(c.layer < 0 for c in comps)
    assert len(dist["by_layer"]) == len(tiny_lm.model.speech_encoder.encoder.layers)
    assert sum(dist["by_layer"]) == k - outside and sum(dist["by_component"].values()) == k
    # a catalog without such components: as before (each layer's count, every component)
    paper = build_catalog(tiny_lm.model).group("speech_encoder")
    ap = rng.random(sum(c.dim for c in paper))
    dist = distribution(ap, paper, k)
    top = np.argsort(-ap, kind="stable")[:k]
    assert dist["by_layer"] == [int(sum(((top >= c.offset) & (top < c.offset + c.dim)).sum() for c in paper
                                        if c.layer == i)) for i in range(len(dist["by_layer"]))]


# ------------------------------------------------------------------------------------------------
# recording
# ------------------------------------------------------------------------------------------------
def wave(n, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * (150 + 37 * seed) * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


# feature frames L (lone width W): 40 (41), 39 (40), 49, 29, 62: odd ones whose masked pad frame
# falls inside / outside the adapter's last window, and even ones
SAMPLES = [13300, 12960, 16000, 9600, 20100]
TEXTS = [("deu", "Meine Großmutter reist heute nach London."), ("jpn", "学生は今晩マドリードへ行きます。"),
         ("fra", "Le professeur lit un livre dans le jardin."), ("cmn", "老师在公园里看书。")]


def speech_items():
    return [ModelInput(f"s{i}-{n}", ("deu", "jpn", "fra")[i % 3], "speech", "eng", waveform=wave(n, i))
            for i, n in enumerate(SAMPLES)]


def text_items():
    return [ModelInput(f"t{i}", lang, "text", "eng", text=text) for i, (lang, text) in enumerate(TEXTS)]


def _rows(records):
    return [(rec, k) for rec in records for k in range(len(rec.example_ids))]


@pytest.mark.parametrize("pool_masked", [False, True])
def test_batch_one_equals_batched(model, pool_masked):
    _, lm, catalog = model
    options = RecordOptions(pool_masked=pool_masked)
    items = speech_items() + text_items()
    one = _rows(list(record_batches(lm, catalog, items, steps=STEPS, batch_size=1, options=options)))
    many = _rows(list(record_batches(lm, catalog, items, steps=STEPS, batch_size=4, options=options)))
    dec_groups = component_groups(catalog, "text_decoder")
    for (a, i), (b, j) in zip(one, many):
        assert a.example_ids[i] == b.example_ids[j] and a.output_ids[i] == b.output_ids[j]
        group = "speech_encoder" if a.modality == "speech" else "text_encoder"
        assert not np.isnan(a.encoder[i]).any(), "a component was not recorded"
        assert_close_to_oracle(b.encoder[j], a.encoder[i], groups=component_groups(catalog, group),
                               what=f"{a.example_ids[i]} encoder")
        for t in STEPS:
            assert a.valid[t][i] == b.valid[t][j]
            assert_close_to_oracle(b.decoder[t][j], a.decoder[t][i], groups=dec_groups,
                                   what=f"{a.example_ids[i]} t={t}")


@torch.no_grad()
def hand_speech(lm, catalog, item, pool_masked=False) -> np.ndarray:
    """Every speech component of ``item`` alone (the feature extractor's own output, one run of the
    speech encoder), the mean of its hooked output over the example's valid positions at the rate
    it runs at, worked out from where the module sits:

    - conformer modules, the encoder's final norm, ``intermediate_ffn``: the L frames of the feature
      mask (``pool_masked``: all W frames of the lone run, its masked pad frame included);
    - adapter layer j's outputs: the first min(sub(L), width) outputs, sub(L) transformers' own
      sub-sampled length (the keys its attention is given; ``pool_masked``: every output);
    - adapter layer j's residual and attention norms: its input, so layer j - 1's valid outputs (layer
      0: the frames above); ``inner_layer_norm``: the last adapter layer's valid outputs;
    - v1's ``linear_pos``: its ``[1, 2W - 1, C]`` rows are the relative positions W - 1 .. -(W - 1);
      those between two of the frames above, |r| < n.
    """
    model = lm.model
    feats = lm.feature_extractor([item.waveform], sampling_rate=16000, return_tensors="pt")
    mask = feats["attention_mask"]
    seen = {}
    comps = catalog.group("speech_encoder")
    handles = [model.get_submodule(c.path).register_forward_hook(
        lambda m, i, o, p=c.path: seen.__setitem__(p, (o[0] if isinstance(o, tuple) else o).detach().clone()))
        for c in comps]  # a module called twice (the adapter's GLU): its last output
    try:
        model.speech_encoder(input_features=feats["input_features"], attention_mask=mask)
    finally:
        for h in handles:
            h.remove()
    frames = mask.shape[1] if pool_masked else int(mask.sum())
    n_sub = int(model._compute_sub_sample_lengths_from_attention_mask(mask)[0])

    def positions(c):  # (B, T, C) of one example
        x = seen[c.path]
        return (x.transpose(1, 2) if c.channel_axis == 1 else x)[0].double()

    valid_out = {}  # adapter layer j -> its valid outputs
    for c in comps:
        m = re.match(r"adapter\.layers\.(\d+)\.(.+)", c.name)
        if m and not m[2].endswith(("residual_layer_norm", "self_attn_layer_norm")):
            width = positions(c).shape[0]
            valid_out[int(m[1])] = width if pool_masked else min(n_sub, width)
    out = []
    for c in comps:
        x = positions(c)
        m = re.match(r"adapter\.layers\.(\d+)\.(.+)", c.name)
        if c.name == "self_attn.linear_pos":
            mid = (x.shape[0] - 1) // 2  # relative position 0
            rows = x[mid - (frames - 1): mid + frames]
        elif m and m[2] in ("residual_layer_norm", "self_attn_layer_norm"):
            j = int(m[1])
            rows = x[: valid_out[j - 1] if j else frames]
        elif m:
            rows = x[: valid_out[int(m[1])]]
        elif c.name == "inner_layer_norm":
            rows = x[: valid_out[max(valid_out)]] if valid_out else x[:frames]
        else:
            rows = x[:frames]
        out.append(rows.mean(0))
    return torch.cat(out).numpy()


@pytest.mark.parametrize("pool_masked", [False, True])
def test_speech_components_equal_a_hand_computation(model, pool_masked):
    name, lm, catalog = model
    items = speech_items()
    got = _rows(list(record_batches(lm, catalog, items, steps=(1,), batch_size=5,
                                    options=RecordOptions(pool_masked=pool_masked))))
    groups = component_groups(catalog, "speech_encoder")
    for item, (rec, k) in zip(items, got):
        assert_close_to_oracle(rec.encoder[k], hand_speech(lm, catalog, item, pool_masked), groups=groups,
                               what=f"{name} {item.example_id}")


@torch.no_grad()
def test_text_components_equal_a_hand_computation(model):
    """Text encoder: mean over the tokens; decoder: each component at position t of one
    teacher-forced pass over ``[start, tag, outputs]`` on the lone encoder states, k/v their mean over
    the tokens (the decoder's final ``layer_norm`` is one of the decoder's components)."""
    name, lm, catalog = model
    model_ = lm.model
    items = text_items()
    got = _rows(list(record_batches(lm, catalog, items, steps=STEPS, batch_size=4)))
    enc_groups, dec_groups = component_groups(catalog, "text_encoder"), component_groups(catalog, "text_decoder")
    for item, (rec, k) in zip(items, got):
        ids = lm.tokenizer(item.text, src_lang=item.lang, return_tensors="pt")["input_ids"]
        seen = {}
        handles = [model_.get_submodule(c.path).register_forward_hook(
            lambda m, i, o, p=c.path: seen.__setitem__(p, o.detach().clone()))
            for c in catalog.group("text_encoder") + catalog.group("text_decoder")]
        try:
            states = model_.text_encoder(input_ids=ids).last_hidden_state
            prefix = [model_.generation_config.decoder_start_token_id, lm.lang_token_id(item.tgt_lang)]
            model_.text_decoder(input_ids=torch.tensor([prefix + rec.output_ids[k]]), encoder_hidden_states=states,
                                use_cache=False)
        finally:
            for h in handles:
                h.remove()
        enc = np.concatenate([seen[c.path][0].double().mean(0).numpy() for c in catalog.group("text_encoder")])
        assert_close_to_oracle(rec.encoder[k], enc, groups=enc_groups, what=f"{name} {item.example_id} encoder")
        for t in STEPS:
            if not rec.valid[t][k]:
                continue
            dec = np.concatenate([(seen[c.path][0].double().mean(0) if c.position == "step_invariant"
                                   else seen[c.path][0, t].double()).numpy() for c in catalog.group("text_decoder")])
            assert_close_to_oracle(rec.decoder[t][k], dec, groups=dec_groups, what=f"{name} {item.example_id} t={t}")


def test_an_adapter_input_norm_pooled_at_the_output_rate_fails(model):
    """Planted: the adapter's input norms pooled with the output-rate mask (``adapter_pooled``)."""
    name, lm, catalog = model
    wrong = Catalog(tuple(dataclasses.replace(c, position="adapter_pooled") if c.position == "adapter_in_pooled"
                          else c for c in catalog.components))
    items = speech_items()[:3]
    cols = np.concatenate([np.arange(c.offset, c.offset + c.dim) for c in catalog.group("speech_encoder")
                           if c.position == "adapter_in_pooled"])
    for rec, k in _rows(list(record_batches(lm, wrong, items, steps=(1,), batch_size=3))):
        item = items[k]
        want = hand_speech(lm, catalog, item)
        with pytest.raises(AssertionError, match="beyond"):
            assert_close_to_oracle(rec.encoder[k][cols], want[cols], what=f"{name} {item.example_id} planted")
