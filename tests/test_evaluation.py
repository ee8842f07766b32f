"""engine.science.evaluation: the authors' output metrics, each checked against its library's
documented example, a case computed by hand, the library itself, and (for pieces) a
re-statement of the authors' script; their bootstrap intervals; validation at the boundary."""
from __future__ import annotations

import math
import random

import jiwer
import numpy as np
import pytest
import regex
from sacrebleu.metrics import BLEU, CHRF

from engine.errors import UserError
from engine.science import evaluation as ev

# ------------------------------------------------------------------------------------------------
# shared inputs


def _corpus(n: int = 120, seed: int = 1) -> tuple[list[str], list[str]]:
    """A synthetic corpus: references and hypotheses with ~30% of the words replaced."""
    rnd = random.Random(seed)
    words = "the a cat dog sat on mat big small ran house tree near far red blue".split()
    refs = [" ".join(rnd.choices(words, k=rnd.randint(4, 14))) for _ in range(n)]
    hyps = [" ".join(w if rnd.random() < 0.7 else rnd.choice(words) for w in r.split()) for r in refs]
    return hyps, refs


def _pieces(text: str) -> list[str]:
    """A stand-in tokenizer: "▁" + each space-separated word, cut into pieces of two characters
    (so some pieces mix scripts); "<unk>" stays one special piece."""
    out = []
    for word in text.split():
        if word == "<unk>":
            out.append(word)
            continue
        w = "▁" + word
        out.extend(w[i:i + 2] for i in range(0, len(w), 2))
    return out


def _as_pieces(table: dict[str, list[str]]):
    """A tokenizer that returns the hand-made pieces of each text in ``table``."""
    return lambda text: table[text]


# ------------------------------------------------------------------------------------------------
# BLEU


def test_bleu_sacrebleu_effective_order_cases():
    # sacrebleu's own test cases (test/test_bleu.py, test_case_effective_order): "test" against
    # "a test" is exp(1 - 2/1) (the brevity penalty; only unigrams counted), "a test" is 1.
    assert ev.bleu(["test"], ["a test"], n_boot=0)["value"] == pytest.approx(100 * 0.3678794411714425, abs=1e-8)
    assert ev.bleu(["a test"], ["a test"], n_boot=0)["value"] == pytest.approx(100.0, abs=1e-12)


def test_bleu_by_hand():
    # hyp "the cat sat on the mat", ref "the cat sat on a mat": clipped n-gram precisions 5/6, 3/5,
    # 2/4, 1/3, equal lengths (BP = 1): BLEU = (1/12) ** (1/4)
    out = ev.bleu(["the cat sat on the mat"], ["the cat sat on a mat"], n_boot=0)
    assert out["value"] == pytest.approx(100 * (1 / 12) ** 0.25, abs=1e-9)
    assert out["tokenize"] == "13a" and out["n"] == 1 and out["ci"] is None
    assert "eff:yes" in out["signature"] and "tok:13a" in out["signature"]


def test_bleu_tokenizer_follows_the_target_language():
    assert [ev.bleu_tokenizer(x) for x in (None, "eng", "deu", "rus", "cmn", "yue", "jpn", "tha", "kor")] == \
        ["13a", "13a", "13a", "13a", "zh", "zh", "char", "char", "13a"]
    # Chinese split into characters: precisions 3/4, 2/3, 1/2 and the exp-smoothed 4-gram
    # 1/(2*1): (0.75 * 2/3 * 0.5 * 0.5) ** (1/4); with 13a the sentence is one unmatched word
    zh = ev.bleu(["我喜欢猫"], ["我喜欢狗"], target_lang="cmn", n_boot=0)
    assert zh["tokenize"] == "zh" and zh["value"] == pytest.approx(100 * 0.125 ** 0.25, abs=1e-9)
    assert ev.bleu(["我喜欢猫"], ["我喜欢狗"], n_boot=0)["value"] == 0.0
    ja = ev.bleu(["猫が好き"], ["犬が好き"], target_lang="jpn", n_boot=0)
    assert ja["tokenize"] == "char" and ja["value"] == pytest.approx(100 * 0.125 ** 0.25, abs=1e-9)
    # tokenize= overrides the language (the authors' 13a everywhere)
    assert ev.bleu(["我喜欢猫"], ["我喜欢狗"], target_lang="cmn", tokenize="13a", n_boot=0)["value"] == 0.0
    with pytest.raises(UserError, match="unknown BLEU tokenizer"):
        ev.bleu(["a"], ["a"], tokenize="moses")
    with pytest.raises(UserError, match="unknown language code"):
        ev.bleu(["a"], ["a"], target_lang="xx")


