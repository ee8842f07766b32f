"""Speech LLMs (engine.model.speech_llm): catalogs of the real checkpoints' configs, and recording that
equals transformers' own KV-cache ``generate``, batched with left padding as the processor does it,
for both families, audio and text, batch sizes 1, 3 and 8 with mixed lengths, at every step."""
import numpy as np
import pytest
import torch

from engine.model.catalog import Catalog, build_catalog, catalog_command, config_for
from engine.model.hooks import hooked
from engine.model.lm_recorder import prompt_inputs, record_batches
from engine.model.recorder import ModelInput
from engine.model.speech_llm import family
from tests.helpers import assert_close_to_oracle, component_groups, speech_llm

ALL_STEPS = tuple(range(1, 12))
SENTENCES = [("deu", "Das Wetter ist heute schön, und wir gehen später in den Park."), ("fra", "Il fait beau."),
             ("spa", "Hoy hace muy buen tiempo en la ciudad."), ("deu", "Ja."),
             ("fra", "Les enfants jouent dans le jardin derrière la maison."), ("spa", "¿Dónde está?"),
             ("deu", "Morgen regnet es vielleicht."), ("fra", "Nous partons demain matin très tôt.")]
SECONDS = [1.0, 2.3, 0.7, 3.1, 1.6, 0.45, 2.0, 1.2]


def wave(seconds, seed):
    n = int(seconds * 16000)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * (150 + 30 * seed) * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


def inputs(modality, n, tgt="eng"):
    if modality == "speech":
        return [ModelInput(f"s{i}", SENTENCES[i][0], "speech", tgt or SENTENCES[i][0], waveform=wave(SECONDS[i], i))
                for i in range(n)]
    # TR and T2T mixed in one batch: every other sentence is repeated
    return [ModelInput(f"t{i}", lang, "text", lang if i % 2 else tgt, text=text)
            for i, (lang, text) in enumerate(SENTENCES[:n])]


# ---------------------------------------------------------------------------------------------
# Catalogs of the real checkpoints (meta device, no weights)


@pytest.mark.parametrize("name, model_type", [("qwen2-audio", "qwen2_audio"), ("voxtral", "voxtral")])
def test_checkpoint_catalog_counts_follow_the_pinned_config(name, model_type, capsys):
    config = config_for(name)
    fam = family(model_type)
    a, t = config.audio_config, config.text_config
    head = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
    per_audio = 7 * a.d_model + a.encoder_ffn_dim
    per_lm = 4 * t.hidden_size + t.num_attention_heads * head + 2 * t.num_key_value_heads * head + t.intermediate_size
    cat = build_catalog(config)
    assert cat.n_neurons("speech_encoder") == a.encoder_layers * per_audio + len(fam.projector) * t.hidden_size
    assert cat.n_neurons("text_encoder") == t.hidden_size
    assert cat.n_neurons("text_decoder") == t.num_hidden_layers * per_lm
    # the stacks are named for what they are; each is ranked in one of the method's groups
    assert cat.stacks() == ("audio_encoder", "projector", "token_embedding", "language_model")
    assert sum(c.dim for c in cat.stack("projector")) == len(fam.projector) * t.hidden_size
    assert catalog_command(type("A", (), {"config": name, "model": None, "extras": (), "json": False})()) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == ('{"audio_encoder": %d, "projector": %d, "token_embedding": %d, "language_model": %d, "total": %d}'
                       % (a.encoder_layers * per_audio, len(fam.projector) * t.hidden_size, t.hidden_size,
                          t.num_hidden_layers * per_lm, cat.total))
    assert out[2].startswith("token_embedding: 1 layer, 1 component,") and not any("text_encoder" in o for o in out)


def test_a_catalog_written_before_stacks_were_named_still_opens():
    """Speech-LLM catalogs of earlier runs named every component by its group: they still read."""
    cat = build_catalog(config_for("voxtral"))
    old = {"components": [{**c, "stack": c.pop("group", c["stack"])} for c in cat.to_json()["components"]]}
    reread = Catalog.from_json(old)
    assert [c.group for c in reread.components] == [c.group for c in cat.components]
    assert reread.n_neurons("speech_encoder") == cat.n_neurons("speech_encoder")
    assert reread.stacks() == ("speech_encoder", "text_encoder", "text_decoder")
    assert Catalog.from_json(cat.to_json()) == cat


def test_pinned_configs_are_the_checkpoints_not_the_class_defaults():
    from transformers import Qwen2AudioConfig

    assert Qwen2AudioConfig().text_config.intermediate_size == 22016  # what the class alone would give
    qwen = config_for("qwen2-audio")
    assert (qwen.text_config.intermediate_size, qwen.text_config.vocab_size) == (11008, 156032)
    vox = config_for("voxtral")
    assert (vox.text_config.hidden_size, vox.text_config.num_hidden_layers, vox.text_config.head_dim,
            vox.text_config.num_key_value_heads, vox.audio_token_id) == (3072, 30, 128, 8, 24)


