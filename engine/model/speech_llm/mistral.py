"""Voxtral's prompts, built as ``VoxtralProcessor`` builds them with mistral-common (Tekken).

S2T, T2T and TR: one user turn through the processor's ``apply_chat_template`` (the audio or the
sentence, then the instruction). The processor takes audio only as a file, URL or base64 payload,
so each waveform is handed over as a 32-bit float WAV: its features then equal the feature
extractor's on the array itself (a 16-bit WAV would round them).

ASR: Voxtral's own transcription mode, ``apply_transcription_request`` with the utterance's
language (``lang:xx[TRANSCRIBE]``); the ASR instruction setting is not used. That call writes
the array as a 16-bit WAV itself, so ASR's audio reaches the encoder rounded to 16 bits, while
S2T's does not: their audio encoder values differ by that rounding (the record stage keeps S2T's).
"""
from __future__ import annotations

import base64
import io

import numpy as np

from engine.errors import UserError
from engine.science.languages import get_language


def _wav64(waveform) -> str:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(waveform, dtype=np.float32).reshape(-1), 16000, format="WAV", subtype="FLOAT")
    return base64.b64encode(buffer.getvalue()).decode()


def voxtral_prompts(processor, items, instructions):
    # ASR (engine.model.recorder.task_of): speech whose output language is its own
    asr = [item.modality == "speech" and item.lang == item.tgt_lang for item in items]
    processor.tokenizer.padding_side = "left"
    if any(asr):
        if not all(asr):
            raise UserError("a Voxtral batch mixes ASR with other tasks; batch ASR on its own")
        waves = [np.asarray(item.waveform, dtype=np.float32).reshape(-1) for item in items]
        return processor.apply_transcription_request(
            audio=waves, model_id=processor.tokenizer.name_or_path or "voxtral", sampling_rate=16000,
            format=["wav"] * len(waves), language=[get_language(item.lang).fasttext_label for item in items])
    convs = []
    for item, instruction in zip(items, instructions):
        if item.modality == "speech":
            first = {"type": "audio", "base64": _wav64(item.waveform)}
        else:
            first = {"type": "text", "text": item.text}
        convs.append([{"role": "user", "content": [first, {"type": "text", "text": instruction}]}])
    return processor.apply_chat_template(convs)
