"""Speech for the speech tasks: synthesis backends behind one interface, an atomic on-disk cache,
waveform loading, and SeamlessM4T input features.

Backends (all return float32 mono 16 kHz):

- ``espeak``: espeak-ng, offline and deterministic for a given text and espeak-ng version. It is
  given each sentence's *reading* (pinyin for Mandarin, kana for Japanese; see languages.py).
- ``xtts``: coqui-tts XTTS v2 with one fixed built-in speaker for every language (the paper's
  setup). coqui-tts is imported only when this backend is first used.
- ``natural``: the recorded FLEURS audio of each sentence, looked up by (language, text) in a
  local directory of extracted FLEURS audio (an option the paper names as future work).

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
import io
import json
import os
import shutil
import subprocess
import warnings
import wave
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path
from typing import Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np
from scipy.io import wavfile
from scipy.signal import resample_poly

from engine.errors import UserError
from engine.files import Damaged, atomic_write_bytes, atomic_write_json, file_digest, note, os_error_message, read_json
from engine.pipeline.inputs.corpus import Sentence
from engine.science.languages import get_language

SAMPLE_RATE = 16_000
BACKENDS = ("espeak", "xtts", "natural")
_TTS_INSTALL = "pip install 'step-neurons[tts]'"


# ----------------------------------------------------------------------------- waveforms

def resample(waveform: np.ndarray, orig_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling of a 1-D signal; float32 out, unchanged when the rates agree."""
    waveform = np.asarray(waveform, dtype=np.float32)
    if orig_rate == target_rate:
        return waveform
    g = gcd(int(orig_rate), int(target_rate))
    return resample_poly(waveform, target_rate // g, orig_rate // g).astype(np.float32)


def _to_float_mono(data: np.ndarray) -> np.ndarray:
    if data.dtype == np.uint8:
        data = (data.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1)
    return data


def load_waveform(path: str | os.PathLike) -> np.ndarray:
    """Read a WAV file as float32 mono at 16 kHz, shape [n_samples].

    Integer PCM is scaled to [-1, 1), channels are averaged, other rates are resampled.
    Raises UserError naming the file when it is missing, unreadable, truncated or empty.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # scipy only warns when the data ends before its header says: the file is truncated
            warnings.filterwarnings("error", message="(Reached EOF prematurely|Incomplete chunk)",
                                    category=wavfile.WavFileWarning)
            rate, data = wavfile.read(path)
    except wavfile.WavFileWarning as exc:
        raise UserError(f"audio file {path} is truncated ({exc}): replace it with a whole copy "
                        f"(a cached synthesis: delete it and rerun)") from None
    except FileNotFoundError:
        raise UserError(f"audio file {path} does not exist: rerun synthesis to recreate it") from None
    except Exception as exc:  # scipy raises ValueError and friends for malformed files
        raise UserError(f"audio file {path} is unreadable ({exc}): delete it and rerun synthesis, "
                        f"or replace it with a valid WAV file") from None
    waveform = resample(_to_float_mono(data), rate)
    if waveform.size == 0:
        raise UserError(f"audio file {path} holds no samples: delete it and rerun synthesis")
    return waveform


def _write_wav_atomic(path: Path, waveform: np.ndarray) -> dict:
    """Write a float32 16 kHz WAV atomically, then its record; returns the record.

    The record ``{"size", "sha256", "n_samples"}`` goes to ``record_path(path)`` after the wav, so
    a wav with a record is always whole. A full disk is a UserError with the disk-full line.
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    buffer = io.BytesIO()
    wavfile.write(buffer, SAMPLE_RATE, waveform)
    data = buffer.getvalue()
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


# ----------------------------------------------------------------------------- backends

class SpeechBackend(Protocol):
    """What the cache needs from a synthesiser."""

    name: str

    def voice(self, lang: str) -> str:
        """Voice identifier used for ``lang`` (part of the cache key)."""

    def version(self) -> str:
        """Version string of the synthesiser (part of the cache key)."""

    def input_text(self, sentence: Sentence, lang: str) -> str:
        """What this backend reads aloud for ``sentence`` in ``lang``."""

    def synthesize(self, text: str, lang: str) -> np.ndarray:
        """float32 mono 16 kHz waveform of ``text`` spoken in ``lang``; raises on failure."""


def _check_text(text: str, lang: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"empty text for language {lang}: give every sentence a non-empty text")


class EspeakBackend:
    """espeak-ng through its command line; reads ``Sentence.readings``.

    ``variant`` (the profile's ``speech.voice``): one of espeak-ng's voice variants (``f2``,
    ``m3``, ``klatt``, ... as ``espeak-ng --voices=variant`` lists them), appended to every
    language's voice as ``de+f2``; empty for the language's own voice.
    """

    name = "espeak"

    def __init__(self, binary: str = "espeak-ng", variant: str = ""):
        self.binary = binary
        self.variant = variant
        self._version: str | None = None

    def _executable(self) -> str:
        found = shutil.which(self.binary)
        if found is None:
            raise UserError(f"espeak-ng binary {self.binary!r} not found on PATH: install it "
                            f"(apt-get install espeak-ng) or choose another speech backend")
        return found

    def voice(self, lang: str) -> str:
        base = get_language(lang).espeak_voice
        return f"{base}+{self.variant}" if self.variant else base

    def variants(self) -> list[str]:
        """The variant names this espeak-ng knows (an unknown one is silently ignored by it)."""
        out = subprocess.run([self._executable(), "--voices=variant"], capture_output=True, text=True,
                             check=True).stdout
        return sorted(tok.removeprefix("!v/") for line in out.splitlines()[1:] for tok in line.split()
                      if tok.startswith("!v/"))

    def version(self) -> str:
        if self._version is None:
            out = subprocess.run([self._executable(), "--version"], capture_output=True,
                                 text=True, check=True).stdout
            self._version = out.split("Data at")[0].strip()
        return self._version

    def input_text(self, sentence: Sentence, lang: str) -> str:
        reading = sentence.readings.get(lang)
        if reading is None:
            reading = reading_for_espeak(sentence.texts[lang], lang)
        return reading

    def synthesize(self, text: str, lang: str) -> np.ndarray:
        _check_text(text, lang)
        voice = self.voice(lang)
        # Text goes through stdin so a leading "-" is never taken for an option.
        proc = subprocess.run([self._executable(), "-v", voice, "--stdout"], input=text.encode("utf-8"),
                              capture_output=True)
        stderr = proc.stderr.decode("utf-8", "replace").strip()
        # espeak-ng exits 0 even for an unknown voice; an empty stdout is the failure signal.
        if proc.returncode != 0 or len(proc.stdout) <= 44 or stderr.startswith("Error"):
            raise RuntimeError(f"espeak-ng -v {voice} failed (exit {proc.returncode}): {stderr or 'no audio'}")
        with wave.open(io.BytesIO(proc.stdout)) as wav:
            rate, width, channels = wav.getframerate(), wav.getsampwidth(), wav.getnchannels()
            # espeak-ng streams with a placeholder length; readframes stops at the real end.
            frames = wav.readframes(wav.getnframes())
        if width != 2:
            raise RuntimeError(f"espeak-ng produced {8 * width}-bit audio; expected 16-bit PCM")
        data = np.frombuffer(frames, dtype="<i2").reshape(-1, channels)
        waveform = resample(_to_float_mono(data), rate)
        if waveform.size == 0:
            raise RuntimeError(f"espeak-ng -v {voice} produced no samples")
        return waveform


def reading_for_espeak(text: str, lang: str) -> str:
    """Reading espeak-ng can pronounce for arbitrary ``text`` (used for FLEURS sentences).

    Latin-script languages are read as written. Mandarin needs tone-numbered pinyin (package
    ``pypinyin``) and Japanese kana (package ``pykakasi``); both are optional and imported here
    only, because the embedded corpus carries hand-written readings and needs neither.
    """
    info = get_language(lang)
    _check_text(text, lang)
    if info.reading == "text":
        return text
    if info.reading == "pinyin":
        try:
            from pypinyin import Style, lazy_pinyin
        except ImportError:
            raise UserError(f"espeak-ng cannot read Hanzi ({lang}): pip install pypinyin, "
                            f"or use the xtts or natural speech backend") from None
        syllables = lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True)
        return " ".join(s.strip() for s in syllables if s.strip())
    if info.reading == "kana":
        try:
            import pykakasi
        except ImportError:
            raise UserError(f"espeak-ng cannot read kanji ({lang}): pip install pykakasi, "
                            f"or use the xtts or natural speech backend") from None
        return " ".join(item["hira"] for item in pykakasi.kakasi().convert(text) if item["hira"].strip())
    raise AssertionError(f"unhandled reading kind {info.reading!r}")


