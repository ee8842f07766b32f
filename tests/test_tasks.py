"""The four task views built from one selection."""
import importlib.util
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.pipeline.inputs.corpus import select_embedded
from engine.pipeline.inputs.fleurs import select_fleurs
from engine.pipeline.inputs.speech import SynthesisResult, synthesize_sentences
from engine.pipeline.inputs.tasks import TASKS, build_tasks
from engine.pipeline.inputs.tts import EspeakBackend
from engine.pipeline.inputs.wav import load_waveform
from engine.science.languages import LANGS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ROOT = FIXTURES / "fleurs"


def _fake_audio(selection, missing=()):
    return {(s.sentence_id, lang): f"/cache/{s.sentence_id}-{lang}.wav"
            for s in selection.sentences for lang in selection.langs
            if (s.sentence_id, lang) not in missing}


@pytest.fixture(params=["embedded", "fleurs"])
def selection(request):
    if request.param == "embedded":
        return select_embedded(n=20, seed=3)
    return select_fleurs(LANGS, n=10, root=ROOT)


def test_four_views_fields(selection):
    views = build_tasks(selection, _fake_audio(selection))
    assert list(views) == list(TASKS)
    by_id = {s.sentence_id: s for s in selection.sentences}
    expected = {  # task: (modality, target is English, has audio)
        "S2T": ("speech", True, True), "T2T": ("text", True, False),
        "ASR": ("speech", False, True), "TR": ("text", False, False)}
    for task, examples in views.items():
        modality, to_english, has_audio = expected[task]
        assert len(examples) == len(selection.sentences) * len(selection.langs)
        for e in examples:
            sentence = by_id[e.sentence_id]
            assert e.example_id == f"{e.sentence_id}/{e.lang}/{task}" and e.task == task
            assert e.modality == modality
            assert e.text == sentence.texts[e.lang]
            assert e.tgt_lang == ("eng" if to_english else e.lang)
            assert e.reference == (sentence.texts["eng"] if to_english else e.text)
            assert (e.audio_path == f"/cache/{e.sentence_id}-{e.lang}.wav") if has_audio else e.audio_path is None
            assert e.split == selection.split_of(e.sentence_id)
    all_ids = [e.example_id for examples in views.values() for e in examples]
    assert len(all_ids) == len(set(all_ids))
    assert views.excluded == {}


def test_same_sentences_in_every_task_and_language(selection):
    views = build_tasks(selection, _fake_audio(selection))
    for task, examples in views.items():
        for lang in selection.langs:
            assert [e.sentence_id for e in examples if e.lang == lang] == [s.sentence_id for s in selection.sentences]


def test_split_views_disjoint(selection):
    views = build_tasks(selection, _fake_audio(selection))
    identify, steer = views.split("identify"), views.split("steer")
    for task in TASKS:
        ids_i = {e.sentence_id for e in identify[task]}
        ids_s = {e.sentence_id for e in steer[task]}
        assert not ids_i & ids_s
        assert ids_i == set(selection.identify_ids) and ids_s == set(selection.steer_ids)


def test_missing_audio_excluded_and_counted():
    selection = select_embedded(n=10, seed=0)
    first = selection.sentences[0].sentence_id
    missing = {(first, "cmn"), (first, "jpn"), (selection.sentences[1].sentence_id, "jpn")}
    views = build_tasks(selection, _fake_audio(selection, missing))
    assert views.excluded == {"S2T": {"cmn": 1, "jpn": 2}, "ASR": {"cmn": 1, "jpn": 2}}
    assert len(views["S2T"]) == len(views["T2T"]) - 3
    assert not any((e.sentence_id, e.lang) in missing for e in views["ASR"])


def test_accepts_synthesis_result_and_text_only():
    selection = select_embedded(n=4, seed=0)
    result = SynthesisResult(paths=_fake_audio(selection))
    assert len(build_tasks(selection, result)["ASR"]) == 4 * 5
    text_only = build_tasks(selection, None, tasks=("T2T", "TR"), langs=("cmn",))
    assert list(text_only) == ["T2T", "TR"] and len(text_only["TR"]) == 4


@pytest.mark.parametrize("kwargs, match", [
    (dict(tasks=("S2T", "MT")), "unknown task 'MT'"),
    (dict(langs=("deu", "xxx")), "unknown language code 'xxx'"),
    (dict(speech_cache=None), "speech tasks need synthesised audio"),
])
def test_bad_arguments(kwargs, match):
    selection = select_embedded(n=4, seed=0, langs=("deu", "fra"))
    args = dict(speech_cache={}) | kwargs
    with pytest.raises(UserError, match=match):
        build_tasks(selection, **args)
    with pytest.raises(UserError, match="language cmn is not in the selection"):
        build_tasks(selection, {}, langs=("cmn",))


@pytest.mark.skipif(__import__("shutil").which("espeak-ng") is None, reason="espeak-ng not installed")
def test_offline_pipeline_embedded_espeak(tmp_path):
    """Embedded corpus -> espeak cache -> task views -> waveforms -> features, with no network."""
    from transformers import SeamlessM4TFeatureExtractor

    # fixtures/ is not a package: load the fixture builders' feature helper by its path
    spec = importlib.util.spec_from_file_location("speech_features", FIXTURES / "speech_features.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    speech_features = module.speech_features

    selection = select_embedded(n=3, seed=0)
    result = synthesize_sentences(selection.sentences, selection.langs, EspeakBackend(), tmp_path)
    assert result.n_synthesized == 15 and not result.failures
    views = build_tasks(selection, result)
    waveforms = [load_waveform(e.audio_path) for e in views["ASR"]]
    features = speech_features(waveforms, SeamlessM4TFeatureExtractor())
    assert features["input_features"].shape[:1] == (15,) and features["input_features"].shape[2] == 160
    assert (features["attention_mask"].sum(1) > 50).all()      # > 1 s of speech each
