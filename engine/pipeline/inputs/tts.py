"""Speech synthesisers behind one interface (``SpeechBackend``), chosen by name with ``make_backend``.

Every backend returns float32 mono 16 kHz waveforms, shape [n_samples]:

- ``espeak``: espeak-ng, offline and deterministic for a given text and espeak-ng version. It is
  given each sentence's *reading* (pinyin for Mandarin, kana for Japanese; see languages.py).
- ``xtts``: coqui-tts XTTS v2 with one fixed built-in speaker for every language (the paper's
  setup). coqui-tts is an optional dependency, imported only when this backend is first used.
- ``natural``: the recorded FLEURS audio of each sentence, looked up by (language, text) in a
  local directory of extracted FLEURS audio (an option the paper names as future work).

A backend's name, voice and version are part of the speech cache's key (engine.pipeline.inputs.speech).
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import wave
from pathlib import Path
from typing import Callable, Mapping, Protocol

import numpy as np

from engine.errors import UserError
from engine.files import sha256_file
from engine.pipeline.inputs.corpus import Sentence
from engine.pipeline.inputs.fleurs import natural_audio_index
from engine.pipeline.inputs.wav import load_waveform, resample, to_float_mono
from engine.science.languages import get_language

BACKENDS = ("espeak", "xtts", "natural")
_TTS_INSTALL = "pip install 'step-neurons[tts]'"


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


def check_text(text: str, lang: str) -> None:
    """Raise UserError unless ``text`` is a string with a non-blank character (``lang`` names it)."""
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
        check_text(text, lang)
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
        waveform = resample(to_float_mono(data), rate)
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
    check_text(text, lang)
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
    """coqui-tts XTTS v2, one fixed speaker for every language: a built-in speaker, or a voice cloned
    from a reference recording when ``speaker`` is the path of a WAV file (the authors clone one
    reference recording: their utils/xtts_vc.py, ``speaker_wav``).

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

    def _reference(self) -> Path | None:
        """The WAV a voice is cloned from, or None for a built-in speaker."""
        path = Path(self.speaker)
        return path if path.suffix.lower() == ".wav" and path.is_file() else None

    def voice(self, lang: str) -> str:
        reference = self._reference()
        # a cloned voice is named by its recording's content, so the cache follows the recording
        name = f"clone:{sha256_file(reference)[:16]}" if reference else self.speaker
        return f"{name}@{self._language_code(lang)}"

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
        check_text(text, lang)
        tts = self._model()
        reference = self._reference()
        voice = {"speaker_wav": str(reference)} if reference else {"speaker": self.speaker}
        waveform = np.asarray(tts.tts(text=text, language=self._language_code(lang), **voice), dtype=np.float32)
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
        return cls(natural_audio_index(selection, audio_root))

    def voice(self, lang: str) -> str:
        return "fleurs-recording"

    def version(self) -> str:
        return "fleurs"

    def input_text(self, sentence: Sentence, lang: str) -> str:
        return sentence.texts[lang]

    def synthesize(self, text: str, lang: str) -> np.ndarray:
        check_text(text, lang)
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
