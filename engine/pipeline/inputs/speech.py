"""The speech cache: one 16 kHz WAV per (backend, voice, text), synthesised once and checked on every reuse.

``synthesize_sentences`` is what the speech stage calls: every (sentence, language) of a selection
through one backend (engine.pipeline.inputs.tts) into ``<cache_dir>``.

Cache layout: ``<cache_dir>/<backend>/<key[:2]>/<key>.wav`` (float32 WAV, 16 kHz) where ``key``
is the sha256 of (backend, voice, input text, sample rate, backend version), and beside it
``<key>.json`` with the wav's size, sha256 and sample count. Both are written to a temporary
name and moved into place with ``os.replace``, the record last, so an interrupted run leaves
only complete files and a rerun synthesises exactly what is missing. A wav counts as cached only
when it matches its record: a damaged one (truncated, altered) is synthesised again, with one
line naming it; a wav without a record (an interrupted write, an older cache) is synthesised
again quietly. A sentence whose synthesis fails is appended to ``<cache_dir>/failures.jsonl``
with its reason and reported in the result; it is never silently skipped.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from engine.errors import UserError
from engine.files import Damaged, atomic_write_bytes, atomic_write_json, file_digest, note, os_error_message, read_json
from engine.pipeline.inputs.corpus import Sentence
from engine.pipeline.inputs.tts import SpeechBackend, check_text
from engine.pipeline.inputs.wav import SAMPLE_RATE, wav_bytes
from engine.science.languages import get_language

# ----------------------------------------------------------------------------- cached files


def _write_wav_atomic(path: Path, waveform: np.ndarray) -> dict:
    """Write ``waveform`` as a float32 16 kHz WAV atomically, then its record; returns the record.

    The record ``{"size", "sha256", "n_samples"}`` goes to ``record_path(path)`` after the wav, so
    a wav with a record is always whole. A full disk is a UserError with the disk-full line.
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    data = wav_bytes(waveform)
    record = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "n_samples": int(waveform.size)}
    record_path(path).unlink(missing_ok=True)  # the old record must never vouch for the new wav
    atomic_write_bytes(path, data)
    atomic_write_json(record_path(path), record)
    return record


def record_path(wav: Path) -> Path:
    """Where the size, sha256 and sample count of a cached wav are kept."""
    return Path(wav).with_suffix(".json")


def cache_problem(wav: Path, record: dict | None = None) -> str | None:
    """Why the cached ``wav`` cannot be trusted, or None when it matches ``record``.

    ``record`` defaults to the one stored beside the wav. Returns "" (no problem to report, yet
    not trusted) when the wav or its record is absent: a plain cache miss.
    """
    wav = Path(wav)
    if not wav.exists():
        return ""
    if record is None:
        if not record_path(wav).exists():
            return ""
        try:
            record = read_json(record_path(wav), "cache record")
        except Damaged as exc:
            return f"its record {exc.path.name} {exc.problem}"
        if not isinstance(record, dict):
            return f"its record {record_path(wav).name} is not a cache record"
    actual = file_digest(wav)
    if actual["size"] != record.get("size"):
        return f"{actual['size']} bytes, not the {record.get('size')} written"
    if actual["sha256"] != record.get("sha256"):
        return "sha256 differs from what was written"
    return None


# ----------------------------------------------------------------------------- synthesis

@dataclass(frozen=True)
class SpeechRequest:
    """One utterance to have in the cache: ``text`` read in ``lang``, reported under ``(item_id, lang)``."""

    item_id: str     # e.g. the sentence id
    lang: str
    text: str        # exactly what the backend reads


@dataclass(frozen=True)
class SynthesisFailure:
    """A request whose synthesis raised; ``reason`` is ``"<exception type>: <message>"``."""

    item_id: str
    lang: str
    text: str
    reason: str


