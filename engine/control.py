"""Output-language control measured by script: token-level Latin vs CJK classification with
regular expressions, control rate, and the cross-modal effect ratio (SPEC §2).

Token definition (decision; the paper only says "token-level ... regular expressions"):

- a **Latin token** is a maximal run of Latin letters (ASCII, Latin-1 letters, Latin Extended-A/B,
  Latin Extended Additional, fullwidth A-Z/a-z): one word, however long; an apostrophe or
  hyphen splits words ("l'homme" is two tokens);
- a **CJK token** is one character of Han (CJK Unified Ideographs, Extension A, B-F and the
  supplementary planes' ideographs, compatibility ideographs), Hiragana, Katakana (with the
  phonetic extensions and halfwidth forms), or the ideographic marks 々 〆 〇. CJK text has no
  spaces between words, and one character is roughly one subword token of a multilingual
  tokenizer, so a character is the unit. ``cjk="run"`` counts maximal CJK runs instead
  (for sensitivity checks);
- everything else (digits, punctuation, CJK punctuation 、。「」, spaces, Hangul, Cyrillic,
  emoji) is **not classified** and not counted, so Latin% + CJK% = 100 whenever any token
  was found (as in the paper's Table 1).
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from engine.data.languages import LANGUAGES
from engine.errors import UserError

__all__ = ["LATIN", "CJK", "SCRIPT_OF_LANG", "classify_tokens", "script_shares", "control_rate",
           "effect_ratio", "mean_effect_ratio", "DEFAULT_TAU"]

LATIN = "latin"
CJK = "cjk"
DEFAULT_TAU = 10.0

SCRIPT_OF_LANG = {code: lang.script for code, lang in LANGUAGES.items()}

_LATIN_CLASS = ("A-Za-z\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u024F\u1E00-\u1EFF"
                "\uFF21-\uFF3A\uFF41-\uFF5A")
_CJK_CLASS = ("\u3005-\u3007"            # 々 〆 〇
              "\u3040-\u309F"            # Hiragana
              "\u30A0-\u30FF"            # Katakana (incl. ー)
              "\u31F0-\u31FF"            # Katakana phonetic extensions
              "\u3400-\u4DBF"            # Han Extension A
              "\u4E00-\u9FFF"            # Han
              "\uF900-\uFAFF"            # Han compatibility
              "\uFF66-\uFF9F"            # halfwidth Katakana
              "\U00020000-\U0003134F")   # Han Extensions B-G, compatibility supplement
_PATTERNS = {
    "char": re.compile(f"(?P<latin>[{_LATIN_CLASS}]+)|(?P<cjk>[{_CJK_CLASS}])"),
    "run": re.compile(f"(?P<latin>[{_LATIN_CLASS}]+)|(?P<cjk>[{_CJK_CLASS}]+)"),
}


def classify_tokens(text: str, *, cjk: str = "char") -> list[str]:
    """Scripts of the classified tokens of ``text`` in order: each ``"latin"`` or ``"cjk"``.

    ``cjk="char"`` (default) counts each CJK character as a token, ``cjk="run"`` each maximal
    CJK run; Latin tokens are always words (letter runs). Unclassified characters are skipped.
    """
    if not isinstance(text, str):
        raise UserError(f"text must be a str, got {type(text).__name__}")
    try:
        pattern = _PATTERNS[cjk]
    except KeyError:
        raise UserError(f"cjk must be 'char' or 'run', got {cjk!r}") from None
    return [m.lastgroup for m in pattern.finditer(text)]


def _texts(texts) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)


def script_shares(texts: str | Iterable[str], *, cjk: str = "char") -> dict:
    """Shares (percent) of Latin and CJK tokens pooled over all ``texts``.

    Returns ``{"latin": %, "cjk": %, "tokens": n}``; tokens are pooled (micro-average), so a
    long output weighs more than a short one. With no classified token both shares are NaN.
    """
    latin = cjk_count = 0
    for text in _texts(texts):
        for script in classify_tokens(text, cjk=cjk):
            if script == LATIN:
                latin += 1
            else:
                cjk_count += 1
    total = latin + cjk_count
    if total == 0:
        return {LATIN: math.nan, CJK: math.nan, "tokens": 0}
    return {LATIN: 100.0 * latin / total, CJK: 100.0 * cjk_count / total, "tokens": total}


def control_rate(texts: str | Iterable[str], target_script: str, *, cjk: str = "char") -> float:
    """Percent of classified tokens in ``target_script`` (``"latin"``, ``"cjk"`` or a language
    code from ``SCRIPT_OF_LANG``, e.g. ``"jpn"``), pooled over ``texts``; NaN with no token."""
    script = SCRIPT_OF_LANG.get(target_script, target_script)
    if script not in (LATIN, CJK):
        raise UserError(f"target_script must be 'latin', 'cjk' or one of {sorted(SCRIPT_OF_LANG)}, "
                        f"got {target_script!r}")
    return script_shares(texts, cjk=cjk)[script]


def effect_ratio(cr_tr: float, cr_asr: float, tau: float = DEFAULT_TAU) -> float | None:
    """Cross-modal effect ratio ``CR_TR / CR_ASR``; ``None`` (excluded) when ``CR_ASR < tau``.

    Control rates are percentages in [0, 100]. ``tau`` (default 10) must be positive so the
    ratio is always defined; below it, control in the source modality is too weak to compare.
    """
    for name, value in (("cr_tr", cr_tr), ("cr_asr", cr_asr)):
        if value is None or not math.isfinite(value) or not 0 <= value <= 100:
            raise UserError(f"{name} must be a control rate in [0, 100], got {value!r}")
    if not (math.isfinite(tau) and tau > 0):
        raise UserError(f"tau must be a positive percentage, got {tau!r}")
    if cr_asr < tau:
        return None
    return cr_tr / cr_asr


def mean_effect_ratio(pairs: Iterable[Mapping], tau: float = DEFAULT_TAU) -> dict:
    """Effect ratio of every (src, tgt, step) pair and their mean per step over valid pairs.

    ``pairs``: mappings with keys ``src``, ``tgt``, ``step``, ``cr_asr``, ``cr_tr``.
    Returns (the ``steering.effect_ratio`` block of analysis.json)::

        {"tau": tau,
         "pairs": [{"src", "tgt", "step", "cr_asr", "cr_tr", "ratio": float | None, "excluded": bool}],
         "excluded": [{"src", "tgt", "step", "cr_asr"}],      # below tau, listed, never dropped
         "mean": {"<step>": float | None},                   # None when no pair of that step is valid
         "n_valid": {"<step>": int}}

    Steps keep their first-seen order; keys are strings so the block is JSON as is.
    """
    rows, excluded, by_step = [], [], {}
    for p in pairs:
        try:
            src, tgt, step, cr_asr, cr_tr = p["src"], p["tgt"], p["step"], p["cr_asr"], p["cr_tr"]
        except KeyError as exc:
            raise UserError(f"effect-ratio pair is missing {exc}; need src, tgt, step, cr_asr, cr_tr") from None
        ratio = effect_ratio(cr_tr, cr_asr, tau)
        rows.append({"src": src, "tgt": tgt, "step": step, "cr_asr": cr_asr, "cr_tr": cr_tr,
                     "ratio": ratio, "excluded": ratio is None})
        by_step.setdefault(str(step), [])
        if ratio is None:
            excluded.append({"src": src, "tgt": tgt, "step": step, "cr_asr": cr_asr})
        else:
            by_step[str(step)].append(ratio)
    return {
        "tau": tau,
        "pairs": rows,
        "excluded": excluded,
        "mean": {s: (sum(v) / len(v) if v else None) for s, v in by_step.items()},
        "n_valid": {s: len(v) for s, v in by_step.items()},
    }