@pytest.mark.parametrize("tokenize", ["13a", "zh", "char"])
def test_bleu_and_chrf_equal_sacrebleus_public_corpus_score(tokenize):
    # the point values come from sacrebleu's per-sentence statistics: they must be its corpus score
    hyps, refs = _corpus(40)
    hyps[3], refs[5] = "我喜欢猫 and the dog", "犬が好き the cat."
    expected = BLEU(effective_order=True, tokenize=tokenize).corpus_score(hyps, [refs]).score
    assert ev.bleu(hyps, refs, tokenize=tokenize, n_boot=0)["value"] == expected
    chrf = CHRF(char_order=6, word_order=2, beta=2, lowercase=False).corpus_score(hyps, [refs]).score
    assert ev.chrf_pp(hyps, refs, n_boot=0)["value"] == chrf


def test_bleu_resamples_are_corpus_bleu_of_resampled_corpora():
    # the interval is the percentile of sacrebleu's corpus BLEU on each resampled corpus
    hyps, refs = _corpus(15)
    n_boot, seed = 30, 4
    rows = np.random.default_rng(seed).integers(0, len(hyps), size=(n_boot, len(hyps)))
    metric = BLEU(effective_order=True)
    scores = [metric.corpus_score([hyps[i] for i in r], [[refs[i] for i in r]]).score for r in rows]
    assert ev.bleu(hyps, refs, n_boot=n_boot, seed=seed)["ci"] == pytest.approx(np.percentile(scores, [2.5, 97.5]),
                                                                                abs=1e-9)


# ------------------------------------------------------------------------------------------------
# chrF++ and the combined score

_HF_PRED = ["The relationship between cats and dogs is not exactly friendly.",
            "a good bookshop is just a genteel black hole that knows how to read."]
_HF_REF = ["The relationship between dogs and cats is not exactly friendly.",
           "A good bookshop is just a genteel Black Hole that knows how to read."]


def test_chrf_pp_documented_example():
    # the chrF metric card of Hugging Face evaluate (sacrebleu CHRF, word_order=2, cased)
    out = ev.chrf_pp(_HF_PRED, _HF_REF, n_boot=0)
    assert out["value"] == pytest.approx(82.87263732906315, abs=1e-9)
    assert "nc:6" in out["signature"] and "nw:2" in out["signature"] and "case:mixed" in out["signature"]


def test_chrf_pp_by_hand():
    # "a b" vs "a c": char unigrams P = R = 1/2, char bigrams ("ab" vs "ac") 0, word unigrams
    # 1/2, word bigrams 0; higher orders have no n-gram and are left out. Averages P = R = 1/4,
    # F2 = 5 P R / (4 P + R) = 1/4.
    assert ev.chrf_pp(["a b"], ["a c"], n_boot=0)["value"] == pytest.approx(25.0, abs=1e-12)
    assert ev.chrf_pp(["a b"], ["a b"], n_boot=0)["value"] == pytest.approx(100.0, abs=1e-12)


def test_combined_is_the_authors_weighting_with_paired_intervals():
    hyps, refs = _corpus(60)
    out = ev.translation_scores(hyps, refs, n_boot=200, seed=3)
    b, c = ev.bleu(hyps, refs, n_boot=200, seed=3), ev.chrf_pp(hyps, refs, n_boot=200, seed=3)
    assert out["bleu"]["value"] == b["value"] and out["chrf_pp"]["value"] == c["value"]
    assert out["bleu"]["ci"] == b["ci"] and out["chrf_pp"]["ci"] == c["ci"]  # same resamples
    assert out["combined"]["value"] == pytest.approx(0.6 * b["value"] + 0.4 * c["value"], abs=1e-12)
    lo, hi = out["combined"]["ci"]
    assert lo <= out["combined"]["value"] <= hi
    assert out["n"] == 60 and out["bleu"]["tokenize"] == "13a"


# ------------------------------------------------------------------------------------------------
# WER and CER


