"""``python -m engine rehearse``: prove that a machine and a setup can do the real run.

A rehearsal builds (once, cached under the output root) a random-weight SeamlessM4T v2 with the
exact architecture of a config (default: ``SeamlessM4Tv2Config()``, the Large model of the
paper profile; ``--layers N`` keeps every width and cuts every stack to N layers), then runs
the paper profile's pipeline on it, every stage, each in its own process (as a resumed run
would), on the profile's device, with a few sentences per language. Per stage it measures wall
time, peak RSS, peak GPU memory (CUDA) and bytes written, and prints them beside what
``engine estimate`` predicts for the same settings.

``--config qwen2-audio`` / ``--config voxtral`` rehearse a speech LLM (engine.model.speech_llm) at its
checkpoint's pinned widths (``--layers N`` cuts its audio encoder and LM to N layers), with its
tiny fixture's processor (chat template, feature extractor; its audio placeholder id replaces the
checkpoint's) and the profile's study languages that the checkpoint documents (Voxtral: German,
Spanish, French, steered between the first two when no profile pair remains).

Differences from the paper run, because the rehearsal needs no network and the paper's
resources are not installed here: the embedded corpus instead of FLEURS, espeak-ng speech
instead of XTTS v2, the profile's device only if present (else CPU), and a synthetic tokenizer
(the tiny fixture's pieces padded with filler pieces to the config's vocabulary size; its
language tokens match the generation config). Random weights never end a sentence, so
generation lengths are capped: recording stops at the last recorded step and steering at
``STEER_TOKENS`` new tokens (``--set record.max_new_tokens=...`` / ``steer.max_new_tokens``
restore the profile's values).

Compute type: the profile's (bfloat16 for ``paper``), unless the run is on a CPU that emulates
bfloat16 (AVX2 without AVX512_BF16 or AMX: a bf16 matrix product measured >= ``EMULATED_BF16``
times slower than fp32, ~50-100x on such CPUs, which would turn minutes into hours). There the
rehearsal computes in float32 and still stores activations as bfloat16 (``record.store_dtype``):
every store path, file and byte on disk is the paper run's, widths and activation buffers are
the real ones, and the estimate it is judged against is computed for the same settings; only the
weights take 4 bytes per parameter in RAM instead of 2 (``engine estimate --profile paper`` gives
the bf16 figure). ``--dtype`` forces either type. The choice and its reason are printed and are
in the result under ``compute``.

The model is written directly in the target dtype, shard by shard from a seeded generator
(normal(0, initializer_range) for matrices, ones for norm weights, zeros for biases), with no
fp32 copy and no full in-memory model: building Large needs about one shard of memory.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from engine.errors import UserError
from engine.files import REPO_ROOT, disk_usage
from engine.model import speech_llm
from engine.model.catalog import SPEECH_LLM_CONFIGS, config_for
from engine.model.loader import model_class, parse_dtype, read_config
from engine.pipeline import config as config_mod
from engine.pipeline import runner as pipeline
from engine.pipeline.stages import STAGES
from engine.pipeline.store import resolve_store_dtype
from engine.science.languages import PAPER_LANGS
from engine.tools.estimate import estimate
from engine.usage import cpu_seconds, peak_rss_bytes

BUILDER_VERSION = 2  # part of the cache key: bump when the files a build writes change
SHARD_BYTES = 512 * 2**20
STEER_TOKENS = 16
#: A CPU whose bf16 matrix products are this many times slower than fp32 ones emulates bfloat16.
EMULATED_BF16 = 4.0
TINY_MODEL = REPO_ROOT / "fixtures" / "tiny_model"
STACK_LAYERS = ("speech_encoder_layers", "encoder_layers", "decoder_layers", "t2u_encoder_layers",
                "t2u_decoder_layers")
CJK_FIRST, CJK_COUNT = 0x4E00, 20902


# ------------------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------------------
def model_config(base: str | None = None, layers: int | None = None):
    """The architecture to rehearse: ``SeamlessM4Tv2Config()`` (``base`` None or "large"), a
    speech LLM's pinned checkpoint config (``base`` "qwen2-audio" or "voxtral":
    engine.model.catalog.SPEECH_LLM_CONFIGS) or the config of a model directory / config.json, with
    every stack cut to ``layers`` layers."""
    from transformers import SeamlessM4Tv2Config

    if base in (None, "large"):
        mcfg = SeamlessM4Tv2Config()
    elif base in SPEECH_LLM_CONFIGS:
        mcfg = config_for(base)
    elif Path(base).is_dir() and speech_llm.is_speech_llm(_json_type(Path(base) / "config.json")):
        mcfg = read_config(Path(base))
    else:
        path = Path(base)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise UserError(f"--config {base}: no such config.json or model directory; give 'large', "
                            f"{', '.join(map(repr, SPEECH_LLM_CONFIGS))} or a directory holding config.json")
        mcfg = SeamlessM4Tv2Config.from_json_file(str(path))
    if layers is not None:
        if layers < 1:
            raise UserError(f"--layers {layers}: give at least 1")
        if speech_llm.is_speech_llm(mcfg):
            mcfg.audio_config.encoder_layers = min(layers, mcfg.audio_config.encoder_layers)
            mcfg.text_config.num_hidden_layers = min(layers, mcfg.text_config.num_hidden_layers)
            kinds = getattr(mcfg.text_config, "layer_types", None)  # per layer (sliding or full attention)
            if kinds:
                mcfg.text_config.layer_types = list(kinds)[:mcfg.text_config.num_hidden_layers]
        else:
            for name in STACK_LAYERS:
                setattr(mcfg, name, min(layers, getattr(mcfg, name)))
    if speech_llm.is_speech_llm(mcfg):
        # the rehearsal's prompts come from the family's tiny fixture processor: its audio
        # placeholder id replaces the checkpoint's (no width changes)
        fixture = _speech_llm_fixture(mcfg)
        from transformers import AutoConfig

        own = speech_llm.family(mcfg).audio_token_id(AutoConfig.from_pretrained(fixture))
        mcfg.audio_token_id = special_ids(fixture, int(mcfg.text_config.vocab_size)).get(own, own)
    return mcfg


def _json_type(path: Path):
    class _Typed:  # what speech_llm.is_speech_llm reads
        model_type = json.loads(path.read_text()).get("model_type") if path.is_file() else None
    return _Typed


def _speech_llm_fixture(mcfg) -> Path:
    return REPO_ROOT / "fixtures" / f"tiny_{speech_llm.family(mcfg).model_type}"


def model_key(mcfg, seed: int, dtype: str) -> str:
    """Cache key of a built model: its architecture, seed, dtype and the builder's version."""
    arch = mcfg.to_dict()
    for volatile in ("transformers_version", "dtype", "torch_dtype", "_name_or_path"):
        arch.pop(volatile, None)
    payload = {"config": arch, "seed": seed, "dtype": dtype, "builder": BUILDER_VERSION}
    return hashlib.sha256(config_mod.canonical(payload).encode()).hexdigest()[:16]


