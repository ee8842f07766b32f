"""Script classification on real text, control rate, effect ratio (paper Table 1 -> Table 3)."""
from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import UserError
from engine.science.scripts import classify_tokens, control_rate, effect_ratio, mean_effect_ratio, script_shares

REAL = {
    "eng": ("The weather in Berlin was cold, so we stayed inside.", 10, 0),
    "deu": ("Die Straße über dem Fluß ist während des Winters geschlossen.", 10, 0),
    "spa": ("El niño comió una piña en la mañana, ¿verdad?", 9, 0),
    "fra": ("L'été dernier, nous sommes allés à Besançon près de la forêt.", 12, 0),
    "cmn": ("今天天气很好，我们去公园散步。", 0, 13),
    "jpn": ("東京の天気は晴れです。コーヒーを飲みましょう！", 0, 21),
}


@pytest.mark.parametrize("lang", sorted(REAL))
def test_real_sentences_of_all_six_languages(lang):
    text, n_latin, n_cjk = REAL[lang]
    scripts = classify_tokens(text)
    assert scripts.count("latin") == n_latin and scripts.count("cjk") == n_cjk
    shares = script_shares(text)
    assert shares["latin"] + shares["cjk"] == pytest.approx(100.0)


def test_mixed_text_and_unclassified_characters():
    # Latin words inside CJK text, digits and punctuation ignored, Hangul and Cyrillic ignored
    text = "我喜欢 Python 和 machine learning。2024年、ラーメン々 привет 안녕"
    scripts = classify_tokens(text)
    assert scripts == ["cjk", "cjk", "cjk", "latin", "cjk", "latin", "latin", "cjk",
                       "cjk", "cjk", "cjk", "cjk", "cjk"]
    assert classify_tokens(text, cjk="run") == ["cjk", "latin", "cjk", "latin", "latin", "cjk", "cjk"]
    assert classify_tokens("123 ... ,,, !!! 안녕하세요") == []
    assert math.isnan(script_shares("12 34")["latin"])


def test_control_rate_pools_tokens_over_outputs():
    outputs = ["Guten Morgen", "早上好"]  # 2 Latin words + 3 Han characters
    assert control_rate(outputs, "cjk") == pytest.approx(60.0)
    assert control_rate(outputs, "deu") == pytest.approx(40.0)
    assert control_rate(outputs, "jpn") == control_rate(outputs, "cmn")
    with pytest.raises(UserError, match="needs source"):
        control_rate(outputs, "kor")  # Hangul has no paper counterpart: the source must be named
    assert control_rate(outputs + ["안녕하세요"], "kor", source="deu") == pytest.approx(100 / 3)


@given(st.lists(st.sampled_from(["Hallo", "Welt", "ça", "猫", "ねこ", "ネコ", "12", "。", " "]),
                max_size=30))
def test_shares_sum_to_100_and_match_counts(parts):
    text = " ".join(parts)
    shares = script_shares(text)
    scripts = classify_tokens(text)
    if scripts:
        assert shares["latin"] + shares["cjk"] == pytest.approx(100.0)
        assert shares["cjk"] == pytest.approx(100 * scripts.count("cjk") / len(scripts))
    else:
        assert shares["tokens"] == 0


def test_effect_ratio_threshold():
    assert effect_ratio(15.09, 51.43) == pytest.approx(0.2934, abs=1e-4)
    assert effect_ratio(5.0, 9.99) is None          # below tau = 10: excluded
    assert effect_ratio(5.0, 10.0) == 0.5           # at tau: kept
    assert effect_ratio(5.0, 9.99, tau=5) == pytest.approx(5 / 9.99)
    with pytest.raises(UserError):
        effect_ratio(5.0, float("nan"))
    with pytest.raises(UserError, match="tau"):
        effect_ratio(5.0, 50.0, tau=0)


