"""Script control in any direction: the Unicode-Script classifier against the paper's earlier
hand-written Latin/CJK ranges (same tokens on their alphabet), other script pairs, and the
language table's script of every language."""
from __future__ import annotations

import math
import re

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import UserError
from engine.science import scripts as control
from engine.science.languages import LANGUAGES

# The implementation engine.science.scripts had before script classes came from the Unicode Script
# property (commit 6eb0e9b), copied verbatim as the oracle of the paper's Latin/CJK case.
_OLD_LATIN = ("A-Za-z\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u024F\u1E00-\u1EFF"
              "\uFF21-\uFF3A\uFF41-\uFF5A")
_OLD_CJK = ("\u3005-\u3007\u3040-\u309F\u30A0-\u30FF\u31F0-\u31FF\u3400-\u4DBF\u4E00-\u9FFF"
            "\uF900-\uFAFF\uFF66-\uFF9F\U00020000-\U0003134F")
_OLD = {"char": re.compile(f"(?P<latin>[{_OLD_LATIN}]+)|(?P<cjk>[{_OLD_CJK}])"),
        "run": re.compile(f"(?P<latin>[{_OLD_LATIN}]+)|(?P<cjk>[{_OLD_CJK}]+)")}


def old_tokens(text, cjk="char"):
    return [m.group() for m in _OLD[cjk].finditer(text)], [m.lastgroup for m in _OLD[cjk].finditer(text)]


def new_tokens(text, cjk="char"):
    pat = control._pattern("latin", "cjk", cjk)
    return [m.group() for m in pat.finditer(text)], [m.lastgroup for m in pat.finditer(text)]


_ALL = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
_ASSIGNED = regex.compile(r"\P{Cn}")
# every character the old ranges classify that the Unicode database knows, plus characters
# the paper's outputs hold besides letters: spaces, digits, ASCII and CJK punctuation,
# combining accents (decomposed "é"), other scripts, emoji
_OLD_CLASSIFIED = [c for c in re.findall(f"[{_OLD_LATIN}{_OLD_CJK}]", _ALL) if _ASSIGNED.match(c)]
_OTHERS = list(" \t0123456789.,;:!?'\"-()«»¿¡、。「」『』，．！？：；〜…—–") + \
    ["\u0301", "\u0308", "\u200b", "Ж", "ж", "Ω", "안", "녕", "ש", "ب", "क", "ก", "😀", "€", "%"]


def test_old_ranges_are_within_the_script_classes_on_every_assigned_character():
    # exhaustive over all code points: whatever the old ranges classified (and Unicode assigns)
    # the Script-property classes classify the same way; what they add are letters of the scripts
    old_pat = re.compile(f"(?P<latin>[{_OLD_LATIN}])|(?P<cjk>[{_OLD_CJK}])")
    new_pat = regex.compile(f"(?P<latin>[{control._class_set('latin')}])|(?P<cjk>[{control._class_set('cjk')}])",
                            regex.V1)
    old = {m.group(): m.lastgroup for m in old_pat.finditer(_ALL)}
    new = {m.group(): m.lastgroup for m in new_pat.finditer(_ALL)}
    disagree_assigned = {c for c, s in old.items() if new.get(c) != s and _ASSIGNED.match(c)}
    assert disagree_assigned == set()
    added = {c: s for c, s in new.items() if c not in old}
    assert "ɐ" in added and "ª" in added and "ﬁ" in added  # IPA, ordinal, ligature: now Latin
    sc = {"latin": ("Latin",), "cjk": ("Han", "Hiragana", "Katakana")}
    for c, s in added.items():
        assert any(regex.match(rf"[\p{{sc={x}}}\p{{scx={x}}}]", c) for x in sc[s]), hex(ord(c))
    # most additions are ideographs of CJK Extensions H and I (Unicode 15-16), after the old ranges
    assert len(old) > 90_000
    assert sum(s == "latin" for s in added.values()) < 1_000


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_OLD_CLASSIFIED), st.sampled_from(_OTHERS)), max_size=40),
       st.sampled_from(["char", "run"]))