def test_wer_documented_and_by_hand():
    # jiwer's README: "hello world" vs "hello duck" is 0.5
    assert ev.wer(["hello world"], ["hello duck"], n_boot=0)["value"] == 0.5
    # one substitution in four words; the authors' strip().lower() first
    out = ev.wer(["  The cat SAT down "], ["the cat sat up"], n_boot=0)
    assert out == {"value": 0.25, "ci": None, "n": 1, "errors": 1, "reference_words": 4}
    # pooled over the corpus: (1 + 1) / (4 + 2), not the mean of 1/4 and 1/2
    assert ev.wer(["a b c d", "x y"], ["a b e d", "x"], n_boot=0)["value"] == pytest.approx(2 / 6, abs=1e-15)


def test_cer_by_hand():
    assert ev.cer(["abcd"], ["abxd"], n_boot=0)["value"] == 0.25
    # spaces inside a sentence are characters (jiwer's default, as the authors): "ab c" has 4
    out = ev.cer([" AB C"], ["ab d "], n_boot=0)
    assert out["value"] == 0.25 and out["reference_chars"] == 4 and out["errors"] == 1


def test_wer_cer_equal_jiwer_on_the_normalised_corpus():
    hyps, refs = _corpus(50)
    hyps[0], refs[1] = hyps[0].upper(), " " + refs[1] + "  "
    norm = lambda xs: [x.strip().lower() for x in xs]  # noqa: E731
    assert ev.wer(refs, hyps, n_boot=0)["value"] == pytest.approx(jiwer.wer(norm(refs), norm(hyps)), abs=1e-15)
    assert ev.cer(refs, hyps, n_boot=0)["value"] == pytest.approx(jiwer.cer(norm(refs), norm(hyps)), abs=1e-15)


def test_wer_empty_reference_counts_insertions_and_all_empty_is_an_error():
    out = ev.wer(["a b", ""], ["a b", "x y z"], n_boot=0)
    assert out["errors"] == 3 and out["reference_words"] == 2 and out["value"] == 1.5
    with pytest.raises(UserError, match="every reference is empty"):
        ev.wer(["", "  "], ["a", "b"])
    with pytest.raises(UserError, match="every reference is empty"):
        ev.cer([""], ["a"])


def test_wer_interval_resamples_sentences():
    # the interval is the percentile of jiwer's corpus WER on each resampled corpus
    hyps, refs = _corpus(20)
    n_boot, seed = 40, 9
    rows = np.random.default_rng(seed).integers(0, len(refs), size=(n_boot, len(refs)))
    rates = [jiwer.wer([refs[i] for i in r], [hyps[i] for i in r]) for r in rows]
    assert ev.wer(refs, hyps, n_boot=n_boot, seed=seed)["ci"] == pytest.approx(np.percentile(rates, [2.5, 97.5]),
                                                                              abs=1e-12)


def test_resampling_in_blocks_draws_the_same_resamples(monkeypatch):
    hyps, refs = _corpus(30)
    whole = ev.wer(refs, hyps, n_boot=100, seed=2)
    monkeypatch.setattr(ev, "_BLOCK_ELEMENTS", 7 * 30)  # blocks of 7 resamples
    assert ev.wer(refs, hyps, n_boot=100, seed=2) == whole


# ------------------------------------------------------------------------------------------------
# pieces: buckets, control rate, M-index, I-index

# counted by hand against ("latin", "cjk"):
#   latin: ▁The, ▁sat                       cjk: ▁猫, が
#   mix:   a猫                              other: ▁ (empty), 。, <unk>, 12, ー (Script=Common)
HAND = ["▁The", "▁猫", "が", "▁sat", "▁", "。", "<unk>", "a猫", "12", "ー"]
HAND_BUCKETS = ["latin", "cjk", "cjk", "latin", "other", "other", "other", "mix", "other", "other"]