# ---------------------------------------------------------------------------------------------
# Recording equals generate


def generate_activity(lm, catalog, batch, n_new):
    """Hooks during transformers' KV-cache generate on the processor's left-padded batch:
    step t = the last position of forward call t; encoder stacks pooled per example, slowly."""
    model = lm.model
    fam = family(model.config)
    enc = prompt_inputs(lm, batch)
    modality = batch[0].modality
    stack = "speech_encoder" if modality == "speech" else "text_encoder"
    seen = {}

    def keep(path):
        def hook(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            seen.setdefault(path, []).append((args[0].detach().clone() if args else None, out.detach().clone()))
        return hook

    paths = {c.path for c in catalog.group("text_decoder")} | {c.path for c in catalog.group(stack)}
    with hooked(model, {p: keep(p) for p in paths}):
        out = model.generate(**enc, max_new_tokens=n_new, do_sample=False, num_beams=1)
    decoder = []
    for comp in catalog.group("text_decoder"):
        calls = seen[comp.path]
        assert calls[0][1].shape[1] == enc["input_ids"].shape[1] and all(c[1].shape[1] == 1 for c in calls[1:])
        which = 0 if comp.reads == "input" else 1
        decoder.append(torch.stack([c[which][:, -1] for c in calls], dim=1))  # (B, steps, C)
    decoder = torch.cat(decoder, dim=2).numpy()
    encoder = []
    for comp in catalog.group(stack):
        x = seen[comp.path][0][1].float()
        if x.dim() == 2:
            x = x.reshape(len(batch), -1, x.shape[-1])
        rows = []
        for b, item in enumerate(batch):
            if modality == "speech":
                frames = -(-item.waveform.size // 160)
                n = (frames - 1) // 2 + 1
                if comp.position == "projector_pooled":
                    n = int(fam.projector_valid(torch.tensor(n)))
                rows.append(x[b, :n].mean(0))
            else:
                rows.append(x[b][enc["attention_mask"][b].bool()].mean(0))
        encoder.append(torch.stack(rows))
    return decoder, torch.cat(encoder, dim=1).numpy(), out[:, enc["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize("shape", ["fixture", "other"])
@pytest.mark.parametrize("name", ["qwen2_audio", "voxtral"])
@pytest.mark.parametrize("modality", ["speech", "text"])
def test_recording_equals_kv_cache_generate_at_batch_1_3_8(name, shape, modality):
    lm = speech_llm(name, shape)
    catalog = build_catalog(lm.model)
    stack = "speech_encoder" if modality == "speech" else "text_encoder"
    for size in (1, 3, 8):
        batch = inputs(modality, size)
        (rec,) = record_batches(lm, catalog, batch, steps=ALL_STEPS, batch_size=size)
        expected, pooled, tokens = generate_activity(lm, catalog, batch, n_new=max(ALL_STEPS))
        ends = set(np.atleast_1d(lm.model.generation_config.eos_token_id).tolist())
        for b in range(size):
            cut = next((i for i, tok in enumerate(tokens[b]) if tok in ends), len(tokens[b]))
            assert rec.output_ids[b] == tokens[b][:cut]
        assert_close_to_oracle(rec.encoder, pooled, groups=component_groups(catalog, stack), what=f"{stack} b={size}")
        for k, t in enumerate(ALL_STEPS):
            ok = rec.valid[t]
            assert ok.tolist() == [len(o) >= t - 1 for o in rec.output_ids]
            assert_close_to_oracle(rec.decoder[t][ok], expected[ok, k], groups=component_groups(catalog, "text_decoder"),
                                   what=f"{name}/{shape} {modality} b={size} t={t}")


def test_voxtral_transcription_mode_equals_generate():
    lm = speech_llm("voxtral", "fixture")
    catalog = build_catalog(lm.model)
    batch = inputs("speech", 3, tgt=None)  # ASR: Voxtral's transcription request
    assert "[TRANSCRIBE]" in lm.tokenizer.decode(prompt_inputs(lm, batch)["input_ids"][0].tolist())
    (rec,) = record_batches(lm, catalog, batch, steps=ALL_STEPS, batch_size=3)
    expected, _, _ = generate_activity(lm, catalog, batch, n_new=max(ALL_STEPS))
    for k, t in enumerate(ALL_STEPS):
        assert_close_to_oracle(rec.decoder[t][rec.valid[t]], expected[rec.valid[t], k],
                               groups=component_groups(catalog, "text_decoder"), what=f"ASR t={t}")


def test_the_tolerance_catches_a_step_off_by_one():
    lm = speech_llm("qwen2_audio", "fixture")
    catalog = build_catalog(lm.model)
    expected, _, _ = generate_activity(lm, catalog, inputs("text", 3), n_new=3)
    with pytest.raises(AssertionError, match="beyond 256 eps"):
        assert_close_to_oracle(expected[:, 1], expected[:, 2], groups=component_groups(catalog, "text_decoder"))


def test_language_and_length_errors_name_the_fix():
    from engine.errors import UserError

    lm = speech_llm("voxtral", "fixture")
    with pytest.raises(UserError, match="not documented for voxtral.*hin"):
        lm.check_languages(["deu", "jpn"])
    long = [ModelInput("s/long", "deu", "speech", "eng", waveform=np.zeros(16000 * 31, np.float32))]
    with pytest.raises(UserError, match="s/long.*31.0 s.*30 s window"):
        list(record_batches(lm, build_catalog(lm.model), long))


# ---------------------------------------------------------------------------------------------
# Steering (median-value intervention) on LM neurons


@pytest.mark.parametrize("from_position", [None, 3])
@pytest.mark.parametrize("name", ["qwen2_audio", "voxtral"])
def test_steering_sets_lm_neurons_at_generating_positions_only(name, from_position):
    from engine.model.steering import generate, steer

    lm = speech_llm(name, "fixture")
    catalog = build_catalog(lm.model)
    comps = {c.name: c for c in catalog.group("text_decoder") if c.layer == 1}
    chosen = [comps["mlp.intermediate"], comps["self_attn.q_proj"], comps["input_layernorm"]]
    neurons = np.array([c.offset + j for c in chosen for j in (0, 5)], dtype=np.int64)
    values = np.linspace(2.0, 4.5, neurons.size).astype(np.float32)
    seen = {c.path: [] for c in chosen}

    def observe(comp):
        def hook(module, args, output):  # registered after steering's: sees what it set
            x = args[0] if comp.reads == "input" else output
            seen[comp.path].append(x[..., [0, 5]].detach().clone())
        return hook

    batch = inputs("text", 3)
    enc = prompt_inputs(lm, batch)
    width = enc["input_ids"].shape[1]
    with steer(lm, catalog, neurons, values, from_position=from_position):
        with hooked(lm.model, {c.path: observe(c) for c in chosen}):
            lm.model.generate(**enc, max_new_tokens=5, do_sample=False)
    first_step = from_position or 1
    for i, comp in enumerate(chosen):
        want = torch.from_numpy(values[2 * i: 2 * i + 2])
        columns = torch.cat(seen[comp.path], dim=1)  # (B, P + 4, 2): prompt, then one per step
        assert columns.shape[1] == width + 4
        for col in range(columns.shape[1]):
            step = col - (width - 2)
            is_set = bool(torch.equal(columns[:, col], want.expand(3, 2)))
            assert is_set == (step >= first_step), (comp.name, col, step)
    with steer(lm, catalog, neurons[:0], values[:0]):
        assert generate(lm, catalog, batch, max_new_tokens=5) == generate(lm, catalog, batch, max_new_tokens=5)


@pytest.mark.parametrize("name", ["qwen2_audio", "voxtral"])
def test_the_prompts_are_profile_settings_that_reach_the_chat_template(name):
    from engine.model.loader import load_model
    from engine.model.speech_llm.shape import INSTRUCTIONS
    from engine.pipeline.config import available_profiles, load_profile

    for profile in available_profiles():  # one default, written in every profile
        assert load_profile(profile)["prompts"] == INSTRUCTIONS, profile
    own = {**INSTRUCTIONS, "T2T": "Render this in {target}, nothing else.", "TR": "Say it again."}
    lm = load_model(str(speech_llm(name).model.name_or_path), instructions=own)
    t2t, tr = inputs("text", 2)
    for item, expected in ((t2t, "Render this in English, nothing else."), (tr, "Say it again.")):
        prompt = lm.tokenizer.decode(prompt_inputs(lm, [item])["input_ids"][0].tolist())
        assert expected in prompt and item.text in prompt


@pytest.mark.slow
@pytest.mark.parametrize("profile, model_type", [("tiny-qwen2-audio", "qwen2_audio"), ("tiny-voxtral", "voxtral")])
def test_a_tiny_run_passes_every_stage_and_the_claims_suite_reports_it(profile, model_type, tmp_path):
    # the suite's own command on the family's profile: every stage, then every claim against the
    # profile's regression baselines, and the report
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "STEP_NEURONS_REPORTS": str(tmp_path), "OMP_NUM_THREADS": "1"}
    env.pop("STEP_NEURONS_ANALYSIS", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "claims/", "--profile", profile, "-q", "-p", "no:cacheprovider"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    claims = json.loads((tmp_path / "latest" / "claims.json").read_text())
    assert claims["profile"] == profile and set(claims["summary"]) == {"passed"}
    newest = max((repo / "runs" / profile).glob("report-*/analysis.json"), key=lambda p: p.stat().st_mtime)
    analysis = json.loads(newest.read_text())
    assert analysis["meta"]["model_type"] == model_type
    for task in ("S2T", "T2T", "ASR"):  # which tokens the recorded steps predicted
        assert set(analysis["step_tokens"][task]) == {"1", "6", "11"}
        assert analysis["step_tokens"][task]["1"]["n"] > 0
    assert "Tokens at the recorded steps" in (tmp_path / "latest" / "claims-report.md").read_text()
