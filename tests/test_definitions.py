"""The authors' definitions (engine.pipeline.definitions), each against an independent re-statement
of what their code computes, on the tiny model and on a differently shaped one, at batch 1 and in
padded batches; a planted error (off by one position, pads left out, the wrong tag) fails each.

The re-statement follows the authors' code (konta3738/generation-step-aware-framework):
``selfcond/responses.py`` ``_get_decoder_prefixes_from_generate`` (greedy ``generate`` for
max(steps) - 1 new tokens with ``tgt_lang``, batch 1, then ``sequences[:, :t + 1]``) and
``cache_responses`` (one forward of the whole model per prefix, hooks on every module);
``selfcond/models.py`` ``pool_responses`` (``np.mean`` over axis 1: every position, no mask);
``selfcond/data.py`` (text: ``tokenizer.encode(text)`` of a freshly loaded tokenizer, padded to
``--seq-len`` with the pad token, attention mask on the real tokens).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from engine.errors import UserError
from engine.model.catalog import build_catalog
from engine.model.loader import TINY_MODEL_DIR
from engine.model.recorder import ModelInput, RecordOptions, record_batches
from engine.pipeline import definitions
from engine.pipeline.config import load_profile
from tests.helpers import assert_close_to_oracle, second_model

STEPS = (1, 6, 13)  # step 13: some tiny outputs end before it (short outputs kept or dropped)
# the first two translate into 11 tokens on the tiny model, so they end before step 13
TEXTS = [("deu", "Meine Großmutter reist heute nach London."), ("jpn", "学生は今晩マドリードへ行きます。"),
         ("fra", "Le professeur lit un livre dans le jardin."), ("cmn", "老师在公园里看书。")]


def text_items(tgt=None):
    return [ModelInput(f"t{i}", lang, "text", tgt or "eng", text=text) for i, (lang, text) in enumerate(TEXTS)]


def speech_items():
    rng = np.random.default_rng(7)
    return [ModelInput(f"s{i}", lang, "speech", "eng",
                       waveform=(0.2 * np.sin(np.arange(n) / (9 + i)) + 0.05 * rng.standard_normal(n)).astype(np.float32))
            for i, (lang, n) in enumerate([("deu", 16000 * 2 + 160), ("jpn", 16000 + 480), ("fra", 23000)])]


# ------------------------------------------------------------------------------------------------
# the authors' computation, re-stated
# ------------------------------------------------------------------------------------------------
def authors_inputs(lm, item: ModelInput, text_length: int = 0, fresh_tokenizer=None) -> dict:
    if item.modality == "speech":
        feats = lm.feature_extractor([item.waveform], sampling_rate=16000, return_tensors="pt")
        return {"input_features": feats["input_features"].to(lm.dtype), "attention_mask": feats["attention_mask"]}
    if fresh_tokenizer is not None:  # their data loader: encode(text) and pad to --seq-len
        ids = fresh_tokenizer.encode(item.text)
        pad = [fresh_tokenizer.pad_token_id] * (text_length - len(ids))
        return {"input_ids": torch.tensor([ids + pad]), "attention_mask": torch.tensor([[1] * len(ids) + [0] * len(pad)])}
    enc = lm.tokenizer(item.text, src_lang=item.lang, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@torch.no_grad()
def authors_means(lm, catalog, item, steps, *, inputs=None, shift: int = 0):
    """Per step t: every decoder component's output, mean over the positions of one forward on the
    greedy prefix of length t + 1 (the whole sequence when it ended earlier, EOS included), as
    ``[N]``; and every encoder component's mean over all positions of that forward. ``shift``
    plants an off-by-one: the mean over positions 0..t - shift."""
    model = lm.model
    inputs = inputs or authors_inputs(lm, item)
    out = model.generate(**inputs, tgt_lang=item.tgt_lang, generate_speech=False, max_new_tokens=max(max(steps) - 1, 1),
                         do_sample=False, num_beams=1)
    seq = out.sequences if hasattr(out, "sequences") else out[0]
    seen = {}
    handles = [model.get_submodule(c.path).register_forward_hook(
        lambda m, a, o, c=c: seen.__setitem__(c.path, (o[0] if isinstance(o, tuple) else o).float()))
        for c in catalog.components]
    decoder, encoder = {}, None
    try:
        for t in steps:
            prefix = seq[:, : t + 1 - shift]
            model(**inputs, decoder_input_ids=prefix)
            row = np.empty(catalog.n_neurons("text_decoder"))
            for c in catalog.group("text_decoder"):
                x = seen[c.path].transpose(1, 2) if c.channel_axis == 1 else seen[c.path]
                row[c.offset: c.offset + c.dim] = x.mean(1)[0].numpy()
            decoder[t] = row
            group = "speech_encoder" if item.modality == "speech" else "text_encoder"
            encoder = np.empty(catalog.n_neurons(group))
            for c in catalog.group(group):
                x = seen[c.path].transpose(1, 2) if c.channel_axis == 1 else seen[c.path]
                encoder[c.offset: c.offset + c.dim] = x.mean(1)[0].numpy()
    finally:
        for h in handles:
            h.remove()
    return decoder, encoder, (seq[0, 2:] == lm.tokenizer.eos_token_id).any().item(), seq.shape[1]


def _record(lm, catalog, items, options, batch_size, steps=STEPS):
    recs = list(record_batches(lm, catalog, items, steps=steps, batch_size=batch_size, options=options))
    pm = {t: np.concatenate([r.prefix_mean[t] for r in recs]) for t in steps}
    valid = {t: np.concatenate([r.valid_prefix_mean[t] for r in recs]) for t in steps}
    return pm, valid, [row for r in recs for row in r.encoder]  # one encoder row per item (widths differ)


def _groups(catalog, group, keep=None):
    comps = catalog.group(group)
    base = comps[0].offset
    return [slice(c.offset - base, c.offset - base + c.dim) for c in comps if keep is None or keep(c)]


def _columns(catalog, keep):
    return np.concatenate([np.arange(c.offset, c.offset + c.dim) for c in catalog.group("text_decoder") if keep(c)])


@pytest.fixture(scope="module", params=["tiny", "second"])
def model_and_catalog(request, tiny_lm):
    lm = tiny_lm if request.param == "tiny" else second_model(tiny_lm)
    return request.param, lm, build_catalog(lm.model)


_ORACLE: dict = {}  # (model, example) -> authors_means over STEPS: the same for every batch size


# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [1, 3])
def test_prefix_means_and_kept_short_outputs_equal_the_authors_forward_on_each_prefix(model_and_catalog, batch_size):
    name, lm, catalog = model_and_catalog
    items = text_items() + speech_items()
    options = RecordOptions(activities=("position", "prefix_mean"), keep_short=True)
    pm, valid, _ = _record(lm, catalog, items, options, batch_size)
    # k/v are step-invariant means over the encoder positions the decoder attends to (compared below,
    # with definitions.pool_masked); here the components read at the decoding positions
    step_wise = lambda c: c.position != "step_invariant"  # noqa: E731
    cols = _columns(catalog, step_wise)
    groups = [slice(s.start, s.stop) for s in _compact(_groups(catalog, "text_decoder", step_wise))]
    ended = 0
    for i, item in enumerate(items):
        if (name, item.example_id) not in _ORACLE:
            _ORACLE[name, item.example_id] = authors_means(lm, catalog, item, STEPS)
        want, _, eos, length = _ORACLE[name, item.example_id]
        ended += eos and length - 3 < max(STEPS) - 1  # [start, tag, y.., EOS]: fewer tokens than the step needs
        for t in STEPS:
            assert valid[t][i], (item.example_id, t)  # kept: every example has every step's prefix
            assert_close_to_oracle(pm[t][i, cols], want[t][cols], groups=groups, what=f"{item.example_id} t={t}")
        if eos and length - 3 < max(STEPS) - 1 and name == "tiny" and batch_size == 1:
            # planted: the ended output's prefix without its EOS is not what they averaged
            without, _, _, _ = authors_means(lm, catalog, item, STEPS[-1:], shift=1)
            with pytest.raises(AssertionError, match="beyond"):
                assert_close_to_oracle(pm[STEPS[-1]][i, cols], without[STEPS[-1]][cols], what="EOS left out")
    # the tiny model ends two of them early (the random second model runs on to the limit)
    assert ended or name == "second", "no output ended before the last step: the kept-short case went untested"


def test_a_prefix_one_position_short_fails_the_oracle(tiny_lm, tiny_catalog):
    item = text_items()[:1]
    pm, _, _ = _record(tiny_lm, tiny_catalog, item, RecordOptions(activities=("prefix_mean",)), 1)
    cols = _columns(tiny_catalog, lambda c: c.position != "step_invariant")
    planted, _, _, _ = authors_means(tiny_lm, tiny_catalog, item[0], STEPS, shift=1)
    with pytest.raises(AssertionError, match="beyond"):
        assert_close_to_oracle(pm[6][0, cols], planted[6][cols], what="off by one")


def _compact(groups):
    """Slices renumbered to consecutive columns (the step-wise components only)."""
    out, at = [], 0
    for g in groups:
        out.append(slice(at, at + g.stop - g.start))
        at += g.stop - g.start
    return out


def test_dropped_short_outputs_have_no_prefix_mean_at_the_steps_they_never_reached(tiny_lm, tiny_catalog):
    items = text_items()
    recs = list(record_batches(tiny_lm, tiny_catalog, items, steps=STEPS, batch_size=4,
                               options=RecordOptions(activities=("prefix_mean",))))
    r = recs[0]
    for t in STEPS:
        reached = np.array([len(ys) >= t - 1 for ys in r.output_ids])
        assert np.array_equal(r.valid_prefix_mean[t], reached)
        assert np.isnan(r.prefix_mean[t][~reached]).all() and not np.isnan(r.prefix_mean[t][reached]).any()


@pytest.mark.parametrize("batch_size", [1, 4])
def test_padded_text_with_the_default_tag_pools_as_the_authors_loader_feeds_it(model_and_catalog, batch_size):
    name, lm, catalog = model_and_catalog
    fresh = AutoTokenizer.from_pretrained(str(TINY_MODEL_DIR))  # never called with src_lang: its own tag
    length = 40
    items = text_items()
    options = RecordOptions(activities=("prefix_mean",), text_length=length, default_source_tag=True, pool_masked=True)
    pm, _, enc = _record(lm, catalog, items, options, batch_size, steps=(1, 6))
    kv = lambda c: c.position == "step_invariant"  # noqa: E731
    for i, item in enumerate(items):
        inputs = authors_inputs(lm, item, length, fresh)
        # a fresh tokenizer's encode: its target template, </s> __eng__, for every language
        assert inputs["input_ids"][0, :2].tolist() == [fresh.eos_token_id, fresh.convert_tokens_to_ids("__eng__")]
        want_dec, want_enc, _, _ = authors_means(lm, catalog, item, (1, 6), inputs=inputs)
        assert_close_to_oracle(enc[i], want_enc, groups=_groups(catalog, "text_encoder"), what=f"encoder {item.lang}")
        cols = _columns(catalog, kv)
        assert_close_to_oracle(pm[6][i, cols], want_dec[6][cols], what=f"k/v {item.lang}")
    # planted: the pads left out of the mean, or the language's own tag, is not what they computed
    inputs = authors_inputs(lm, items[0], length, fresh)
    _, want_enc, _, _ = authors_means(lm, catalog, items[0], (1,), inputs=inputs)
    for wrong in (RecordOptions(text_length=length, default_source_tag=True),
                  RecordOptions(text_length=length, pool_masked=True)):
        got = next(record_batches(lm, catalog, items[:1], steps=(1,), options=wrong)).encoder[0]
        with pytest.raises(AssertionError, match="beyond"):
            assert_close_to_oracle(got, want_enc, groups=_groups(catalog, "text_encoder"), what=str(wrong))


@pytest.mark.parametrize("modules", ["paper_table", "all_hooked"])
def test_speech_pooled_over_its_masked_pad_frame_as_the_authors_mean_does(model_and_catalog, modules):
    name, lm, catalog = model_and_catalog
    catalog = build_catalog(lm.model, modules=modules)
    items = speech_items()
    _, _, enc = _record(lm, catalog, items, RecordOptions(activities=("prefix_mean",), pool_masked=True), 3,
                        steps=(1,))
    odd = 0
    for i, item in enumerate(items):
        _, want, _, _ = authors_means(lm, catalog, item, (1,))
        odd += authors_inputs(lm, item)["attention_mask"].min().item() == 0
        assert_close_to_oracle(enc[i], want, groups=_groups(catalog, "speech_encoder"), what=item.example_id)
    assert odd, "no utterance with a masked pad frame: the case went untested"


def test_a_text_longer_than_the_padded_length_is_refused(tiny_lm, tiny_catalog):
    with pytest.raises(UserError, match="more than definitions.text_length=4"):
        next(record_batches(tiny_lm, tiny_catalog, text_items()[:1], options=RecordOptions(text_length=4)))


# ------------------------------------------------------------------------------------------------
# settings: the preset, overrides, keys
# ------------------------------------------------------------------------------------------------
def test_the_preset_sets_every_definition_and_a_setting_overrides_it():
    paper = load_profile("tiny")["definitions"]
    official = load_profile("tiny", ["definitions.preset=official_code"])["definitions"]
    assert paper == {"preset": "paper_text", **definitions.preset_values("paper_text")}
    assert official == {"preset": "official_code", **definitions.preset_values("official_code")}
    mixed = load_profile("tiny", ["definitions.preset=official_code", "definitions.text_length=0"])["definitions"]
    assert mixed["text_length"] == 0 and mixed["decoder_activity"] == "prefix_mean"
    assert load_profile("tiny-official")["definitions"] == official
    assert load_profile("paper-official")["definitions"] == official
    # paper-official is paper with the preset, nothing else
    a, b = load_profile("paper"), load_profile("paper-official")
    assert {s: v for s, v in a.items() if s not in ("profile", "definitions")} == \
        {s: v for s, v in b.items() if s not in ("profile", "definitions")}
    with pytest.raises(UserError, match="keep needs definitions.decoder_activity=prefix_mean"):
        load_profile("tiny", ["definitions.short_outputs=keep"])


def test_each_definition_keys_the_stages_it_changes_and_only_away_from_the_paper_text():
    from engine.pipeline.run import Run

    base = Run(load_profile("tiny"), "/nonexistent")
    for d in definitions.DEFINITIONS:
        other = Run(load_profile("tiny", [f"definitions.{d.name}={_toml(d.official_code)}"]
                                 + (["definitions.decoder_activity=prefix_mean"] if d.name == "short_outputs" else [])),
                    "/nonexistent")
        changed = {s for s in ("data", "speech", "record", "rank", "steer") if other.key(s) != base.key(s)}
        first = {"speech": "speech", "record": "record", "rank": "rank", "steer": "steer"}
        expected = {s for s in changed if s in first}
        own = {min(d.stages, key=("speech", "record", "rank", "steer").index)}
        if d.name == "synthesis_text":  # the embedded corpus has no normalised form: nothing changes
            assert not changed, changed
        else:
            assert own <= expected and "data" not in changed, (d.name, changed)


def _toml(v):
    return str(v).lower() if isinstance(v, bool) else (f'"{v}"' if isinstance(v, str) else str(v))


def test_normalised_transcriptions_are_what_is_synthesised_from_fleurs():
    from engine.pipeline.inputs.corpus import Selection
    from engine.pipeline.inputs.fleurs import select_fleurs

    root = TINY_MODEL_DIR.parents[0] / "fleurs"
    sel = select_fleurs(["deu", "jpn"], n=4, root=root)
    s = sel.sentences[0]
    assert s.normalized and set(s.normalized) >= {"deu", "jpn"}
    spoken = s.spoken()
    assert spoken.texts["deu"] == s.normalized["deu"] != s.texts["deu"] and spoken.readings["deu"] == s.normalized["deu"]
    assert Selection.from_json(sel.to_json()) == sel and Selection.from_json(sel.to_json()).sentences[0].normalized == s.normalized


def test_long_utterances_leave_the_speech_side_and_are_counted():
    from engine.pipeline.stages.record import _leave_out_long_speech

    meta = {"modality": "speech", "langs": ["deu", "deu", "jpn"], "example_ids": ["a/deu", "b/deu", "c/jpn"],
            "frames": [900, 1100, 1024], "valid": {"1": [True, True, True]}, "valid_prefix_mean": {"1": [True] * 3}}
    _leave_out_long_speech(meta, 1024)
    assert meta["encoder_valid"] == [True, False, True]
    assert meta["valid"]["1"] == [True, False, True] and meta["valid_prefix_mean"]["1"] == [True, False, True]
    assert meta["long_speech"] == {"frames": 1024, "excluded": {"deu": 1, "jpn": 0}}


# ------------------------------------------------------------------------------------------------
# the authors' module set (definitions.modules = "all_hooked")
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def authors_modules(lm) -> dict[str, int]:
    """The authors' selection, re-stated: hooks on every module but containers and the root, one
    forward of text and one of speech through the whole model (their dummy inference), then their
    rules: class name one of Linear, Conv1d, LayerNorm, Embedding, GLU; under the three stacks;
    output rank 2 or 3 after the batch; distance_embedding and feature_projection skipped.
    Returns path -> channels (the channel axis of a (B, C, T) convolution output, else the last)."""
    model, seen = lm.model, {}
    handles = [m.register_forward_hook(lambda mod, a, o, n=n: seen.__setitem__(n, (type(mod).__name__, o)))
               for n, m in model.named_modules()
               if m is not model and not isinstance(m, (torch.nn.Sequential, torch.nn.ModuleList))]
    try:
        text = lm.tokenizer("Das Kind sieht einen Film.", src_lang="deu", return_tensors="pt")
        model(**text, decoder_input_ids=torch.tensor([[3, 700, 333]]))
        wave = speech_items()[0].waveform
        feats = lm.feature_extractor([wave], sampling_rate=16000, return_tensors="pt")
        model(input_features=feats["input_features"], attention_mask=feats["attention_mask"],
              decoder_input_ids=torch.tensor([[3, 700, 333]]))
    finally:
        for h in handles:
            h.remove()
    out = {}
    for path, (kind, o) in seen.items():
        if (kind in ("Linear", "Conv1d", "LayerNorm", "Embedding", "GLU") and isinstance(o, torch.Tensor)
                and o.dim() - 1 in (2, 3) and path.split(".")[0] in ("text_encoder", "speech_encoder", "text_decoder")
                and "self_attn.distance_embedding" not in path and "feature_projection" not in path):
            out[path] = o.shape[1] if kind in ("Conv1d", "GLU") else o.shape[-1]
    return out


def test_the_authors_module_set_is_what_their_selection_rule_picks(model_and_catalog):
    name, lm, _ = model_and_catalog
    catalog = build_catalog(lm.model, modules="all_hooked")
    assert {c.path: c.dim for c in catalog.components} == authors_modules(lm)
    paper = build_catalog(lm.model)
    assert {c.path for c in paper.components} < {c.path for c in catalog.components}


def test_the_authors_module_set_on_the_large_model(capsys):
    from transformers import SeamlessM4Tv2Config

    paper = build_catalog(SeamlessM4Tv2Config())
    hooked = build_catalog(SeamlessM4Tv2Config(), modules="all_hooked")
    extra = {g: hooked.n_neurons(g) - paper.n_neurons(g) for g in ("speech_encoder", "text_encoder", "text_decoder")}
    print(f"the authors' module set adds {extra} neurons to the paper's table on v2 Large")
    # 24 final_layer_norms, the encoder's layer_norm, intermediate_ffn, one adapter layer, inner_layer_norm
    assert extra == {"speech_encoder": 49_152, "text_encoder": 1_024, "text_decoder": 1_024}


def test_an_adapter_input_norm_pooled_at_the_output_rate_fails_the_oracle(tiny_lm):
    import dataclasses

    from engine.model.catalog import Catalog

    catalog = build_catalog(tiny_lm.model, modules="all_hooked")
    wrong = Catalog(tuple(dataclasses.replace(c, position="adapter_pooled") if c.position == "adapter_in_pooled"
                          else c for c in catalog.components))
    item = speech_items()[:1]
    got = next(record_batches(tiny_lm, wrong, item, steps=(1,), options=RecordOptions(pool_masked=True))).encoder[0]
    _, want, _, _ = authors_means(tiny_lm, catalog, item[0], (1,))
    cols = np.concatenate([np.arange(c.offset, c.offset + c.dim) for c in catalog.group("speech_encoder")
                           if c.position == "adapter_in_pooled"])
    with pytest.raises(AssertionError, match="beyond"):
        assert_close_to_oracle(got[cols], want[cols], what="adapter input norms at the output rate")


@pytest.mark.slow
def test_the_official_preset_passes_every_stage_and_the_claims_suite_reports_it(tmp_path):
    """``tiny-official`` (the tiny profile with definitions.preset=official_code) through every stage
    and the claims suite against its own baselines; the report names the definitions it computed."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "STEP_NEURONS_REPORTS": str(tmp_path), "OMP_NUM_THREADS": "1"}
    env.pop("STEP_NEURONS_ANALYSIS", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "claims/", "--profile", "tiny-official", "-q",
                           "-p", "no:cacheprovider"], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    claims = json.loads((tmp_path / "latest" / "claims.json").read_text())
    assert claims["profile"] == "tiny-official" and set(claims["summary"]) == {"passed"}
    assert claims["header"]["definitions"].startswith("official_code (as the authors' code computed it)")
    report = (tmp_path / "latest" / "claims-report.md").read_text()
    assert "Content kept, language changed" in report and "chrF++ vs target" in report
    analysis = json.loads(max((repo / "runs" / "tiny-official").glob("report-*/analysis.json"),
                              key=lambda p: p.stat().st_mtime).read_text())
    assert analysis["meta"]["definitions"]["preset"] == "official_code"
    run = newest_root(repo)
    assert json.loads(next(run.glob("record-*/COMPLETE.json")).read_text())["summary"]["store_dtype"] == "float32"
    identify = set(json.loads(next(run.glob("data-*/selection.json")).read_text())["identify_ids"])
    steered = json.loads(next(run.glob("steer-*/steering_outputs.json")).read_text())
    assert {o["sentence_id"] for outs in steered.values() for o in outs} <= identify  # the authors steer those
    assert {r.get("control_by") for r in analysis["steering"]["rows"] if r["src"] in ("deu", "fra")
            and r["tgt"] in ("cmn", "jpn")} == {"pieces"}


def newest_root(repo):
    return repo / "runs" / "tiny-official"