class XTTSBackend:
    """coqui-tts XTTS v2, one fixed built-in speaker for every language.

    ``tts_factory`` builds the synthesiser (default: ``TTS.api.TTS(model_name)``); tests pass a
    stand-in to exercise this class without the package or its weights.
    """

    name = "xtts"
    MODEL_NAME = "tts_models/multilingual/multi-dataset/xtts_v2"
    DEFAULT_SPEAKER = "Claribel Dervla"
    LANGUAGE_CODES = {"eng": "en", "deu": "de", "spa": "es", "fra": "fr", "cmn": "zh-cn", "jpn": "ja"}

    def __init__(self, speaker: str = DEFAULT_SPEAKER, *, device: str = "cpu",
                 tts_factory: Callable[[], object] | None = None):
        self.speaker = speaker
        self.device = device
        self._factory = tts_factory
        self._tts = None

    def _model(self):
        if self._tts is None:
            factory = self._factory or self._default_factory
            self._tts = factory()
        return self._tts

    def _default_factory(self):
        try:
            from TTS.api import TTS
        except ImportError:
            raise UserError(f"the xtts speech backend needs coqui-tts, which is not installed: "
                            f"{_TTS_INSTALL} (or use --speech espeak)") from None
        if os.environ.get("COQUI_TOS_AGREED") != "1":
            # coqui asks interactively otherwise, which hangs a batch run
            raise UserError("XTTS v2 weights are under the Coqui Public Model License: read it, then "
                            "set COQUI_TOS_AGREED=1 to accept it and let coqui-tts download the model")
        return TTS(self.MODEL_NAME).to(self.device)

    def voice(self, lang: str) -> str:
        return f"{self.speaker}@{self._language_code(lang)}"

    def _language_code(self, lang: str) -> str:
        get_language(lang)
        return self.LANGUAGE_CODES[lang]

    def version(self) -> str:
        try:
            from importlib.metadata import PackageNotFoundError, version
            return f"coqui-tts {version('coqui-tts')} {self.MODEL_NAME}"
        except PackageNotFoundError:
            return f"coqui-tts (not installed) {self.MODEL_NAME}"

    def input_text(self, sentence: Sentence, lang: str) -> str:
        return sentence.texts[lang]

    def synthesize(self, text: str, lang: str) -> np.ndarray:
        _check_text(text, lang)
        tts = self._model()
        waveform = np.asarray(tts.tts(text=text, speaker=self.speaker,
                                      language=self._language_code(lang)), dtype=np.float32)
        rate = int(getattr(getattr(tts, "synthesizer", None), "output_sample_rate", 24_000))
        waveform = resample(waveform.reshape(-1), rate)
        if waveform.size == 0:
            raise RuntimeError("XTTS produced no samples")
        return waveform