def test_latin_cjk_case_equals_the_earlier_ranges(chars, cjk):
    text = "".join(chars)
    assert new_tokens(text, cjk) == old_tokens(text, cjk)
    shares = control.script_shares(text, cjk=cjk)
    _, kinds = old_tokens(text, cjk)
    if kinds:
        assert shares["latin"] == 100.0 * kinds.count("latin") / len(kinds)
        assert shares["cjk"] == 100.0 * kinds.count("cjk") / len(kinds)
        assert control.control_rate(text, "jpn", cjk=cjk) == shares["cjk"]
        assert control.control_rate(text, "deu", source="cmn", cjk=cjk) == shares["latin"]
    else:
        assert math.isnan(shares["latin"]) and shares["tokens"] == 0


@pytest.mark.parametrize("text,latin,cjk", [
    ("ドナルド・トランプ氏は〆切を守った", 0, 17),      # ・ and ー count, as before
    ("café naïve Ærø", 3, 0),
    ("ｶﾀｶﾅ ＡＢＣ", 1, 4),
])
def test_paper_examples(text, latin, cjk):
    assert control.classify_tokens(text).count("latin") == latin
    assert control.classify_tokens(text).count("cjk") == cjk


@pytest.mark.parametrize("src,tgt,text,expected", [
    ("rus", "eng", "Привет, мир! Hello world", ["cyrillic", "cyrillic", "latin", "latin"]),
    ("arb", "fra", "مرحبا بالعالم bonjour", ["arabic", "arabic", "latin"]),
    ("heb", "deu", "שלום עולם", ["hebrew", "hebrew"]),
    ("ell", "eng", "Καλημέρα κόσμε", ["greek", "greek"]),
    ("hin", "eng", "नमस्ते दुनिया", ["devanagari", "devanagari"]),   # vowel signs and virama stay in the word
    ("ben", "eng", "হ্যালো বিশ্ব", ["bengali", "bengali"]),
    ("tha", "eng", "สวัสดี", ["thai"] * 6),                         # Thai counts characters
    ("kor", "jpn", "안녕하세요 東京", ["hangul", "cjk", "cjk"]),
])
def test_other_script_pairs(src, tgt, text, expected):
    assert control.classify_tokens(text, (src, tgt)) == expected


def test_arabic_punctuation_and_digits_are_not_tokens():
    # Arabic comma and Arabic-Indic digits are Common with several scripts: not letters, not counted
    assert control.classify_tokens("٣، ١٢؟", ("arb", "eng")) == []
    assert control.control_rate(["Привет мир", "hello"], "rus", source="eng") == pytest.approx(200 / 3)


def test_same_script_pair_is_refused_by_script():
    assert control.same_script("deu", "fra") and control.same_script("cmn", "jpn")
    assert not control.same_script("rus", "eng")
    with pytest.raises(UserError, match="language-ID"):
        control.script_shares(["x"], ("deu", "fra"))
    with pytest.raises(UserError, match="script class"):
        control.pair_scripts("deu", "klingon")


def test_every_language_has_a_script_class_that_its_own_letters_fill():
    samples = {"latin": "Hallo", "cyrillic": "Привет", "arabic": "مرحبا", "cjk": "東京", "hebrew": "שלום",
               "greek": "Γεια", "armenian": "Բարեւ", "georgian": "გამარჯობა", "ethiopic": "ሰላም",
               "devanagari": "नमस्ते", "bengali": "নমস্কার", "gurmukhi": "ਸਤਿ", "gujarati": "નમસ્તે",
               "oriya": "ନମସ୍କାର", "tamil": "வணக்கம்", "telugu": "నమస్కారం", "kannada": "ನಮಸ್ಕಾರ",
               "malayalam": "നമസ്കാരം", "hangul": "안녕", "thai": "สวัสดี", "lao": "ສະບາຍດີ",
               "khmer": "សួស្តី", "myanmar": "မင်္ဂလာပါ"}
    for code, lang in LANGUAGES.items():
        assert lang.script in control.SCRIPT_CLASSES, code
        other = "latin" if lang.script != "latin" else "cyrillic"
        assert control.control_rate(samples[lang.script], lang.script, source=other) == 100.0, code
