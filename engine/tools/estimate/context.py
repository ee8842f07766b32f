"""What the stage costs read: the run's ``Plan``, every figure measured for it, the inputs'
lengths, and the model's compute per batch (``Context``), built by ``measured_context``.

Every cost is a pair ``[CPU seconds, device seconds]`` (``seconds``): device seconds are the
model's arithmetic (and, for an assumed GPU, its per-step overheads), GPU seconds on a CUDA run;
on a CPU run they are CPU seconds too and are added to the first entry at the end
(``cost.launch``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from transformers.utils import logging as hf_logging

from engine.errors import UserError
from engine.tools.estimate import calibrate
from engine.tools.estimate.assumptions import (
    ASSUMED_ESPEAK,
    ASSUMED_GPU,
    AUDIO_SECONDS,
    PROMPT_TOKENS,
    TEXT_TOKENS,
    assumed_gpu_costs,
)
from engine.tools.estimate.measure import stage_process_rss
from engine.tools.estimate.shape import Plan, model_config, plan_run, prompt_widths


def seconds(cpu: float = 0.0, dev: float = 0.0) -> np.ndarray:
    """The cost pair ``[CPU seconds, device seconds]``."""
    return np.array([cpu, dev], dtype=float)


def batches(n_rows: int, B: int) -> list[int]:
    """Sizes of the batches of ``B`` that ``n_rows`` rows make, the last one short."""
    return [min(B, n_rows - i) for i in range(0, n_rows, B)] if n_rows else []


@dataclass(frozen=True)
class Context:
    """A run's ``plan`` with what was measured for it: ``cal`` (``calibrate.measure_all``'s
    figures but espeak-ng's, plus ``preflight_s``, ``process_rss_bytes``, ``recorder`` and, for a
    speech LLM, ``prompt_tokens``), ``espeak`` (measured, or assumed when the sentences are not
    known offline; None without espeak-ng), seconds per multiply-accumulate ``mm`` and
    ``generate``'s framework seconds ``gen`` (measured, or the stated GPU's), and the inputs'
    lengths: audio seconds per sentence by language, speech-encoder frames of a batch (the
    longest utterance's; a speech LLM's whole window), text tokens per sentence, and a speech
    LLM's prompt tokens by modality (0 for SeamlessM4T)."""
    plan: Plan
    cal: dict
    espeak: dict | None
    mm: dict
    gen: dict
    audio_s: dict[str, float]
    max_frames: float
    tokens: float
    prompt_tokens: dict[str, float]

    @property
    def rec(self) -> dict:
        """The recorder's own costs (``calibrate.recorder``)."""
        return self.cal["recorder"]

    @property
    def preflight_s(self) -> float:
        """CPU seconds of every stage process's preflight."""
        return self.cal["preflight_s"]

    @property
    def base_rss(self) -> int:
        """Resident bytes of a fresh stage process."""
        return self.cal["process_rss_bytes"]

    @property
    def ap_speedup(self) -> float:
        """Exact AP and the bootstrap on the run's GPU against here: 1 unless the GPU is assumed."""
        return ASSUMED_GPU["ap_speedup"] if self.plan.gpu_assumed else 1.0

    @property
    def load_s(self) -> float:
        """CPU seconds of loading the model: a model directory's fixed cost, and reading the
        weights' bytes once (faster than hashing them)."""
        return self.rec["load_s"] + self.plan.weight_bytes * self.cal["sha256_s_per_byte"] * 0.5

    # ---- model compute per batch of B examples ------------------------------------------------
    def framework(self, s: float) -> np.ndarray:
        """``generate``'s per-step overheads of ``s`` seconds: device seconds on an assumed GPU."""
        return seconds(dev=s) if self.plan.gpu_assumed else seconds(cpu=s)

    def further_layers_s(self) -> np.ndarray:
        """``generate``'s framework cost per step of the decoder layers beyond the recorder
        fixture's 2 (the recorder calibration pays for those)."""
        return self.framework(self.gen["layer_s"] * max(0, self.plan.shape["dec_layers"] - 2))

    def encode_s(self, modality: str, B: int) -> np.ndarray:
        """Encoder arithmetic plus the recorder's own per-batch cost (features, hooks, copies)."""
        shape = self.plan.shape
        fixed = self.rec[f"{modality}_batch_s"] * B / self.plan.recorder_batch
        if modality == "speech":
            T = self.max_frames
            attn = 2 * T * T * shape["speech_width"] * shape["speech_layers"]
            projector = shape["p_projector"] * shape["projector_positions"]
            return seconds(fixed, (shape["p_speech"] * T + attn + projector) * B * self.mm["encode"])
        return seconds(fixed, shape["p_text"] * self.tokens * 1.3 * B * self.mm["encode"])

    def prefill_s(self, B: int, modality: str) -> np.ndarray:
        """A decoder-only LM's pass over the prompt before its first new token (none otherwise)."""
        shape = self.plan.shape
        P = self.prompt_tokens[modality]
        return seconds(dev=(shape["p_dec"] * P + 2 * P * P * shape["d_model"] * shape["dec_layers"]) * B
                       * self.mm["encode"])

    def decode_s(self, B: int, n_new: int, modality: str) -> np.ndarray:
        """Greedy decoding of ``n_new`` tokens for ``B`` examples, after the prefill."""
        shape = self.plan.shape
        T_enc = self.max_frames / 8 if modality == "speech" else self.tokens
        if shape["decoder_only"]:  # self-attention over the prompt instead of cross-attention to an encoder
            T_enc = self.prompt_tokens[modality]
        per_step = ((shape["p_dec"] + shape["p_lm"]) * B * self.mm["decode"][B]
                    + 2 * B * T_enc * shape["d_model"] * shape["dec_layers"] * self.mm["encode"])
        # framework cost per step: the recorder's generate on the 2-layer fixture, plus the
        # measured cost of every further decoder layer
        return self.prefill_s(B, modality) + n_new * (seconds(self.rec[f"{modality}_step_s"], per_step)
                                                      + self.further_layers_s())

    def forced_s(self, B: int, width_tokens: int, modality: str = "text") -> np.ndarray:
        """The teacher-forced pass over ``width_tokens`` decoder positions for ``B`` examples."""
        shape = self.plan.shape
        # a decoder-only LM's teacher-forced pass reads its prompt again
        width_tokens = width_tokens + self.prompt_tokens[modality]
        return seconds(dev=shape["p_dec"] * B * width_tokens * self.mm["encode"]) + self.further_layers_s()