def test_classify_piece_by_hand():
    assert [ev.classify_piece(p) for p in HAND] == HAND_BUCKETS
    assert [ev.classify_piece(p, ("eng", "jpn")) for p in HAND] == HAND_BUCKETS  # language codes
    # chars="class": the project's classes also count the Common long-vowel mark as CJK
    assert [ev.classify_piece(p, chars="class") for p in HAND] == HAND_BUCKETS[:-1] + ["cjk"]
    # a third script does not make a piece mixed (as the authors); against its own pair it does
    assert ev.classify_piece("aб") == "latin"
    assert ev.classify_piece("aб", ("latin", "cyrillic")) == "mix"
    assert ev.classify_piece("▁мир", ("latin", "cyrillic")) == "cyrillic"
    assert ev.classify_piece("<0xE3>") == "other" and ev.classify_piece("</s>") == "other"
    # where the Script property and the project's classes part: symbols of Han/Katakana (Kangxi
    # radical, circled katakana) and Common kana marks (ー ゛ ・)
    assert [ev.classify_piece(c) for c in "⼀㋐ー゛・"] == ["cjk", "cjk", "other", "other", "other"]
    assert [ev.classify_piece(c, chars="class") for c in "⼀㋐ー゛・"] == ["other", "other", "cjk", "cjk", "cjk"]


def test_piece_control_rate_by_hand():
    out = ev.piece_control_rate(["s"], _as_pieces({"s": HAND}), "latin", n_boot=0)
    assert out["value"] == 50.0  # 2 Latin / (2 Latin + 2 CJK)
    assert out["pieces"] == {"latin": 2, "cjk": 2, "mix": 1, "other": 5}
    assert out["target"] == "latin" and out["source"] == "cjk" and out["n"] == 1 and out["ci"] is None
    # toward CJK (source defaults to Latin); pooled over outputs, token-weighted
    table = {"s": HAND, "t": ["▁犬", "猫", "▁a"]}
    assert ev.piece_control_rate(["s", "t"], _as_pieces(table), "jpn", n_boot=0)["value"] == pytest.approx(100 * 4 / 7)


def test_a_planted_mix_as_latin_error_fails_the_hand_count(monkeypatch):
    classify = ev._classify

    def planted(piece, a, b, chars):  # a Mix piece counted as Latin
        got = classify(piece, a, b, chars)
        return "latin" if got == ev.MIX else got

    monkeypatch.setattr(ev, "_classify", planted)
    out = ev.piece_control_rate(["s"], _as_pieces({"s": HAND}), "latin", n_boot=0)
    assert out["value"] != 50.0 and out["value"] == 60.0  # 3 / (3 + 2): the hand count catches it


def test_piece_control_rate_other_scripts_and_errors():
    table = {"s": ["▁мир", "▁hello", "▁да", "aб", "▁猫"]}
    out = ev.piece_control_rate(["s"], _as_pieces(table), "rus", source="eng", n_boot=0)
    assert out["value"] == pytest.approx(200 / 3) and out["pieces"] == {"cyrillic": 2, "latin": 1, "mix": 1, "other": 1}
    with pytest.raises(UserError, match="needs source="):
        ev.piece_control_rate(["s"], _as_pieces(table), "rus")
    with pytest.raises(UserError, match="both scripts are 'latin'"):
        ev.piece_control_rate(["s"], _as_pieces(table), "deu", source="eng")
    with pytest.raises(UserError, match="must return a list of str"):
        ev.piece_control_rate(["s"], lambda s: "▁s", "latin")
    with pytest.raises(UserError, match="must be a callable"):
        ev.piece_control_rate(["s"], None, "latin")
    with pytest.raises(UserError, match="chars must be"):
        ev.piece_control_rate(["s"], _as_pieces(table), "latin", chars="unicode")
    # no pure piece anywhere: no rate
    none = ev.piece_control_rate(["s"], lambda s: ["12", "。"], "latin", n_boot=50)
    assert none["value"] is None and none["ci"] is None


def test_m_index_and_i_index_by_hand():
    assert ev.m_index([3, 1]) == pytest.approx(1 - (9 + 1) / 16)        # (1 - 9/16 - 1/16) / 1
    assert ev.m_index([1, 1, 1]) == pytest.approx((1 - 3 / 9) / 2)      # even over 3 labels: 1/3
    assert ev.m_index([2, 2]) == 0.5  # the authors' formula peaks at 1/n (not 1) on an even split
    assert ev.m_index([4, 0]) == 0.0 and ev.m_index([0, 0]) == 0.0 and ev.m_index([5]) == 0.0
    assert ev.i_index(list("LLCL")) == pytest.approx(2 / 3)             # switches L->C, C->L over 3
    assert ev.i_index(list("LCLC")) == 1.0 and ev.i_index(list("LLL")) == 0.0
    assert ev.i_index(["L"]) == 0.0 and ev.i_index([]) == 0.0
    with pytest.raises(UserError, match="non-negative"):
        ev.m_index([1, -1])