class NaturalBackend:
    """The recorded FLEURS audio: ``audio_index[(lang, text)]`` is the path of the recording.

    Build the index with ``NaturalBackend.from_fleurs(...)`` (engine.pipeline.inputs.fleurs), which maps each
    selected sentence to ``<audio_root>/<config>/audio/<split>/<audio file>`` as extracted from
    the dataset's ``audio/<split>.tar.gz``.
    """

    name = "natural"

    def __init__(self, audio_index: Mapping[tuple[str, str], str | os.PathLike]):
        self.audio_index = dict(audio_index)

    @classmethod
    def from_fleurs(cls, selection, audio_root) -> "NaturalBackend":
        from engine.pipeline.inputs.fleurs import natural_audio_index
        return cls(natural_audio_index(selection, audio_root))

    def voice(self, lang: str) -> str:
        return "fleurs-recording"

    def version(self) -> str:
        return "fleurs"

    def input_text(self, sentence: Sentence, lang: str) -> str:
        return sentence.texts[lang]

    def synthesize(self, text: str, lang: str) -> np.ndarray:
        _check_text(text, lang)
        try:
            path = self.audio_index[(lang, text)]
        except KeyError:
            raise RuntimeError(f"no FLEURS recording indexed for this {lang} sentence") from None
        return load_waveform(path)


