"""Speech backends, the synthesis cache, waveform loading and SeamlessM4T features (fixtures/speech_features.py)."""
import importlib.util
import json
import re
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from engine.errors import UserError
from engine.pipeline.inputs.corpus import embedded_corpus
from engine.pipeline.inputs.speech import SpeechRequest, cache_key, synthesize, synthesize_sentences
from engine.pipeline.inputs.tts import EspeakBackend, NaturalBackend, XTTSBackend, make_backend, reading_for_espeak
from engine.pipeline.inputs.wav import SAMPLE_RATE, load_waveform, resample
from tests.helpers import assert_close_to_oracle

# fixtures/ is not a package: load the fixture builders' feature helper by its path
_spec = importlib.util.spec_from_file_location(
    "speech_features", Path(__file__).resolve().parents[1] / "fixtures" / "speech_features.py")
_features = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_features)
speech_features = _features.speech_features

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
LANGS6 = ("eng", "deu", "spa", "fra", "cmn", "jpn")


class ToneBackend:
    """Deterministic stand-in synthesiser: a tone whose length follows the text; counts calls,
    fails on texts containing FAIL, raises KeyboardInterrupt on texts containing STOP."""

    name = "tone"

    def __init__(self):
        self.calls = []

    def voice(self, lang):
        return f"tone-{lang}"

    def version(self):
        return "1"

    def input_text(self, sentence, lang):
        return sentence.readings[lang]

    def synthesize(self, text, lang):
        self.calls.append((text, lang))
        if "FAIL" in text:
            raise RuntimeError("cannot pronounce FAIL")
        if "STOP" in text:
            raise KeyboardInterrupt
        t = np.arange(800 * len(text)) / SAMPLE_RATE
        return (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _requests(texts, lang="deu"):
    return [SpeechRequest(f"id{i}", lang, text) for i, text in enumerate(texts)]


# ----------------------------------------------------------------------------- espeak

@needs_espeak
@pytest.mark.parametrize("lang, unit, lo, hi", [
    ("eng", "char", 0.03, 0.15), ("deu", "char", 0.03, 0.15), ("spa", "char", 0.03, 0.15),
    ("fra", "char", 0.03, 0.15), ("cmn", "syllable", 0.15, 0.5), ("jpn", "char", 0.07, 0.3)])
def test_espeak_every_language_16k_plausible_duration(lang, unit, lo, hi):
    backend = EspeakBackend()
    for sentence in embedded_corpus(6, seed=11):
        reading = backend.input_text(sentence, lang)
        waveform = backend.synthesize(reading, lang)
        assert waveform.dtype == np.float32 and waveform.ndim == 1
        assert 0.05 < np.abs(waveform).max() <= 1.0
        units = len(reading.split()) if unit == "syllable" else len(re.sub(r"[\s.。,]", "", reading))
        seconds = waveform.size / SAMPLE_RATE
        assert lo < seconds / units < hi, (lang, reading, seconds)


@needs_espeak
def test_espeak_is_resampled_to_16k():
    """espeak-ng speaks at 22050 Hz: the output length must be the 16 kHz equivalent."""
    import io
    import subprocess
    import wave
    raw = subprocess.run(["espeak-ng", "-v", "de", "--stdout", "Guten Morgen."], capture_output=True).stdout
    with wave.open(io.BytesIO(raw)) as wav:
        rate, n = wav.getframerate(), len(wav.readframes(wav.getnframes())) // 2
    out = EspeakBackend().synthesize("Guten Morgen.", "deu")
    assert rate == 22050
    assert abs(out.size - n * SAMPLE_RATE / rate) <= 1


@needs_espeak
def test_espeak_deterministic_and_leading_dash():
    backend = EspeakBackend()
    a, b = backend.synthesize("-5 Grad heute.", "deu"), backend.synthesize("-5 Grad heute.", "deu")
    np.testing.assert_array_equal(a, b)


def test_espeak_missing_binary_is_user_error():
    with pytest.raises(UserError, match=r"espeak-ng binary 'no-such-espeak' not found .*apt-get install espeak-ng"):
        EspeakBackend(binary="no-such-espeak").synthesize("Hallo.", "deu")


@needs_espeak
@pytest.mark.parametrize("text, lang, match", [
    ("", "deu", "empty text for language deu"), ("   ", "jpn", "empty text for language jpn"),
    ("Hallo", "xx", "unknown language code 'xx'")])
def test_espeak_bad_input(text, lang, match):
    with pytest.raises(UserError, match=match):
        EspeakBackend().synthesize(text, lang)


def test_reading_for_fleurs_cjk_needs_optional_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pypinyin", None)
    monkeypatch.setitem(sys.modules, "pykakasi", None)
    with pytest.raises(UserError, match="pip install pypinyin"):
        reading_for_espeak("我们", "cmn")
    with pytest.raises(UserError, match="pip install pykakasi"):
        reading_for_espeak("私は", "jpn")
    assert reading_for_espeak("Hola.", "spa") == "Hola."


def test_reading_for_fleurs_cmn_uses_tone3_pinyin(monkeypatch):
    fake = types.ModuleType("pypinyin")
    fake.Style = types.SimpleNamespace(TONE3="tone3")
    fake.lazy_pinyin = lambda text, style, neutral_tone_with_five: (
        ["wo3", "men5", "。"] if (style, neutral_tone_with_five) == ("tone3", True) else [])
    monkeypatch.setitem(sys.modules, "pypinyin", fake)
    assert reading_for_espeak("我们。", "cmn") == "wo3 men5 。"


# ----------------------------------------------------------------------------- cache

def test_cache_hit_on_rerun(tmp_path):
    backend = ToneBackend()
    first = synthesize(_requests(["eins", "zwei", "drei"]), backend, tmp_path)
    assert (first.n_synthesized, first.n_cached, len(backend.calls)) == (3, 0, 3)
    second = synthesize(_requests(["eins", "zwei", "drei"]), backend, tmp_path)
    assert (second.n_synthesized, second.n_cached, len(backend.calls)) == (0, 3, 3)
    assert second.paths == first.paths
    np.testing.assert_array_equal(load_waveform(first.paths[("id1", "deu")]),
                                  ToneBackend().synthesize("zwei", "deu"))


@needs_espeak
def test_espeak_cache_hit_on_rerun(tmp_path, monkeypatch):
    sentences = embedded_corpus(2, seed=0)
    first = synthesize_sentences(sentences, ("cmn", "jpn"), EspeakBackend(), tmp_path)
    assert first.n_synthesized == 4
    monkeypatch.setattr(EspeakBackend, "synthesize", lambda *a: pytest.fail("synthesised on rerun"))
    second = synthesize_sentences(sentences, ("cmn", "jpn"), EspeakBackend(), tmp_path)
    assert (second.n_synthesized, second.n_cached) == (0, 4) and second.paths == first.paths


def test_cache_key_covers_backend_voice_text_version():
    base = ToneBackend()
    other_version = ToneBackend()
    other_version.version = lambda: "2"
    keys = {cache_key(base, "deu", "a"), cache_key(base, "deu", "b"), cache_key(base, "fra", "a"),
            cache_key(other_version, "deu", "a")}
    assert len(keys) == 4
    assert cache_key(base, "deu", "a") == cache_key(ToneBackend(), "deu", "a")


def test_interrupted_synthesis_resumes(tmp_path):
    backend = ToneBackend()
    texts = ["eins", "zwei", "STOP drei", "vier"]
    with pytest.raises(KeyboardInterrupt):
        synthesize(_requests(texts), backend, tmp_path)
    assert not list(tmp_path.rglob("*.tmp"))
    assert len(list(tmp_path.rglob("*.wav"))) == 2
    backend.calls.clear()
    texts[2] = "drei"
    result = synthesize(_requests(texts), backend, tmp_path)
    assert backend.calls == [("drei", "deu"), ("vier", "deu")]
    assert (result.n_cached, result.n_synthesized) == (2, 2)


def test_write_is_atomic(tmp_path, monkeypatch):
    def broken_write(handle, rate, data):
        handle.write(b"RIFF partial")
        raise OSError("disk full")

    monkeypatch.setattr(wavfile, "write", broken_write)  # the module engine.pipeline.inputs.wav writes with
    with pytest.raises(OSError, match="disk full"):
        synthesize(_requests(["eins"]), ToneBackend(), tmp_path)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_failed_sentence_recorded_and_excluded(tmp_path):
    result = synthesize(_requests(["eins", "FAIL zwei", "drei"]), ToneBackend(), tmp_path)
    assert set(result.paths) == {("id0", "deu"), ("id2", "deu")}
    assert result.failure_counts() == {"deu": 1}
    assert result.failures[0].item_id == "id1" and "cannot pronounce FAIL" in result.failures[0].reason
    lines = [json.loads(l) for l in (tmp_path / "failures.jsonl").read_text(encoding="utf-8").splitlines()]
    assert lines == [{"backend": "tone", "voice": "tone-deu", "item_id": "id1", "lang": "deu",
                      "text": "FAIL zwei", "reason": "RuntimeError: cannot pronounce FAIL"}]


def test_bad_requests_rejected_before_any_synthesis(tmp_path):
    backend = ToneBackend()
    with pytest.raises(UserError, match="empty text for language deu"):
        synthesize(_requests(["eins", ""]), backend, tmp_path)
    with pytest.raises(UserError, match="unknown language code 'de'"):
        synthesize(_requests(["eins"], lang="de"), backend, tmp_path)
    assert backend.calls == []


def test_make_backend_names():
    assert isinstance(make_backend("espeak"), EspeakBackend)
    assert isinstance(make_backend("xtts"), XTTSBackend)
    with pytest.raises(UserError, match="unknown speech backend 'festival'"):
        make_backend("festival")
    with pytest.raises(UserError, match="natural speech backend needs the FLEURS audio"):
        make_backend("natural")


# ----------------------------------------------------------------------------- waveforms

def test_load_waveform_int16_stereo_8k(tmp_path):
    left = (np.sin(np.linspace(0, 60, 8000)) * 16000).astype(np.int16)
    stereo = np.stack([left, left // 2], axis=1)
    wavfile.write(tmp_path / "a.wav", 8000, stereo)
    out = load_waveform(tmp_path / "a.wav")
    expected = resample((left.astype(np.float32) + (left // 2).astype(np.float32)) / 2 / 32768, 8000)
    assert out.dtype == np.float32 and out.shape == (16000,)
    assert_close_to_oracle(out, expected, what="resampled stereo")


def test_resample_keeps_frequency():
    rate = 22050
    tone = np.sin(2 * np.pi * 440 * np.arange(rate) / rate)
    out = resample(tone, rate)
    assert out.shape == (SAMPLE_RATE,)
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) - 440) <= 1       # 1 s of audio: bin index == Hz


@pytest.mark.parametrize("content, match", [(b"not a wav file at all", "is unreadable"), (None, "does not exist")])
def test_load_waveform_bad_file(tmp_path, content, match):
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=rf"audio file .*bad\.wav {match}"):
        load_waveform(path)


# ----------------------------------------------------------------------------- features

@pytest.fixture(scope="module")
def extractor():
    from transformers import SeamlessM4TFeatureExtractor
    return SeamlessM4TFeatureExtractor()


def _noise(n, seed):
    return np.random.default_rng(seed).normal(0, 0.1, n).astype(np.float32)


def test_feature_shapes_and_mask(extractor):
    out = speech_features([_noise(16000, 0), _noise(8000, 1)], extractor)
    assert out["input_features"].shape == (2, 49, 160) and out["input_features"].dtype.is_floating_point
    assert out["attention_mask"].tolist()[1] == [1] * 24 + [0] * 25
    # batching does not change an example's real frames (oracle: the example alone)
    alone = speech_features([_noise(8000, 1)], extractor)["input_features"][0]
    assert_close_to_oracle(out["input_features"][1, :24].numpy(), alone.numpy(), what="batched features")


def test_fixed_frames_truncate_and_pad(extractor):
    batch = [_noise(16000, 0), _noise(8000, 1)]
    free = speech_features(batch, extractor)
    short = speech_features(batch, extractor, fixed_frames=10)
    assert short["input_features"].shape == (2, 10, 160)
    np.testing.assert_array_equal(short["input_features"].numpy(), free["input_features"][:, :10].numpy())
    assert short["attention_mask"].sum().item() == 20
    long = speech_features(batch, extractor, fixed_frames=60)
    assert long["input_features"].shape == (2, 60, 160)
    assert long["attention_mask"].sum(1).tolist() == [49, 24]
    assert not long["input_features"][:, 49:].any()


@pytest.mark.parametrize("batch, fixed, match", [
    ([], None, "empty batch"), ([np.zeros((2, 10), np.float32)], None, "waveform 0 has shape"),
    ([np.zeros(0, np.float32)], None, "waveform 0 has shape"), ([np.zeros(1600, np.float32)], 0, "fixed_frames=0")])
def test_feature_bad_input(extractor, batch, fixed, match):
    with pytest.raises(UserError, match=match):
        speech_features(batch, extractor, fixed_frames=fixed)


# ----------------------------------------------------------------------------- xtts, natural

class FakeTTS:
    def __init__(self):
        self.calls = []
        self.synthesizer = types.SimpleNamespace(output_sample_rate=24000)

    def tts(self, text, language, speaker=None, speaker_wav=None):
        self.calls.append((text, speaker or speaker_wav, language))
        return list(np.zeros(24000, dtype=np.float32))     # 1 s at 24 kHz


def test_xtts_control_flow_without_weights(tmp_path):
    fake = FakeTTS()
    built = []
    backend = XTTSBackend(tts_factory=lambda: built.append(1) or fake)
    sentences = embedded_corpus(2, seed=0)
    result = synthesize_sentences(sentences, LANGS6, backend, tmp_path)
    assert built == [1]                                          # model built once, lazily
    assert result.n_synthesized == 12 and not result.failures
    assert {speaker for _, speaker, _ in fake.calls} == {XTTSBackend.DEFAULT_SPEAKER}
    assert [lang for _, _, lang in fake.calls[:6]] == ["en", "de", "es", "fr", "zh-cn", "ja"]
    assert fake.calls[4][0] == sentences[0].texts["cmn"]         # XTTS reads the text, not the reading
    assert load_waveform(result.paths[(sentences[0].sentence_id, "jpn")]).shape == (SAMPLE_RATE,)
    again = synthesize_sentences(sentences, LANGS6, XTTSBackend(tts_factory=lambda: pytest.fail("rebuilt")), tmp_path)
    assert again.n_cached == 12


def test_xtts_clones_a_reference_recording_and_keys_the_cache_by_its_content(tmp_path):
    """speech.voice = a WAV path: XTTS clones it (the authors' speaker_wav); its bytes name the voice."""
    reference = tmp_path / "reference.wav"
    reference.write_bytes(b"RIFF one recording")
    fake = FakeTTS()
    backend = XTTSBackend(str(reference), tts_factory=lambda: fake)
    sentences = embedded_corpus(1, seed=0)
    synthesize_sentences(sentences, ["deu"], backend, tmp_path / "cache")
    assert fake.calls == [(sentences[0].texts["deu"], str(reference), "de")]
    before = backend.voice("deu")
    assert before.startswith("clone:") and before.endswith("@de")
    reference.write_bytes(b"RIFF another recording")
    assert backend.voice("deu") != before                      # another recording, another cache entry
    assert XTTSBackend("Claribel Dervla").voice("deu") == "Claribel Dervla@de"


def test_xtts_missing_package_is_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "TTS", None)
    monkeypatch.setitem(sys.modules, "TTS.api", None)
    with pytest.raises(UserError, match=r"coqui-tts, which is not installed: pip install 'step-neurons\[tts\]'"):
        XTTSBackend().synthesize("Hallo.", "deu")


@pytest.mark.network
def test_xtts_real_synthesis():
    pytest.importorskip("TTS")
    waveform = XTTSBackend().synthesize("Guten Morgen, wie geht es dir?", "deu")
    assert waveform.dtype == np.float32 and 0.5 < waveform.size / SAMPLE_RATE < 10


def test_natural_backend_reads_recordings(tmp_path):
    recording = (np.sin(np.linspace(0, 100, 16000)) * 10000).astype(np.int16)
    wavfile.write(tmp_path / "rec.wav", 16000, recording)
    backend = NaturalBackend({("deu", "Hallo Welt."): tmp_path / "rec.wav"})
    result = synthesize(_requests(["Hallo Welt.", "Nicht da."]), backend, tmp_path / "cache")
    assert list(result.paths) == [("id0", "deu")]
    assert "no FLEURS recording" in result.failures[0].reason
    np.testing.assert_allclose(load_waveform(result.paths[("id0", "deu")]), recording / 32768, atol=1e-6)


def test_fleurs_style_mandarin_and_japanese_get_readings_espeak_can_speak(tmp_path):
    """Real pypinyin / pykakasi (the `cjk` extra): Hanzi become tone-numbered pinyin, kanji kana."""
    zh = reading_for_espeak("我们今天在公园学习英语。", "cmn")
    ja = reading_for_espeak("私は毎日東京で本を読みます。", "jpn")
    assert zh.startswith("wo3 men5 jin1 tian1") and not any("\u4e00" <= ch <= "\u9fff" for ch in zh)
    assert "とうきょう" in ja and not any("\u4e00" <= ch <= "\u9fff" for ch in ja)
    backend = EspeakBackend()
    for text, lang in ((zh, "cmn"), (ja, "jpn")):
        audio = backend.synthesize(text, lang)
        assert audio.dtype == np.float32 and 1.0 < audio.size / 16_000 < 15.0