def texts(plan: Plan) -> dict[str, list[str]] | None:
    """The selected sentences' texts by language, when they are known offline."""
    if plan.sel is None:
        return None
    return {lang: [s.texts[lang] for s in plan.sel.sentences] for lang in plan.langs}


def mean_chars(plan: Plan) -> dict[str, float]:
    """Mean characters of a sentence by language (120 when the sentences are not known)."""
    by_lang = texts(plan)
    if by_lang is None:
        return {lang: 120.0 for lang in plan.langs}
    return {lang: float(np.mean([len(t) for t in by_lang[lang]])) for lang in plan.langs}


def audio_seconds(plan: Plan, espeak: dict | None) -> dict[str, float]:
    """Seconds of speech per sentence by language: espeak-ng's measured seconds per character
    times the length of what it reads (the texts' mean length when its readings are unknown), or
    the source's stated duration."""
    sel, chars = plan.sel, mean_chars(plan)
    if plan.backend == "espeak" and espeak:
        readings = {lang: [espeak["backend"].input_text(s, lang) for s in sel.sentences] for lang in plan.langs} if (
            sel and espeak["backend"]) else None
        return {lang: (float(np.mean([len(r) for r in readings[lang]])) if readings else chars[lang])
                * espeak["audio_s_per_char"][lang] for lang in plan.langs}
    return {lang: AUDIO_SECONDS.get(plan.cfg["data"]["source"], 12.0) for lang in plan.langs}


def measured_context(cfg: dict, nodes: int, gpus_per_node: int) -> Context:
    """The ``Context`` of a run of ``cfg`` on ``nodes`` x ``gpus_per_node`` ranks: its model built
    on the meta device and every calibration measured here, in the order an estimate has always
    run them. Raises ``UserError`` when the model's config cannot be read without network."""
    hf_logging.set_verbosity_error()  # the meta build warns about layer_idx, irrelevant here
    mcfg, source = model_config(cfg)
    if mcfg is None:
        raise UserError(f"cannot estimate for model '{cfg['model']['id']}' without its config; "
                        "set model.id to a local directory holding config.json")
    model, cat, preflight_s = calibrate.preflight(mcfg, cfg["definitions"]["modules"])
    cal: dict = {"preflight_s": preflight_s, "process_rss_bytes": stage_process_rss()}
    p = plan_run(cfg, nodes, gpus_per_node, mcfg, source, model, cat)
    cal.update(calibrate.measure_all(p))
    espeak = cal.pop("espeak")
    if p.backend == "espeak" and espeak is None and p.sel is None:  # FLEURS: nothing to time before the data stage
        espeak = {"s_per_utterance": ASSUMED_ESPEAK["s_per_utterance"],
                  "audio_s_per_char": {lang: ASSUMED_ESPEAK["audio_s_per_char"] for lang in p.langs}, "backend": None}
    if p.gpu_assumed:  # cannot measure the run's GPU here: assume one (stated in the output)
        mm, gen = assumed_gpu_costs(p.wbytes, p.decode_batches or {1})
    else:
        mm, gen = dict(cal["matmul_s_per_mac"]), dict(cal["generate"])

    audio_s = audio_seconds(p, espeak)
    cal["recorder"] = calibrate.recorder(p.recorder_batch, float(np.mean(list(audio_s.values()))), p.shape["fixture"])
    max_frames = max(audio_s.values()) * 50 * 1.15  # a batch pads to its longest utterance
    tokens = TEXT_TOKENS if p.sel is None else min(TEXT_TOKENS * 2, max(mean_chars(p).values()) / 2.5 + 2)
    if p.decoder_only:
        # a speech LLM's audio encoder always runs on its whole window; the LM reads the prompt:
        # the instruction and chat template, then the projector's positions or the text's tokens
        max_frames = p.shape["window_frames"]
        widths = cal["prompt_tokens"] = prompt_widths(cfg, mcfg, texts(p), p.shape["fixture"])
        prompt_tokens = {"speech": widths["speech_fixed"] + widths["speech_per_s"] * max(audio_s.values()) * 1.15,
                         "text": widths["text"] if widths["text"] is not None else PROMPT_TOKENS + tokens}
    else:
        prompt_tokens = {"speech": 0.0, "text": 0.0}
    return Context(plan=p, cal=cal, espeak=espeak, mm=mm, gen=gen, audio_s=audio_s, max_frames=max_frames,
                   tokens=tokens, prompt_tokens=prompt_tokens)
