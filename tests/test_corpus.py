"""Embedded corpus: size, parallelism, determinism, and readings espeak-ng can pronounce."""
import re
import shutil
import subprocess

import pytest

from engine.errors import UserError
from engine.pipeline.inputs import corpus
from engine.pipeline.inputs.corpus import CORPUS_LANGS, corpus_size, embedded_corpus
from engine.science.languages import get_language

KANA_READING = re.compile(r"^[\u3041-\u309f\u30a0-\u30ff ー。、]+$")
PINYIN_READING = re.compile(r"^([a-zü]+[1-5])( [a-zü]+[1-5])*\.?$")


def test_default_size_and_languages():
    sentences = embedded_corpus()
    assert len(sentences) == corpus.DEFAULT_N
    assert 300 <= len(sentences) <= corpus_size()
    for s in sentences:
        assert set(s.texts) == set(CORPUS_LANGS) == set(s.readings)
        assert all(s.texts[lang].strip() for lang in CORPUS_LANGS)


def test_ids_and_texts_unique_per_language():
    sentences = embedded_corpus(corpus_size())
    assert len({s.sentence_id for s in sentences}) == corpus_size()
    for lang in CORPUS_LANGS:
        assert len({s.texts[lang] for s in sentences}) == corpus_size(), lang
        assert len({s.readings[lang] for s in sentences}) == corpus_size(), lang


def test_deterministic_and_seed_dependent():
    a = embedded_corpus(200, seed=3)
    b = embedded_corpus(200, seed=3)
    c = embedded_corpus(200, seed=4)
    assert [s.sentence_id for s in a] == [s.sentence_id for s in b]
    assert [s.texts for s in a] == [s.texts for s in b]
    assert [s.sentence_id for s in a] != [s.sentence_id for s in c]
    # an id names its slot fillers, so the same id means the same texts under any seed
    by_id = {s.sentence_id: s for s in embedded_corpus(corpus_size(), seed=0)}
    for s in c:
        assert by_id[s.sentence_id].texts == s.texts


def test_prefix_property_and_template_mix():
    small, large = embedded_corpus(50, seed=1), embedded_corpus(400, seed=1)
    assert [s.sentence_id for s in small] == [s.sentence_id for s in large[:50]]
    kinds = {s.sentence_id.split("-")[1] for s in small}
    assert kinds == {"act", "trv"}


def test_parallel_content_shares_slot_fillers():
    """The same slot fillers appear in every language of a sentence (meaning is matched)."""
    for s in embedded_corpus(100, seed=0):
        _, kind, subj, *_ = s.sentence_id.split("-")
        row = corpus.SUBJECTS[int(subj[1:])]
        for lang, text in zip(("eng", "deu", "spa", "fra", "cmn"), row[:5]):
            assert s.texts[lang].startswith(text), (s.sentence_id, lang)
        assert s.texts["jpn"].startswith(row[6] + "は")
        assert s.readings["jpn"].startswith(row[7] + "わ")


def test_reading_scripts():
    for s in embedded_corpus(corpus_size()):
        assert KANA_READING.match(s.readings["jpn"]), s.readings["jpn"]
        assert PINYIN_READING.match(s.readings["cmn"]), s.readings["cmn"]
        for lang in ("eng", "deu", "spa", "fra"):
            assert s.readings[lang] == s.texts[lang]


@pytest.mark.parametrize("bad", [0, -1, corpus_size() + 1, 2.5, "10", True])
def test_bad_size_is_user_error(bad):
    with pytest.raises(UserError, match="n_per_lang"):
        embedded_corpus(bad)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
@pytest.mark.parametrize("lang", ["cmn", "jpn"])
def test_every_filler_reading_is_pronounced(lang):
    """espeak-ng turns every CJK filler reading into phonemes, without English fallback
    (the cmn voice on Hanzi reads tone digits as English numbers) or silently dropped parts."""
    column = 5 if lang == "cmn" else 7
    voice = get_language(lang).espeak_voice
    fillers = [row[column] for table in (corpus.SUBJECTS, corpus.ACTIVITIES, corpus.PLACES,
                                         corpus.TIMES, corpus.CITIES) for row in table]
    for reading in fillers:
        phonemes = subprocess.run(["espeak-ng", "-q", "-x", "-v", voice, reading],
                                  capture_output=True, text=True, check=True).stdout.strip()
        assert "(en)" not in phonemes, (reading, phonemes)
        letters = len(reading.replace(" ", ""))
        assert len(phonemes) >= letters, (reading, phonemes)