def build_model(mcfg, cache_root: Path, *, seed: int = 0, dtype: str = "bfloat16", log=print) -> Path:
    """Directory of the random-weight model for (``mcfg``, ``seed``, ``dtype``), built if absent.

    The build goes to a temporary sibling moved into place at the end, so a killed build is
    never taken for a finished one.
    """
    target = Path(cache_root) / f"{model_key(mcfg, seed, dtype)}"
    if (target / "BUILD_INFO.json").exists():
        return target
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    n_bytes = write_random_weights(mcfg, tmp, seed=seed, dtype=dtype)

    if speech_llm.is_speech_llm(mcfg):
        write_processor(tmp, _speech_llm_fixture(mcfg), int(mcfg.text_config.vocab_size))
    else:
        write_tokenizer(tmp, mcfg.vocab_size)
    info = {"builder": BUILDER_VERSION, "seed": seed, "dtype": dtype, "weight_bytes": n_bytes,
            "build_s": round(time.perf_counter() - t0, 1)}
    (tmp / "BUILD_INFO.json").write_text(json.dumps(info, indent=1) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    log(f"built random-weight model {target} ({n_bytes / 2**30:.2f} GiB of {dtype} weights, {info['build_s']} s)")
    return target


def _meta_model(mcfg):
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the meta build warns about layer_idx, irrelevant here
    with torch.device("meta"):
        return model_class(mcfg)(mcfg)


def write_random_weights(mcfg, directory: Path, *, seed: int, dtype: str, shard_bytes: int = SHARD_BYTES) -> int:
    """Write ``save_pretrained``-compatible safetensors shards (and config.json) of random weights.

    Every saved parameter (tied ones once, as ``save_pretrained`` does) is drawn in model order
    from one ``torch.Generator(seed)`` in ``dtype``: matrices normal(0, initializer_range),
    1-D ``weight`` ones, ``bias`` zeros, other 1-D parameters ones. Memory: one shard.
    Returns the bytes of weights written.
    """
    import torch
    from safetensors.torch import save_file

    tdtype = parse_dtype(dtype, torch.device("cpu"))
    meta = _meta_model(mcfg)
    gen = torch.Generator().manual_seed(seed)
    std = float(getattr(mcfg, "initializer_range", None) or mcfg.text_config.initializer_range)
    shards: list[dict] = [{}]
    sizes = [0]
    weight_map, total = {}, 0

    def flush(final: bool):
        if not shards[-1]:
            return
        index = len(shards)
        save_file(shards[-1], str(directory / f"part-{index:05d}.safetensors"), metadata={"format": "pt"})
        for name in shards[-1]:
            weight_map[name] = f"part-{index:05d}.safetensors"
        shards[-1] = {}
        if not final:
            shards.append({})
            sizes.append(0)

    for name, p in meta.named_parameters():
        t = torch.empty(p.shape, dtype=tdtype)
        if p.ndim >= 2:
            t.normal_(0.0, std, generator=gen)
        elif name.endswith("bias"):
            t.zero_()
        else:
            t.fill_(1.0)
        nbytes = t.numel() * t.element_size()
        if sizes[-1] and sizes[-1] + nbytes > shard_bytes:
            flush(final=False)
        shards[-1][name] = t
        sizes[-1] += nbytes
        total += nbytes
    flush(final=True)
    n = len(shards)
    # shard names follow transformers' convention so the index resolves them
    rename = {f"part-{i:05d}.safetensors": f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)}
    for old, new in rename.items():
        os.replace(directory / old, directory / new)
    index = {"metadata": {"total_size": total}, "weight_map": {k: rename[v] for k, v in sorted(weight_map.items())}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=1) + "\n")
    mcfg.dtype = tdtype
    mcfg.architectures = [type(meta).__name__]
    mcfg.save_pretrained(directory)
    return total


