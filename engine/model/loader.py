"""One loaded SeamlessM4T (v1 or v2) serving all four tasks (S2T, T2T, ASR, TR).

``load_model`` accepts a Hugging Face id or a local directory saved with ``save_pretrained``;
the tiny fixture (``fixtures/tiny_model``) and the real model go through the same code. The
model family is read from the checkpoint's ``config.json`` (``model_type``): ``seamless_m4t``
loads ``SeamlessM4TModel`` (v1 medium and large), ``seamless_m4t_v2`` ``SeamlessM4Tv2Model``;
nothing the user sets has to agree with it.

Attention runs transformers' ``sdpa`` implementation, pinned. The speech encoder hands its
attention a boolean (batch, 1, T, T) mask (padding and attention chunks); ``sdpa`` applies it
(``torch.where(mask, position_bias, min)``), while ``eager`` adds it to the scores as 0/1, so
padded frames keep most of their weight: a padded utterance's valid frames then change with the
padding (tiny fixture: 0.96 after the conformer). Other implementations are refused too
(``check_attention``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.errors import UserError
from engine.files import REPO_ROOT
from engine.model import speech_llm
from engine.model.speech_llm.shape import INSTRUCTIONS
from engine.science.languages import check_langs, check_model_languages

TINY_MODEL_DIR = REPO_ROOT / "fixtures" / "tiny_model"


#: config.model_type -> transformers model class name
FAMILIES = {"seamless_m4t": "SeamlessM4TModel", "seamless_m4t_v2": "SeamlessM4Tv2Model"}


def model_family(config) -> str:
    """``config.model_type`` of a supported config: SeamlessM4T (``"seamless_m4t"``,
    ``"seamless_m4t_v2"``) or a speech LLM of engine.model.speech_llm (``"qwen2_audio"``,
    ``"voxtral"``); UserError for any other model type."""
    family = getattr(config, "model_type", None)
    if family not in FAMILIES and not speech_llm.is_speech_llm(config):
        raise UserError(f"model type '{family}' is not supported; use a checkpoint of model type "
                        f"{', '.join((*FAMILIES, *speech_llm.FAMILIES))} (e.g. facebook/seamless-m4t-v2-large, "
                        "Qwen/Qwen2-Audio-7B-Instruct, mistralai/Voxtral-Mini-3B-2507)")
    return family


def model_class(config):
    """The transformers class that builds the whole model of ``config``'s family."""
    import transformers

    family = model_family(config)
    if speech_llm.is_speech_llm(config):
        return getattr(transformers, speech_llm.family(config).class_name)
    return getattr(transformers, FAMILIES[family])