def make_backend(name: str, **options) -> SpeechBackend:
    """Backend by name: "espeak" | "xtts" | "natural" (options go to its constructor)."""
    if name == "espeak":
        return EspeakBackend(**options)
    if name == "xtts":
        return XTTSBackend(**options)
    if name == "natural":
        if "audio_index" not in options:
            raise UserError("the natural speech backend needs the FLEURS audio: give audio_index "
                            "(see NaturalBackend.from_fleurs) built from a local audio directory")
        return NaturalBackend(**options)
    raise UserError(f"unknown speech backend {name!r}: use one of {' '.join(BACKENDS)}")


# ----------------------------------------------------------------------------- cache

@dataclass(frozen=True)
class SpeechRequest:
    item_id: str     # e.g. the sentence id
    lang: str
    text: str        # exactly what the backend reads


@dataclass(frozen=True)
class SynthesisFailure:
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
        _check_text(request.text, request.lang)
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


# ----------------------------------------------------------------------------- features

def speech_features(waveforms: Sequence[np.ndarray], feature_extractor, fixed_frames: int | None = None):
    """SeamlessM4T input features of a batch of 16 kHz mono waveforms.

    Returns a dict with ``input_features`` float32 tensor [B, T, 160] (80-bin fbank stacked in
    pairs, stride 2) and ``attention_mask`` int64 tensor [B, T] (1 on real frames). Without
    ``fixed_frames`` T is the longest example's length; with it every example is truncated or
    zero-padded (mask 0 on padding) to exactly ``fixed_frames`` frames.
    """
    import torch

    if len(waveforms) == 0:
        raise UserError("speech_features got an empty batch: give at least one waveform")
    arrays = []
    for i, waveform in enumerate(waveforms):
        array = np.asarray(waveform, dtype=np.float32)
        if array.ndim != 1 or array.size == 0:
            raise UserError(f"waveform {i} has shape {array.shape}: give 1-D non-empty 16 kHz mono audio")
        arrays.append(array)
    if fixed_frames is not None and (not isinstance(fixed_frames, int) or fixed_frames < 1):
        raise UserError(f"fixed_frames={fixed_frames!r} is invalid: give a positive integer or None")
    out = feature_extractor(arrays, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True,
                            return_attention_mask=True)
    features = out["input_features"].to(torch.float32)
    mask = out["attention_mask"].to(torch.int64)
    if fixed_frames is not None:
        length = features.shape[1]
        if length >= fixed_frames:
            features, mask = features[:, :fixed_frames], mask[:, :fixed_frames]
        else:
            pad = fixed_frames - length
            features = torch.nn.functional.pad(features, (0, 0, 0, pad))
            mask = torch.nn.functional.pad(mask, (0, pad))
    return {"input_features": features.contiguous(), "attention_mask": mask.contiguous()}