def _filler_pieces(n: int, taken: set[str]):
    """``n`` distinct pieces not in ``taken``: alternately Latin word pieces and CJK pairs, so
    random outputs decode to text in both scripts of the study languages."""
    out, i = [], 0
    while len(out) < n:
        j = i // 2
        if i % 2 == 0:
            word = ""
            while True:
                word = chr(ord("a") + j % 26) + word
                j = j // 26 - 1
                if j < 0:
                    break
            piece = "▁" + word
        else:
            piece = chr(CJK_FIRST + j % CJK_COUNT) + chr(CJK_FIRST + (j // CJK_COUNT) % CJK_COUNT)
        if piece not in taken:
            out.append(piece)
            taken.add(piece)
        i += 1
    return out


def write_processor(directory: Path, fixture: Path, vocab_size: int) -> None:
    """A speech LLM's processor (tokenizer with its chat template, feature extractor) and
    generation config: its tiny fixture's files, the tokenizer padded with filler pieces to
    ``vocab_size`` ids (a random model emits any id; each must decode). The fixture's own ids
    keep their meaning, so its prompts and the placeholder id are unchanged."""
    import base64

    for f in sorted(fixture.iterdir()):
        if f.is_file() and f.name not in ("config.json", "model.safetensors"):
            shutil.copy2(f, directory / f.name)
    if (directory / "tekken.json").is_file():  # Voxtral: mistral-common's Tekken
        spec = json.loads((directory / "tekken.json").read_text())
        n_special = spec["config"]["default_num_special_tokens"]
        vocab = spec["vocab"]
        taken = {base64.b64decode(v["token_bytes"]) for v in vocab}
        pieces = (p for p in _letter_pieces() if p.encode() not in taken)
        for rank in range(len(vocab), vocab_size - n_special):
            piece = next(pieces)
            vocab.append({"rank": rank, "token_bytes": base64.b64encode(piece.encode()).decode(), "token_str": piece})
        spec["config"]["num_vocab_tokens"] = len(vocab)
        spec["config"]["default_vocab_size"] = vocab_size
        (directory / "tekken.json").write_text(json.dumps(spec, ensure_ascii=False))
        return
    # byte-level BPE (Qwen2): the added (special) tokens follow the model's pieces, as in the
    # checkpoint's tokenizer, so the fillers go between them and the specials move to the end
    moved = special_ids(fixture, vocab_size)
    spec = json.loads((directory / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    pieces = (p.replace(" ", "\u0120") for p in _letter_pieces() if p.replace(" ", "\u0120") not in vocab)
    for i in range(len(vocab), vocab_size - len(moved)):
        vocab[next(pieces)] = i
    for t in spec["added_tokens"]:
        t["id"] = moved[t["id"]]
    (directory / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    tok_cfg = json.loads((directory / "tokenizer_config.json").read_text())
    tok_cfg["added_tokens_decoder"] = {str(moved[int(i)]): v for i, v in tok_cfg.get("added_tokens_decoder", {}).items()}
    (directory / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=1, ensure_ascii=False) + "\n")
    gen = json.loads((directory / "generation_config.json").read_text())
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if isinstance(gen.get(key), list):
            gen[key] = [moved.get(i, i) for i in gen[key]]
        elif gen.get(key) is not None:
            gen[key] = moved.get(gen[key], gen[key])
    (directory / "generation_config.json").write_text(json.dumps(gen, indent=1) + "\n")


def special_ids(fixture: Path, vocab_size: int) -> dict[int, int]:
    """Where a byte-level BPE fixture's added tokens go in the padded rehearsal tokenizer
    (fixture id -> id): the last ids of ``vocab_size``, in order; {} for Tekken (its specials
    come first and stay)."""
    if not (fixture / "tokenizer.json").is_file():
        return {}
    added = sorted(t["id"] for t in json.loads((fixture / "tokenizer.json").read_text())["added_tokens"])
    return {old: vocab_size - len(added) + k for k, old in enumerate(added)}


def _letter_pieces():
    """Distinct word-like pieces, " aaaa", " aaab", ...: valid in every byte-level alphabet."""
    import itertools
    import string

    for n in (4, 5):
        for letters in itertools.product(string.ascii_lowercase, repeat=n):
            yield " " + "".join(letters)


def write_tokenizer(directory: Path, vocab_size: int) -> None:
    """Tokenizer, generation config and feature extractor for a model of ``vocab_size`` tokens.

    The tiny fixture's BPE pieces (byte fallback, so any text encodes) padded with filler pieces;
    the language tokens ``__xxx__`` of the paper's languages (English and the five study
    languages, those the rehearsal runs) are the last ids, and the generation config's
    ``text_decoder_lang_to_code_id`` maps each code to its id.
    """
    from transformers import AutoFeatureExtractor, AutoTokenizer, GenerationConfig

    spec = json.loads((TINY_MODEL / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    lang_tokens = [f"__{lang}__" for lang in PAPER_LANGS]
    n_fill = vocab_size - len(vocab) - len(lang_tokens)
    if n_fill < 0:
        raise UserError(f"vocab_size {vocab_size} is below the {len(vocab) + len(lang_tokens)} tokens the "
                        "rehearsal tokenizer needs; rehearse a config with a larger vocabulary")
    base = len(vocab)
    for k, piece in enumerate(_filler_pieces(n_fill, set(vocab))):
        vocab[piece] = base + k
    first_lang = base + n_fill
    lang_ids = {}
    added = [t for t in spec["added_tokens"] if t["content"] not in lang_tokens]
    for k, token in enumerate(lang_tokens):
        lang_ids[token.strip("_")] = first_lang + k
        added.append({"id": first_lang + k, "content": token, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
    spec["added_tokens"] = added
    (directory / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    tok_cfg = json.loads((TINY_MODEL / "tokenizer_config.json").read_text())
    tok_cfg["extra_special_tokens"] = lang_tokens
    (directory / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=1) + "\n")
    tokenizer = AutoTokenizer.from_pretrained(directory)
    got = {lang: tokenizer.convert_tokens_to_ids(f"__{lang}__") for lang in lang_ids}
    if got != lang_ids or len(tokenizer) != vocab_size:
        raise RuntimeError(f"rehearsal tokenizer is inconsistent: {got} vs {lang_ids}, size {len(tokenizer)}")
    langs = list(PAPER_LANGS)
    mcfg = json.loads((directory / "config.json").read_text())
    GenerationConfig(
        decoder_start_token_id=mcfg["decoder_start_token_id"], bos_token_id=mcfg["bos_token_id"],
        eos_token_id=mcfg["eos_token_id"], pad_token_id=mcfg["pad_token_id"], max_new_tokens=256,
        text_decoder_lang_to_code_id=lang_ids,
        t2u_lang_code_to_id={lang: i for i, lang in enumerate(langs)},
        vocoder_lang_code_to_id={lang: i for i, lang in enumerate(langs)},
    ).save_pretrained(directory)
    AutoFeatureExtractor.from_pretrained(TINY_MODEL).save_pretrained(directory)


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------
#: What a rehearsal measures per stage, and how an estimate must agree with it: RAM and disk
#: within ±30 %, time within a factor of 2 (CPU). Figures too small to matter for whether a
#: machine can do the run are not judged: disk below FLOOR["disk_bytes"], time below FLOOR["time_s"].
BOUNDS = {"peak_rss_bytes": (0.7, 1.3), "disk_bytes": (0.7, 1.3), "time_s": (0.5, 2.0), "cpu_s": (0.5, 2.0)}
FLOOR = {"disk_bytes": 1 << 20, "time_s": 2.0, "cpu_s": 2.0, "peak_rss_bytes": 0}


def bf16_slowdown(d: int = 256, n: int = 1024, rows: int = 64) -> float:
    """How many times slower a bfloat16 matrix product [rows, d] x [d, n] is than a float32 one
    on this CPU (best of 3 each; a few milliseconds where bf16 is native, ~0.1 s where emulated)."""
    import time

    import torch

    def best(dtype) -> float:
        x, w = torch.randn(rows, d, dtype=dtype), torch.randn(d, n, dtype=dtype)
        x @ w
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            x @ w
            times.append(time.perf_counter() - t0)
        return max(min(times), 1e-9)
    return best(torch.bfloat16) / best(torch.float32)


def compute_type(profile_dtype: str, device: str, forced: str = "auto") -> dict:
    """The dtype a rehearsal computes in, and why (see the module docstring)."""
    if forced != "auto":
        return {"dtype": forced, "profile_dtype": profile_dtype, "reason": f"--dtype {forced}"}
    if profile_dtype != "bfloat16" or device.startswith("cuda"):
        return {"dtype": profile_dtype, "profile_dtype": profile_dtype, "reason": "the profile's"}
    slowdown = bf16_slowdown()
    if slowdown < EMULATED_BF16:
        return {"dtype": "bfloat16", "profile_dtype": profile_dtype, "bf16_slowdown": round(slowdown, 1),
                "reason": f"this CPU computes bfloat16 natively (a bf16 product is {slowdown:.1f}x an fp32 one)"}
    return {"dtype": "float32", "profile_dtype": profile_dtype, "bf16_slowdown": round(slowdown, 1),
            "reason": f"this CPU emulates bfloat16 (a bf16 product is {slowdown:.0f}x slower than fp32): computing "
                      "in float32, storing bfloat16 as the paper run does; disk and store paths are the paper's, "
                      "weights take 4 bytes per parameter in RAM instead of 2 (--dtype bfloat16 forces bf16)"}


def rehearsal_profile(profile: str, model_dir: Path, *, n_per_lang: int, overrides=None, device: str | None = None,
                      dtype: str | None = None, mcfg=None) -> dict:
    """The profile's settings with the rehearsal's substitutions (model, data, speech, sizes);
    ``dtype`` (from ``compute_type``) replaces the compute type, keeping the store's type;
    ``mcfg`` is the model's config (default: read from ``model_dir``)."""
    import torch

    cfg = config_mod.load_profile(profile, overrides)
    if dtype is not None and dtype != cfg["model"]["dtype"]:
        cfg["record"]["store_dtype"] = resolve_store_dtype(cfg["record"]["store_dtype"], cfg["model"]["dtype"])
        cfg["model"]["dtype"] = dtype
    cfg["profile"]["name"] = f"rehearse-{cfg['profile']['name']}"
    cfg["model"]["id"] = str(Path(model_dir).resolve())
    cfg["model"]["revision"] = ""
    if device is None:
        device = cfg["model"]["device"]
        if device.startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"
    cfg["model"]["device"] = device
    cfg["data"]["source"] = "embedded"
    cfg["speech"]["backend"] = "espeak"
    cfg["speech"]["voice"] = ""
    given = _given(overrides)
    if "data.n_identify" not in given:
        cfg["data"]["n_identify"] = n_per_lang
    if "data.n_steer" not in given:
        cfg["data"]["n_steer"] = n_per_lang
    # A random model never ends its output, so every generation runs to max_new_tokens, where
    # the real model's outputs end with the sentence: the rehearsal records up to the last
    # recorded step and steers STEER_TOKENS tokens (the estimate it is judged against uses the
    # same settings; --set gives any other value).
    if "record.max_new_tokens" not in given:
        cfg["record"]["max_new_tokens"] = max(cfg["record"]["steps"])
    if "steer.max_new_tokens" not in given:
        cfg["steer"]["max_new_tokens"] = min(cfg["steer"]["max_new_tokens"], STEER_TOKENS)

    _speech_llm_settings(cfg, read_config(model_dir) if mcfg is None else mcfg, given)
    config_mod.validate(cfg)
    return cfg


def _given(overrides) -> set[str]:
    """The settings ``--set`` names (``section.key``), which the rehearsal leaves as given."""
    return {o.partition("=")[0].strip() for o in (overrides or [])}


def _speech_llm_settings(cfg: dict, mcfg, given: set) -> None:
    """A speech LLM refuses languages its checkpoint does not document (Voxtral: no Chinese or
    Japanese): unless data.langs is set, keep the profile's documented ones, and unless
    steer.pairs is set and some pair remains, steer the first two both ways. Its text encoder
    (the token embedding, hidden-size wide) is its smallest neuron group: unless rank.k_sweep
    is set, the sweep keeps the ks that fit it."""
    if not speech_llm.is_speech_llm(mcfg) or "data.langs" in given:
        return
    documented = speech_llm.family(mcfg).languages
    langs = [lang for lang in cfg["data"]["langs"] if lang in documented]
    if len(langs) < 2:
        raise UserError(f"{mcfg.model_type} documents fewer than two of data.langs={cfg['data']['langs']}; set "
                        f"--set data.langs=[...] from {list(documented)}")
    cfg["data"]["langs"] = langs
    width = int(mcfg.text_config.hidden_size)
    if "rank.k_sweep" not in given:
        cfg["rank"]["k_sweep"] = [k for k in cfg["rank"]["k_sweep"] if k <= width] or [min(width, cfg["rank"]["k"])]
    if "steer.pairs" not in given and not config_mod.steering_pairs(cfg["steer"]["pairs"], langs):
        cfg["steer"]["pairs"] = [[langs[0], langs[1]], [langs[1], langs[0]]]


def _stage_in_this_process(cfg_file: str, out: str, stage: str) -> dict:
    """Run one stage (earlier ones complete) and return its own figures; the child's entry."""
    os.environ.setdefault("STEP_NEURONS_QUIET", "1")
    cfg = json.loads(Path(cfg_file).read_text())
    t_start = time.perf_counter()
    # start-up (importing torch and transformers) is a per-process constant, kept out of the stage time
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import SeamlessM4Tv2Model  # noqa: F401

    c0, t0 = cpu_seconds(), time.perf_counter()
    pipeline.run_pipeline(cfg, out=out, stages=(stage,))
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    gpu = None
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            gpu = int(torch.cuda.max_memory_allocated())
    return {"stage": stage, "time_s": round(wall, 2), "cpu_s": round(cpu, 2), "startup_s": round(t0 - t_start, 2),
            "peak_rss_bytes": peak_rss_bytes(),
            "gpu_peak_bytes": gpu}


def measure_stage(cfg_file: Path, out: Path, stage: str, *, skip: Path | None = None) -> dict:
    """Figures of one stage run in a fresh process: its wall time (inside the process, imports
    excluded), peak RSS, peak GPU memory, and the bytes it added under ``out``."""
    before = disk_usage(out, skip)
    env = {**os.environ, "STEP_NEURONS_QUIET": os.environ.get("STEP_NEURONS_QUIET", "1")}
    proc = subprocess.run([sys.executable, "-m", "engine.tools.rehearse", str(cfg_file), str(out), stage],
                          stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
    if proc.returncode != 0:
        raise UserError(f"rehearsal stage {stage} failed (exit {proc.returncode}); its error is above")
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    figures["disk_bytes"] = disk_usage(out, skip) - before
    return figures


def compare_figures(measured: dict, estimated: dict) -> dict:
    """Per figure: measured, estimated, ratio (estimated / measured) and whether it is within
    BOUNDS (None when the figure is below its FLOOR or was not measured)."""
    out = {}
    for name, (lo, hi) in BOUNDS.items():
        m, e = measured.get(name), estimated.get(name)
        ratio = None if not m or e is None else e / m
        ok = None  # not judged: not measured, or too small to matter
        if m is not None and e is not None and max(m, e) >= FLOOR[name]:
            ok = bool(ratio is not None and lo <= ratio <= hi)
        out[name] = {"measured": m, "estimated": e, "ratio": None if ratio is None else round(ratio, 3), "ok": ok}
    if measured.get("gpu_peak_bytes") is not None or estimated.get("gpu_peak_bytes") is not None:
        out["gpu_peak_bytes"] = {"measured": measured.get("gpu_peak_bytes"), "estimated": estimated.get("gpu_peak_bytes")}
    return out


def rehearse(*, config: str | None = None, layers: int | None = None, n_per_lang: int = 2, profile: str = "paper",
             overrides=None, out: str | Path = "runs", seed: int = 0, dtype: str = "auto", log=print) -> dict:
    """Build (or reuse) the model, run every stage in its own process, and compare with the estimate."""
    base_cfg = config_mod.load_profile(profile, overrides)
    out = Path(out).resolve()
    mcfg = model_config(config, layers)
    _speech_llm_settings(base_cfg, mcfg, _given(overrides))  # its errors before the build
    models = out / "cache" / "rehearsal-models"
    t0 = time.perf_counter()
    model_dir = build_model(mcfg, models, seed=seed, dtype=base_cfg["model"]["dtype"], log=log)
    build_s = time.perf_counter() - t0
    device = base_cfg["model"]["device"]
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        device = "cpu"
    compute = compute_type(base_cfg["model"]["dtype"], device, dtype)
    log(f"rehearse: computing in {compute['dtype']} ({compute['reason']})")
    cfg = rehearsal_profile(profile, model_dir, n_per_lang=n_per_lang, overrides=overrides, device=device,
                            dtype=compute["dtype"], mcfg=mcfg)
    root = out / "rehearse" / f"{model_dir.name}-n{n_per_lang}"
    shutil.rmtree(root, ignore_errors=True)  # every rehearsal measures from nothing, caches included
    root.mkdir(parents=True)
    cfg_file = root / "profile.json"  # written before measuring, so it counts in no stage
    cfg_file.write_text(json.dumps(cfg, indent=1, sort_keys=True))
    est = estimate(cfg)
    for line in est["lines"]:
        log(f"estimate: {line}")
    stages = {}
    result = {}
    for stage in STAGES:
        log(f"rehearse: stage {stage} ...")
        measured = measure_stage(cfg_file, root, stage, skip=root / "rehearsal.json")
        stages[stage] = compare_figures(measured, est["stages"][stage])
        stages[stage]["startup_s"] = measured.get("startup_s")
        log(_row(stage, stages[stage]))
        result = _summary(config, layers, model_dir, est, cfg, build_s, n_per_lang, profile, root, stages)
        result["compute"] = compute
        # progress on disk after every stage: a long rehearsal shows how far it got
        (root / "rehearsal.json").write_text(json.dumps(result, indent=1, sort_keys=True))
    return result


def _summary(config, layers, model_dir, est, cfg, build_s, n_per_lang, profile, root, stages) -> dict:
    verdicts = [f["ok"] for s in stages.values() for f in s.values() if isinstance(f, dict) and "ok" in f]
    return {"model": {"config": config or "large", "layers": layers, "dir": str(model_dir),
                      "parameters": est["parameters"], "dtype": cfg["model"]["dtype"],
                      "build_s": round(build_s, 1)},
            "device": cfg["model"]["device"], "n_per_lang": n_per_lang, "profile": profile, "out": str(root),
            "settings": {"data": cfg["data"], "record": cfg["record"], "rank": cfg["rank"], "steer": cfg["steer"],
                         "speech": cfg["speech"]["backend"]},
            "assumptions": est["assumptions"], "calibration": est["calibration"], "stages": dict(stages),
            "within_bounds": all(v for v in verdicts if v is not None)}


def _fmt(name: str, value) -> str:
    if value is None:
        return "-"
    if name in ("time_s", "cpu_s"):
        return f"{value:.1f} s"
    return f"{value / 2**20:.0f} MiB" if value < 2**30 else f"{value / 2**30:.2f} GiB"


def _row(stage: str, figs: dict) -> str:
    cells = []
    for name in ("time_s", "cpu_s", "peak_rss_bytes", "disk_bytes", "gpu_peak_bytes"):
        f = figs.get(name)
        if f is None:
            continue
        ratio = f.get("ratio")
        mark = {True: "ok", False: "OUT", None: "n/j"}[f.get("ok")] if "ok" in f else ""
        cells.append(f"{name.split('_')[0] if name != 'gpu_peak_bytes' else 'gpu'} {_fmt(name, f['measured'])} "
                     f"(est {_fmt(name, f['estimated'])}{'' if ratio is None else f', x{ratio:.2f}'} {mark})")
    return f"{stage:8s} " + " | ".join(cells)


def rehearse_arguments(parser) -> None:
    parser.description = (
        "Build (once, cached under OUT/cache/rehearsal-models) a random-weight SeamlessM4T v2 or speech LLM "
        "with the exact architecture of a config, run every stage of the profile's pipeline on it in separate "
        "processes, and print per stage wall time, peak RSS (and GPU memory on CUDA) and bytes written "
        "beside what `engine estimate` predicts. Substitutions, so it runs offline here: the embedded "
        "corpus instead of FLEURS, espeak-ng speech instead of XTTS v2 (coqui-tts), a synthetic tokenizer "
        "of the config's vocabulary size (a speech LLM: its tiny fixture's processor; the study languages its "
        "checkpoint documents), and CPU when the profile's CUDA device is absent. Random weights "
        "never end a sentence, so recording stops at the last recorded step and steering after "
        f"{STEER_TOKENS} tokens (--set record.max_new_tokens=N / steer.max_new_tokens=N to change). "
        "On a CPU that emulates bfloat16 (bf16 products measured many times slower than fp32) it computes "
        "in float32 and stores bfloat16, so disk and store paths are the paper run's and only the weights' "
        "RAM doubles (--dtype to force a type); the choice is printed. "
        "Last line: one JSON object of the figures.")
    parser.add_argument("--config", default=None,
                        help="architecture: 'large' (default, SeamlessM4Tv2Config()), 'qwen2-audio' or 'voxtral' (the "
                             "speech LLM checkpoints' pinned configs) or a model directory / config.json")
    parser.add_argument("--layers", type=int, default=None,
                        help="cut every stack (speech/text encoder, decoder, t2u; a speech LLM's audio encoder and LM) "
                             "to N layers, widths unchanged")
    parser.add_argument("--n-per-lang", type=int, default=2,
                        help="sentences per language, for identification and again held out for steering (default 2)")
    parser.add_argument("--profile", default="paper", help="profile whose code path and settings to rehearse (default paper)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a profile setting, e.g. --set rank.n_boot=10 (repeatable)")
    parser.add_argument("--out", default="runs", help="output root (default runs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    parser.add_argument("--dtype", choices=("auto", "bfloat16", "float32"), default="auto",
                        help="compute type: auto (default) = the profile's, but float32 (storing bfloat16) on a CPU "
                             "that emulates bfloat16; or force one")


def rehearse_command(args) -> int:
    if args.n_per_lang < 1:
        raise UserError(f"--n-per-lang {args.n_per_lang}: give at least 1")
    result = rehearse(config=args.config, layers=args.layers, n_per_lang=args.n_per_lang, profile=args.profile,
                      overrides=args.overrides, out=args.out, seed=args.seed, dtype=args.dtype,
                      log=lambda msg: print(msg, flush=True))
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":  # one stage in a fresh process: python -m engine.tools.rehearse CFG OUT STAGE
    print(json.dumps(_stage_in_this_process(*sys.argv[1:4])))