def test_code_mixing_by_hand():
    table = {"x": ["▁a", "猫", "▁b", "犬"],   # L C L C: M = 1 - 2 * 0.25 = 0.5, I = 3/3
             "y": ["▁a", "1", "▁b"],          # L L: M = 0, I = 0
             "z": ["1", "。", "a猫"]}          # no pure piece: 0, 0
    out = ev.code_mixing(["x", "y", "z"], _as_pieces(table), n_boot=0)
    assert out["m_index"] == {"value": pytest.approx(0.5 / 3), "ci": None}
    assert out["i_index"] == {"value": pytest.approx(1 / 3), "ci": None}
    assert out["n"] == 3 and out["scripts"] == ["latin", "cjk"]


# The authors' utils/codemix_seamless_regex_metrics.py, restated: their regexes, their buckets,
# their per-output indices and their corpus p_tok_latin_given_pure_lc.
_RE_HIRA, _RE_KATA = regex.compile(r"\p{Script=Hiragana}"), regex.compile(r"\p{Script=Katakana}")
_RE_HAN, _RE_LAT = regex.compile(r"\p{Script=Han}"), regex.compile(r"\p{Script=Latin}")


def _authors_bucket(token_str: str) -> str:
    t = token_str.replace("▁", "")
    if not t or (t.startswith("<") and t.endswith(">")):
        return "Other"
    has_lat = _RE_LAT.search(t) is not None
    has_cjk = any(r.search(t) is not None for r in (_RE_HIRA, _RE_KATA, _RE_HAN))
    if has_lat and has_cjk:
        return "Mix"
    return "Latin" if has_lat else ("CJK" if has_cjk else "Other")


def _authors_m(p):
    n = len(p)
    return 0.0 if n <= 1 else (1.0 - sum(pi * pi for pi in p)) / (n - 1)


def _authors_i(seq):
    if len(seq) < 2:
        return 0.0
    return sum(1 for a, b in zip(seq, seq[1:]) if a != b) / (len(seq) - 1)


def _authors(texts, tokenize):
    latin = cjk = 0
    m, i = [], []
    for text in texts:
        seq = [_authors_bucket(t) for t in tokenize(text)]
        n_l, n_c = seq.count("Latin"), seq.count("CJK")
        latin, cjk = latin + n_l, cjk + n_c
        m.append(_authors_m([n_l / (n_l + n_c), n_c / (n_l + n_c)]) if n_l + n_c else 0.0)
        i.append(_authors_i([x for x in seq if x in ("Latin", "CJK")]))
    return latin / (latin + cjk), float(np.mean(m)), float(np.mean(i))


AUTHORS_TEXTS = [
    "The cat は 猫 です", "コーヒー・ショップ へ 行く", "ｆｕｌｌ ｗｉｄｔｈ と ª º Ⅻ", "мир hello 世界 <unk> 42",
    "⼀ ⼆ 〆 々 〇 ゛ ゜ ヽ ゝ", "mixed漢字word かなkana 😀 !!", "", "ぁ", "Straße café naïve ǅ",
    "日本語の文章だけ", "only latin words here", "ａ猫 b犬 ーa",
]


def test_latin_cjk_rate_and_indices_equal_the_authors_script():
    p_latin, m_mean, i_mean = _authors(AUTHORS_TEXTS, _pieces)
    rate = ev.piece_control_rate(AUTHORS_TEXTS, _pieces, "latin", n_boot=0)
    assert rate["value"] == 100 * p_latin  # exactly: the same counts, the same division
    mix = ev.code_mixing(AUTHORS_TEXTS, _pieces, n_boot=0)
    assert mix["m_index"]["value"] == m_mean and mix["i_index"]["value"] == i_mean
    for text in AUTHORS_TEXTS:
        got = [ev.classify_piece(p) for p in _pieces(text)]
        assert got == [_authors_bucket(p).lower() for p in _pieces(text)]
    # the texts exercise every bucket and the characters where the project's classes differ
    buckets = {_authors_bucket(p) for t in AUTHORS_TEXTS for p in _pieces(t)}
    assert buckets == {"Latin", "CJK", "Mix", "Other"}
    assert ev.piece_control_rate(AUTHORS_TEXTS, _pieces, "latin", chars="class", n_boot=0)["value"] != rate["value"]