# Paper Table 1: (source lang, intervention target, step) -> (CR_ASR, CR_TR), target script share
TABLE1 = {
    ("deu", "jpn", 1): (0.00, 0.00), ("deu", "cmn", 1): (0.00, 0.00),
    ("fra", "jpn", 1): (0.00, 0.00), ("fra", "cmn", 1): (0.00, 0.00),
    ("jpn", "deu", 1): (0.10, 0.55), ("jpn", "fra", 1): (0.10, 0.59),
    ("cmn", "deu", 1): (0.55, 1.89), ("cmn", "fra", 1): (0.61, 2.19),
    ("deu", "jpn", 6): (60.85, 14.16), ("deu", "cmn", 6): (74.96, 16.75),
    ("fra", "jpn", 6): (65.34, 10.34), ("fra", "cmn", 6): (77.73, 30.70),
    ("jpn", "deu", 6): (89.28, 63.12), ("jpn", "fra", 6): (33.64, 11.48),
    ("cmn", "deu", 6): (91.69, 50.47), ("cmn", "fra", 6): (51.43, 15.09),
    ("deu", "jpn", 11): (83.32, 22.89), ("deu", "cmn", 11): (85.81, 31.67),
    ("fra", "jpn", 11): (86.76, 25.96), ("fra", "cmn", 11): (89.49, 50.85),
    ("jpn", "deu", 11): (95.43, 77.08), ("jpn", "fra", 11): (43.78, 24.03),
    ("cmn", "deu", 11): (95.58, 58.96), ("cmn", "fra", 11): (71.60, 31.15),
}
# Paper Table 3 ratios (two decimals)
TABLE3 = {("cmn", "fra", 6): 0.29, ("cmn", "deu", 6): 0.55, ("fra", "cmn", 6): 0.39,
          ("fra", "jpn", 6): 0.16, ("deu", "cmn", 6): 0.22, ("deu", "jpn", 6): 0.23,
          ("jpn", "fra", 6): 0.34, ("jpn", "deu", 6): 0.71, ("cmn", "fra", 11): 0.44,
          ("cmn", "deu", 11): 0.62, ("fra", "cmn", 11): 0.57, ("fra", "jpn", 11): 0.30,
          ("deu", "cmn", 11): 0.37, ("deu", "jpn", 11): 0.27, ("jpn", "fra", 11): 0.55,
          ("jpn", "deu", 11): 0.81}


def test_paper_table1_gives_table3_and_means():
    pairs = [{"src": s, "tgt": t, "step": k, "cr_asr": a, "cr_tr": r}
             for (s, t, k), (a, r) in TABLE1.items()]
    summary = mean_effect_ratio(pairs, tau=10.0)
    assert {(e["src"], e["tgt"], e["step"]) for e in summary["excluded"]} == \
        {key for key in TABLE1 if key[2] == 1}
    for row in summary["pairs"]:
        key = (row["src"], row["tgt"], row["step"])
        if key in TABLE3:
            assert not row["excluded"] and row["ratio"] == pytest.approx(TABLE3[key], abs=0.005)
        else:
            assert row["excluded"] and row["ratio"] is None
    assert summary["mean"]["1"] is None and summary["n_valid"] == {"1": 0, "6": 8, "11": 8}
    assert summary["mean"]["6"] == pytest.approx(0.36, abs=0.005)
    assert summary["mean"]["11"] == pytest.approx(0.49, abs=0.005)
    # any tau between the t=1 maximum (2.2) and the t=6/11 minimum (33.6) gives the same table
    assert mean_effect_ratio(pairs, tau=30.0)["mean"] == summary["mean"]
    assert mean_effect_ratio(pairs, tau=40.0)["n_valid"]["6"] == 7  # jpn->fra at 33.64 drops


def test_mean_effect_ratio_needs_fields():
    with pytest.raises(UserError, match="missing"):
        mean_effect_ratio([{"src": "deu", "tgt": "jpn", "step": 6, "cr_asr": 50.0}])