def read_config(model_id: str | os.PathLike, revision: str | None = None):
    """The config of a local model directory or a cached Hub id, in its own family's class
    (no weights). UserError when it cannot be read or is not a supported config (engine.model.loader.model_family)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(model_id), revision=revision)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the config of '{model_id}': {str(exc).splitlines()[0][:200]}; "
                        "pass a directory saved with save_pretrained or a cached Hub id") from None
    model_family(config)
    return config


@dataclass
class LoadedModel:
    """A SeamlessM4T model (v1 or v2) in eval mode with its tokenizer and feature extractor."""

    model: object
    tokenizer: object
    feature_extractor: object
    model_id: str
    revision: str | None
    device: torch.device
    dtype: torch.dtype

    def lang_token_id(self, lang: str) -> int:
        """Token id of ``__{lang}__`` (``lang`` like ``"deu"``); UserError if the vocabulary lacks it."""
        code = lang.strip("_")
        table = getattr(self.model.generation_config, "text_decoder_lang_to_code_id", None) or {}
        token_id = self.tokenizer.convert_tokens_to_ids(f"__{code}__")
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise UserError(f"language '{code}' has no token __{code}__ in the tokenizer of {self.model_id}")
        if code in table and table[code] != token_id:
            raise UserError(
                f"language '{code}': tokenizer id {token_id} differs from generation_config "
                f"text_decoder_lang_to_code_id {table[code]} in {self.model_id}"
            )
        return int(token_id)

    @property
    def family(self) -> str:
        """``"seamless_m4t"`` (v1) or ``"seamless_m4t_v2"``."""
        return model_family(self.model.config)

    def pieces(self, text: str) -> list[str]:
        """``text`` as the tokenizer's SentencePiece pieces, no special tokens ("▁" marks a word start),
        as the authors' control rate counts them (utils/codemix_seamless_regex_metrics.py)."""
        return self.tokenizer.convert_ids_to_tokens(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_as_loaded(self, text: str) -> list[int]:
        """``encode(text)`` of a freshly loaded tokenizer, as the authors' data loader tokenizes
        text (selfcond/data.py ``pre_process_sequence``). SeamlessM4T's tokenizer ends its
        ``__init__`` in its *target* template, so a fresh one's ``encode`` gives
        ``[</s>, __eng__, ..., </s>]`` for every language (transformers 4.44, the authors', and 5.x
        alike); a call with ``src_lang`` (as this project's own) switches it to ``[__xx__, ..., </s>]``
        for good. A separate instance, never called, keeps the fresh state."""
        if getattr(self, "_as_loaded", None) is None:
            from transformers import AutoTokenizer

            self._as_loaded = AutoTokenizer.from_pretrained(self.tokenizer.name_or_path, revision=self.revision)
        return list(self._as_loaded.encode(text))

    def check_languages(self, codes) -> None:
        """UserError unless every code is a language of engine.science.languages that this
        model's text decoder generates, with the same token id in tokenizer and
        generation_config (checked at load time, before any example runs)."""
        table = getattr(self.model.generation_config, "text_decoder_lang_to_code_id", None) or {}
        check_model_languages(codes, table, self.model_id)
        for code in codes:
            self.lang_token_id(code)


@dataclass
class LoadedSpeechLLM:
    """A speech LLM of engine.model.speech_llm in eval mode with its processor, serving all four tasks
    by instruction (``instructions``: task -> text, ``{target}`` = the target language's name)."""

    model: object
    processor: object
    model_id: str
    revision: str | None
    device: torch.device
    dtype: torch.dtype
    instructions: dict
    #: decoder-only: step t reads the prompt's last position + t - 1 (engine.model.speech_llm)
    decoder_only = True

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def feature_extractor(self):
        return self.processor.feature_extractor

    @property
    def family(self) -> str:
        return model_family(self.model.config)

    def pieces(self, text: str) -> list[str]:
        """``text`` as the tokenizer's tokens, each decoded to its own text (byte-level BPE keeps a
        CJK character's bytes in one token or spreads them; decoding shows what a token writes)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return [self.tokenizer.decode([i]) for i in ids]

    def check_languages(self, codes) -> None:
        """UserError unless every code is a language of engine.science.languages that the family's
        checkpoint documents (``Family.languages``): a speech LLM has no language tokens to check,
        so its documented languages are what validates ``data.langs``."""
        check_langs(codes)
        documented = speech_llm.family(self.model.config).languages
        missing = [c for c in codes if c not in documented]
        if missing:
            raise UserError(f"language(s) {', '.join(missing)} are not documented for {self.family} "
                            f"({self.model_id}); its languages are {', '.join(documented)}: set data.langs "
                            "and steer.pairs within them")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU; bf16 on CUDA when supported, else fp16."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
           "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


def parse_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise UserError(f"dtype '{dtype}' is not one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


ATTENTION = "sdpa"


def check_attention(model) -> None:
    """UserError unless every attention of ``model`` runs ``ATTENTION`` (see module doc).

    Reads ``config._attn_implementation`` of the model and of every submodule carrying a config,
    since implementations can be set per submodule.
    """
    found = {getattr(getattr(m, "config", None), "_attn_implementation", None) for m in model.modules()}
    found.discard(None)
    wrong = sorted(found - {ATTENTION})
    if wrong:
        raise UserError(f"attention implementation {', '.join(map(repr, wrong))} is not supported: only "
                        f"'{ATTENTION}' masks the speech encoder's padded frames; load the model with "
                        f"attn_implementation='{ATTENTION}' (engine.model.loader.load_model does)")


def _restore_byte_fallback(tokenizer) -> None:
    # transformers 5 rebuilds SeamlessM4TTokenizer's BPE with byte_fallback=False even when the
    # vocabulary carries sentencepiece's <0x00>..<0xFF> pieces; without them unseen characters
    # would become <unk>. The real model's vocabulary has no byte pieces, so this is a no-op there.
    backend = getattr(tokenizer, "_tokenizer", None)
    model = getattr(backend, "model", None)
    if model is None or getattr(model, "byte_fallback", True):
        return
    vocab = backend.get_vocab(with_added_tokens=False)
    if "<0x00>" not in vocab or "<0xFF>" not in vocab:
        return
    import json

    from tokenizers import decoders
    from tokenizers.models import BPE

    state = json.loads(backend.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    backend.model = BPE(vocab=state["vocab"], merges=merges, unk_token=state.get("unk_token"),
                        fuse_unk=bool(state.get("fuse_unk", True)), byte_fallback=True, dropout=None)
    # sentencepiece-style decoding (as for Llama): spaces back, bytes to characters, one leading space off
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])


def load_model(model_id: str | os.PathLike, *, device: str | torch.device = "cpu",
               dtype: str | torch.dtype | None = None, revision: str | None = None,
               attn_implementation: str = ATTENTION, langs=None, instructions=None):
    """Load the model (its family's class, from config.json) + tokenizer + feature extractor
    once, for every task.

    ``model_id`` is a local directory or a Hub id (read from the local cache when offline).
    ``dtype`` defaults to fp32 on CPU and bf16 on CUDA. Raises ``UserError`` naming the id, what
    was tried and how to provide the weights when the model cannot be loaded.
    ``attn_implementation`` must be ``"sdpa"`` (see module doc); another is a UserError.
    ``langs``: language codes the run will use, checked against the model's text-decoder
    languages and tokenizer (:meth:`LoadedModel.check_languages`).
    A speech LLM (engine.model.speech_llm) loads as a :class:`LoadedSpeechLLM` with its processor;
    ``instructions`` (task -> prompt) default to ``engine.model.speech_llm.shape.INSTRUCTIONS``.
    """
    from transformers import AutoConfig, AutoFeatureExtractor, AutoTokenizer

    if attn_implementation != ATTENTION:
        raise UserError(f"attn_implementation '{attn_implementation}' is not supported: only '{ATTENTION}' "
                        "masks the speech encoder's padded frames (transformers' eager adds its boolean "
                        f"mask to the scores as 0/1); use '{ATTENTION}'")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{device}' requested but torch.cuda.is_available() is False; use --device cpu")
    dtype = parse_dtype(dtype, device)
    name = str(model_id)
    local = Path(name).expanduser()
    is_local = local.is_dir()
    if not is_local and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise UserError(f"model directory '{name}' does not exist; pass an existing directory saved with "
                        "save_pretrained, or a Hugging Face id such as facebook/seamless-m4t-v2-large")
    source = str(local) if is_local else name
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get(
        "TRANSFORMERS_OFFLINE", "") not in ("", "0")
    try:
        config = AutoConfig.from_pretrained(source, revision=revision)
        if speech_llm.is_speech_llm(config):
            return _load_speech_llm(config, source, name, revision, device, dtype, attn_implementation, langs,
                                    instructions)
        model = model_class(config).from_pretrained(source, revision=revision, dtype=dtype,
                                                    attn_implementation=attn_implementation)
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
        feature_extractor = AutoFeatureExtractor.from_pretrained(source, revision=revision)
    except (OSError, ValueError, EnvironmentError) as exc:
        tried = f"local directory {local}" if is_local else (
            f"the Hugging Face cache{' (offline: HF_HUB_OFFLINE=1)' if offline else ' and the Hub'} "
            f"for '{name}'{f' at revision {revision}' if revision else ''}")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot load model '{name}': tried {tried}: {first[:300]}. Provide the weights: download "
            f"them on a machine with access (`huggingface-cli download {name}`) into the HF cache or "
            "a directory, then pass that directory; the offline tiny model is fixtures/tiny_model"
        ) from None
    if "text_decoder_lang_to_code_id" not in (model.generation_config.to_dict() or {}):
        raise UserError(f"model '{name}' has no generation_config.text_decoder_lang_to_code_id; "
                        "it cannot generate text for a target language")
    check_attention(model)
    _restore_byte_fallback(tokenizer)
    model.to(device).eval()
    lm = LoadedModel(model=model, tokenizer=tokenizer, feature_extractor=feature_extractor,
                     model_id=name, revision=revision, device=device, dtype=dtype)
    if langs is not None:
        lm.check_languages(langs)
    return lm


def _load_speech_llm(config, source, name, revision, device, dtype, attn_implementation, langs, instructions):
    from transformers import AutoProcessor

    model = model_class(config).from_pretrained(source, revision=revision, dtype=dtype,
                                                attn_implementation=attn_implementation)
    processor = AutoProcessor.from_pretrained(source, revision=revision)
    processor.tokenizer.padding_side = "left"
    check_attention(model)
    model.to(device).eval()
    lm = LoadedSpeechLLM(model=model, processor=processor, model_id=name, revision=revision, device=device,
                         dtype=dtype, instructions=dict(instructions or INSTRUCTIONS))
    if langs is not None:
        lm.check_languages(langs)
    return lm