@dataclass
class SynthesisResult:
    """Outcome of ``synthesize``: paths of the audio that exists, and what failed and why."""

    paths: dict[tuple[str, str], str] = field(default_factory=dict)   # (item_id, lang) -> wav
    records: dict[str, dict] = field(default_factory=dict)            # wav -> {size, sha256, n_samples}
    failures: list[SynthesisFailure] = field(default_factory=list)
    n_synthesized: int = 0
    n_cached: int = 0

    def failure_counts(self) -> dict[str, int]:
        """Failed items per language (languages without failures omitted)."""
        counts: dict[str, int] = {}
        for failure in self.failures:
            counts[failure.lang] = counts.get(failure.lang, 0) + 1
        return counts


def cache_key(backend: SpeechBackend, lang: str, text: str) -> str:
    """sha256 hex of (backend, voice, text, sample rate, backend version)."""
    payload = json.dumps([backend.name, backend.voice(lang), text, SAMPLE_RATE, backend.version()],
                         ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def cache_path(cache_dir: str | os.PathLike, backend: SpeechBackend, lang: str, text: str) -> Path:
    """Where the wav of ``text`` in ``lang`` by ``backend`` lives: ``<cache_dir>/<backend>/<key[:2]>/<key>.wav``."""
    key = cache_key(backend, lang, text)
    return Path(cache_dir) / backend.name / key[:2] / f"{key}.wav"


def synthesize(requests: Iterable[SpeechRequest], backend: SpeechBackend, cache_dir: str | os.PathLike,
               *, progress: Callable[[int, int], None] | None = None) -> SynthesisResult:
    """Make sure every request has a cached 16 kHz WAV; synthesise only what is missing.

    A cached wav is reused only when it matches the size and sha256 recorded when it was
    written; a damaged one is synthesised again, with one line naming it. A request whose
    synthesis raises is recorded (result.failures and a line in ``<cache_dir>/failures.jsonl``)
    and left out of ``result.paths``; the others proceed.
    UserError (a missing binary or package, bad input that affects every item) propagates.
    ``progress(done, total)`` is called after each request.
    """
    requests = list(requests)
    for request in requests:
        get_language(request.lang)
        check_text(request.text, request.lang)
    cache_dir = Path(cache_dir)
    result = SynthesisResult()
    for done, request in enumerate(requests, 1):
        path = cache_path(cache_dir, backend, request.lang, request.text)
        problem = cache_problem(path)
        if problem:
            note(f"speech cache {path} is damaged ({problem}); synthesising it again")
        if problem is None:
            result.n_cached += 1
            result.records[str(path)] = read_json(record_path(path))
        else:
            try:
                waveform = backend.synthesize(request.text, request.lang)
            except UserError:
                raise
            except Exception as exc:  # one bad sentence must not sink the run: record and go on
                failure = SynthesisFailure(request.item_id, request.lang, request.text,
                                           f"{type(exc).__name__}: {exc}")
                result.failures.append(failure)
                _record_failure(cache_dir, backend, failure)
                if progress:
                    progress(done, len(requests))
                continue
            result.records[str(path)] = _write_wav_atomic(path, waveform)
            result.n_synthesized += 1
        result.paths[(request.item_id, request.lang)] = str(path)
        if progress:
            progress(done, len(requests))
    return result


def _record_failure(cache_dir: Path, backend: SpeechBackend, failure: SynthesisFailure) -> None:
    """Append ``failure`` as one JSON line to ``<cache_dir>/failures.jsonl``; an OS error is a UserError."""
    line = json.dumps({"backend": backend.name, "voice": backend.voice(failure.lang),
                       "item_id": failure.item_id, "lang": failure.lang, "text": failure.text,
                       "reason": failure.reason}, ensure_ascii=False)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with open(cache_dir / "failures.jsonl", "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    except OSError as exc:
        raise UserError(os_error_message(cache_dir / "failures.jsonl", exc)) from exc


def synthesize_sentences(sentences: Sequence[Sentence], langs: Sequence[str], backend: SpeechBackend,
                         cache_dir: str | os.PathLike, **kwargs) -> SynthesisResult:
    """``synthesize`` for every (sentence, lang), keyed by (sentence_id, lang)."""
    requests = [SpeechRequest(s.sentence_id, lang, backend.input_text(s, lang))
                for s in sentences for lang in langs]
    return synthesize(requests, backend, cache_dir, **kwargs)