# ------------------------------------------------------------------------------------------------
# intervals and validation


def _all_metrics(hyps, refs, n_boot, seed):
    table = {h: _pieces(h) for h in hyps}
    return {
        "bleu": ev.bleu(hyps, refs, n_boot=n_boot, seed=seed),
        "chrf_pp": ev.chrf_pp(hyps, refs, n_boot=n_boot, seed=seed),
        "wer": ev.wer(refs, hyps, n_boot=n_boot, seed=seed),
        "cer": ev.cer(refs, hyps, n_boot=n_boot, seed=seed),
        "pieces": ev.piece_control_rate(hyps, _as_pieces(table), "latin", n_boot=n_boot, seed=seed),
        "m_index": ev.code_mixing(hyps, _as_pieces(table), n_boot=n_boot, seed=seed)["m_index"],
        "i_index": ev.code_mixing(hyps, _as_pieces(table), n_boot=n_boot, seed=seed)["i_index"],
    }


def test_intervals_contain_the_estimate_and_are_deterministic():
    hyps, refs = _corpus(120)
    rnd = random.Random(5)
    hyps = [h + (" 猫が" if rnd.random() < 0.3 else "") + (" 犬" if rnd.random() < 0.2 else "") for h in hyps]
    first = _all_metrics(hyps, refs, 300, 11)
    for name, out in first.items():
        lo, hi = out["ci"]
        assert lo <= out["value"] <= hi and lo < hi, name
    assert _all_metrics(hyps, refs, 300, 11) == first                   # same seed, same intervals
    other = _all_metrics(hyps, refs, 300, 12)
    assert all(other[k]["ci"] != first[k]["ci"] for k in first)          # the seed matters
    assert all(other[k]["value"] == first[k]["value"] for k in first)    # the estimate does not
    none = _all_metrics(hyps, refs, 0, 11)
    assert all(out["ci"] is None and out["value"] == first[k]["value"] for k, out in none.items())


@pytest.mark.parametrize("call", [
    lambda h, r: ev.bleu(h, r), lambda h, r: ev.chrf_pp(h, r), lambda h, r: ev.translation_scores(h, r),
    lambda h, r: ev.wer(r, h), lambda h, r: ev.cer(r, h)])
def test_paired_metrics_validate_their_inputs(call):
    with pytest.raises(UserError, match="3 hypotheses but 2 references"):
        call(["a", "b", "c"], ["a", "b"])
    with pytest.raises(UserError, match="hypotheses is empty"):
        call([], [])
    with pytest.raises(UserError, match="single str"):
        call("a b", ["a b"])
    with pytest.raises(UserError, match=r"references\[1\] is NoneType, not str"):
        call(["a", "b"], ["a", None])


@pytest.mark.parametrize("kwargs, match", [({"n_boot": -1}, "n_boot"), ({"n_boot": True}, "n_boot"),
                                           ({"n_boot": 1.5}, "n_boot"), ({"seed": -3}, "seed"),
                                           ({"seed": None}, "seed")])
def test_bootstrap_arguments_are_validated(kwargs, match):
    for call in (lambda: ev.bleu(["a"], ["a"], **kwargs), lambda: ev.wer(["a"], ["a"], **kwargs),
                 lambda: ev.piece_control_rate(["a"], _pieces, "latin", **kwargs),
                 lambda: ev.code_mixing(["a"], _pieces, **kwargs)):
        with pytest.raises(UserError, match=match):
            call()


def test_piece_metrics_validate_their_outputs():
    with pytest.raises(UserError, match="outputs is empty"):
        ev.code_mixing([], _pieces)
    with pytest.raises(UserError, match="single str"):
        ev.piece_control_rate("abc", _pieces, "latin")
    with pytest.raises(UserError, match="script class"):
        ev.code_mixing(["a"], _pieces, ("latin", "klingon"))
    with pytest.raises(UserError, match="two script classes"):
        ev.code_mixing(["a"], _pieces, "latin")


def test_results_are_plain_json():
    import json

    hyps, refs = _corpus(10)
    for out in _all_metrics(hyps, refs, 20, 0).values():
        assert json.loads(json.dumps(out)) == out
    assert json.loads(json.dumps(ev.translation_scores(hyps, refs, n_boot=20)))["n"] == 10
    assert not math.isnan(ev.bleu(hyps, refs, n_boot=0)["value"])
