r"""Output-language control measured by script: token-level script classification from the
Unicode Script property, control rate, and the cross-modal effect ratio (SPEC §2).

A **script class** (``SCRIPT_CLASSES``) is a set of Unicode scripts with a token unit. Its
characters are those whose Script property is one of its scripts and whose General Category is
a letter, mark or letter-number (``[\p{L}\p{M}\p{Nl}]``), plus the Common letters and marks
whose Script_Extensions name one of its scripts (ー, 〆, the Arabic tatweel), plus the whole
Unicode blocks listed for it. Characters of the Inherited script (combining accents of
decomposed text, Arabic harakat) belong to no class and split a word, as in the paper's ranges;
SeamlessM4T decodes to composed (NFKC) text, so this matters only for text made elsewhere. Everything else
(digits, punctuation, spaces, symbols, emoji) is never classified. The classes come from the
Unicode Character Database as compiled into the ``regex`` package (``\p{sc=...}``,
``\p{scx=...}``, ``\p{Block=...}``), not from hand-written ranges.

Token definition (decision; the paper only says "token-level ... regular expressions"):

- a **word** class (``unit="word"``: Latin, Cyrillic, Greek, Arabic, Hebrew, the Indic scripts,
  Hangul, ...) has one token per maximal run of its characters: one word, however long; an
  apostrophe or hyphen splits words ("l'homme" is two tokens);
- a **character** class (``unit="char"``: ``cjk``, Thai, Lao, Khmer, Myanmar: scripts written
  without spaces between words) has one token per character, since one character is roughly one
  subword token of a multilingual tokenizer. ``cjk="run"`` counts maximal runs instead (for
  sensitivity checks);
- a text is classified against **two** classes at a time, those of a pair's source and target
  languages; a character both could claim (a Common mark shared by two scripts) belongs to
  neither, and characters of any other class are not counted, so the two shares sum to 100
  whenever any token was found (as in the paper's Table 1).

The paper's Latin vs CJK metric is the pair ``("latin", "cjk")``: ``cjk`` joins Han, Hiragana
and Katakana plus the Hiragana, Katakana and Katakana Phonetic Extensions blocks (which add the
kana punctuation ゛゜゠・ the Script property files under Common). On every string whose
letters are those of the project's earlier hand-written ranges (ASCII, Latin-1, Latin
Extended-A/B and Additional, fullwidth Latin, CJK ideographs with extensions A-G and
compatibility forms, kana with halfwidth forms, 々〆〇) it gives the same tokens, hence the same
numbers (tests/test_control_scripts.py checks this against that implementation). It also
counts what those ranges missed: the Latin letters of the IPA, phonetic and Latin Extended-C/D/E
blocks, ª º, ligatures ﬀ-ﬆ, Roman numerals; Kana Supplement/Extended; Hangzhou numerals.

Two languages of one class (German and French, Chinese and Japanese) cannot be told apart by
script: ``pair_scripts`` says so and callers use language identification (engine.science.langid).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import regex

from engine.errors import UserError
from engine.science import langid
from engine.science.languages import LANGUAGES, get_language

__all__ = ["LATIN", "CJK", "SCRIPT_CLASSES", "SCRIPT_OF_LANG", "ScriptClass", "classify_tokens",
           "script_shares", "control_rate", "pair_scripts", "same_script", "effect_ratio",
           "mean_effect_ratio", "DEFAULT_TAU"]

LATIN = "latin"
CJK = "cjk"
DEFAULT_TAU = 10.0


@dataclass(frozen=True)
class ScriptClass:
    """Unicode scripts (Script property values) counted as one class, its token unit, and
    whole Unicode blocks (Block property values) it also owns."""
    scripts: tuple[str, ...]
    unit: str                       # "word" | "char"
    blocks: tuple[str, ...] = ()


SCRIPT_CLASSES: dict[str, ScriptClass] = {
    "latin": ScriptClass(("Latin",), "word"),
    "cjk": ScriptClass(("Han", "Hiragana", "Katakana"), "char",
                       ("Hiragana", "Katakana", "Katakana_Phonetic_Extensions")),
    "cyrillic": ScriptClass(("Cyrillic",), "word"),
    "greek": ScriptClass(("Greek",), "word"),
    "arabic": ScriptClass(("Arabic",), "word"),
    "hebrew": ScriptClass(("Hebrew",), "word"),
    "armenian": ScriptClass(("Armenian",), "word"),
    "georgian": ScriptClass(("Georgian",), "word"),
    "ethiopic": ScriptClass(("Ethiopic",), "word"),
    "devanagari": ScriptClass(("Devanagari",), "word"),
    "bengali": ScriptClass(("Bengali",), "word"),
    "gurmukhi": ScriptClass(("Gurmukhi",), "word"),
    "gujarati": ScriptClass(("Gujarati",), "word"),
    "oriya": ScriptClass(("Oriya",), "word"),
    "tamil": ScriptClass(("Tamil",), "word"),
    "telugu": ScriptClass(("Telugu",), "word"),
    "kannada": ScriptClass(("Kannada",), "word"),
    "malayalam": ScriptClass(("Malayalam",), "word"),
    "sinhala": ScriptClass(("Sinhala",), "word"),
    "hangul": ScriptClass(("Hangul",), "word"),
    "thai": ScriptClass(("Thai",), "char"),
    "lao": ScriptClass(("Lao",), "char"),
    "khmer": ScriptClass(("Khmer",), "char"),
    "myanmar": ScriptClass(("Myanmar",), "char"),
}

SCRIPT_OF_LANG = {code: lang.script for code, lang in LANGUAGES.items()}


def _class_set(name: str) -> str:
    """regex V1 character-set body (without the outer brackets) of script class ``name``."""
    cls = SCRIPT_CLASSES[name]
    own = "".join(f"\\p{{sc={s}}}" for s in cls.scripts)
    ext = "".join(f"\\p{{scx={s}}}" for s in cls.scripts)
    blocks = "".join(f"\\p{{Block={b}}}" for b in cls.blocks)
    return (f"[[{own}]&&[\\p{{L}}\\p{{M}}\\p{{Nl}}]]"
            f"[\\p{{sc=Common}}&&[{ext}]&&[\\p{{L}}\\p{{M}}]]{blocks}")


def _check_class(name: str) -> str:
    script = SCRIPT_OF_LANG.get(name, name)
    if script not in SCRIPT_CLASSES:
        raise UserError(f"script {name!r} is neither a script class ({', '.join(SCRIPT_CLASSES)}) "
                        "nor a language code of engine.science.languages")
    return script


@lru_cache(maxsize=256)
def _pattern(a: str, b: str, cjk: str) -> "regex.Pattern":
    """One alternation with a named group per class; each class minus what the other claims."""
    if cjk not in ("char", "run"):
        raise UserError(f"cjk must be 'char' or 'run', got {cjk!r}")
    groups = []
    for name, other in ((a, b), (b, a)):
        chars = f"[[{_class_set(name)}]--[{_class_set(other)}]]"
        many = SCRIPT_CLASSES[name].unit == "word" or cjk == "run"
        groups.append(f"(?P<{name}>{chars}{'+' if many else ''})")
    return regex.compile("|".join(groups), regex.V1)


def pair_scripts(src: str, tgt: str) -> tuple[str, str]:
    """Script classes of a pair of languages (or of two class names), e.g. ``("latin", "cjk")``.

    UserError for a code that is neither a language of the table nor a script class.
    """
    return _check_class(src), _check_class(tgt)


def same_script(src: str, tgt: str) -> bool:
    """True when ``src`` and ``tgt`` share a script class, so script cannot tell them apart."""
    a, b = pair_scripts(src, tgt)
    return a == b


def _two(scripts) -> tuple[str, str]:
    a, b = (_check_class(s) for s in scripts)
    if a == b:
        raise UserError(f"both languages are written in script '{a}': script cannot tell them apart; "
                        "use the language-ID control rate (engine.science.langid.lid_control_rate)")
    return a, b


def classify_tokens(text: str, scripts: tuple[str, str] = (LATIN, CJK), *, cjk: str = "char") -> list[str]:
    """Script classes of the classified tokens of ``text`` in order, each one of ``scripts``.

    ``scripts``: two distinct script classes or language codes (default the paper's Latin and
    CJK); tokens are named by class (``"latin"``, ``"cyrillic"``, ...). ``cjk="char"``
    (default) counts each character of a character-unit class as a token, ``cjk="run"`` each
    maximal run; word-unit classes always count runs. Unclassified characters are skipped.
    """
    if not isinstance(text, str):
        raise UserError(f"text must be a str, got {type(text).__name__}")
    a, b = _two(scripts)
    return [m.lastgroup for m in _pattern(a, b, cjk).finditer(text)]


def _texts(texts) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)


def script_shares(texts: str | Iterable[str], scripts: tuple[str, str] = (LATIN, CJK), *,
                  cjk: str = "char") -> dict:
    """Shares (percent) of the two ``scripts``' tokens pooled over all ``texts``.

    Returns ``{class_a: %, class_b: %, "tokens": n}`` (``{"latin", "cjk", "tokens"}`` by
    default); tokens are pooled (micro-average), so a long output weighs more than a short one.
    With no classified token both shares are NaN.
    """
    a, b = _two(scripts)
    counts = {a: 0, b: 0}
    for text in _texts(texts):
        for script in classify_tokens(text, (a, b), cjk=cjk):
            counts[script] += 1
    total = counts[a] + counts[b]
    if total == 0:
        return {a: math.nan, b: math.nan, "tokens": 0}
    return {a: 100.0 * counts[a] / total, b: 100.0 * counts[b] / total, "tokens": total}


def control_rate(texts: str | Iterable[str], target_script: str, *, source: str | None = None,
                 cjk: str = "char") -> float:
    """Percent of classified tokens in ``target_script``, pooled over ``texts``; NaN with no token.

    ``target_script`` and ``source``: script classes or language codes (e.g. ``"jpn"``). Tokens
    are classified into the two classes of ``source`` and target; without ``source`` the other
    class is the paper's (Latin for a CJK target, CJK for a Latin target).
    """
    target = _check_class(target_script)
    if source is None:
        if target not in (LATIN, CJK):
            raise UserError(f"control_rate toward '{target}' needs source= (the language or script "
                            "the output is steered away from)")
        source = CJK if target == LATIN else LATIN
    return script_shares(texts, (_check_class(source), target), cjk=cjk)[target]


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


# ---------------------------------------------------------------------------------------------
# Command line: score any file of outputs


def score_lines(lines: list[str], src: str, tgt: str, *, fasttext_model: str | None = None) -> dict:
    """Control of each line (one output per line) and overall, toward ``tgt`` away from ``src``.

    Per line and overall: ``script``: the percent of tgt's script among the two classes'
    tokens (None when src and tgt share a script class or no token was found) with its token
    count; ``lid``: the language-ID control rate (engine.science.langid.lid_control_rate, per output and
    per segment; None when lid.176 lacks either language); ``ft_src`` / ``ft_tgt``: fastText
    probabilities (percent; mean over lines overall). ``control_rate`` / ``control_by``: the
    script rate where the scripts differ, else the per-segment language-ID rate.
    """
    get_language(src), get_language(tgt)
    a, b = pair_scripts(src, tgt)
    has_lid = bool(get_language(src).fasttext_label and get_language(tgt).fasttext_label)

    def num(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)

    def block(texts):
        out = {"n": len(texts)}
        if a != b:
            shares = script_shares(texts, (a, b))
            out["script"] = num(shares[b])
            out["tokens"] = shares["tokens"]
        else:
            out["script"], out["tokens"] = None, 0
        if has_lid:
            lid = langid.lid_control_rate(texts, src, tgt, model_path=fasttext_model)
            out["lid"] = {"output": num(lid["output"]), "segment": num(lid["segment"]),
                          "segments": lid["segments"]}
        else:
            out["lid"] = None
        ft = langid.mean_probabilities(texts, [src, tgt], model_path=fasttext_model) if texts else {}
        out["ft_src"], out["ft_tgt"] = num(ft.get(src)), num(ft.get(tgt))
        out["control_by"] = "script" if a != b else ("langid" if has_lid else None)
        out["control_rate"] = out["script"] if a != b else (out["lid"] or {}).get("segment")
        return out

    return {"src": src, "tgt": tgt, "scripts": [a, b], "lines": [block([line]) for line in lines],
            "overall": block(lines)}


def score_arguments(parser) -> None:
    parser.add_argument("--src", required=True, help="language the outputs are steered away from (SeamlessM4T code)")
    parser.add_argument("--tgt", required=True, help="language the outputs should be in (SeamlessM4T code)")
    parser.add_argument("--fasttext-model", default=None, help="path to lid.176.bin (default: the bundled lid.176.ftz)")
    parser.add_argument("file", help="text file, one output per line; '-' reads stdin")


def score_command(args) -> int:
    import json
    import sys
    from pathlib import Path

    get_language(args.src), get_language(args.tgt)
    if args.src == args.tgt:
        raise UserError(f"--src and --tgt are both '{args.src}'; control needs two languages")
    if args.file == "-":
        text = sys.stdin.read()
    else:
        path = Path(args.file)
        if not path.is_file():
            raise UserError(f"file '{args.file}' not found; pass a text file with one output per line, or '-'")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(f"file '{args.file}' is not UTF-8 text") from None
    lines = text.splitlines()
    result = score_lines(lines, args.src, args.tgt, fasttext_model=args.fasttext_model)

    def fmt(x):
        return "-" if x is None else f"{x:.1f}"

    print("line\tscript%\ttokens\tlid_output%\tlid_segment%\tft_src%\tft_tgt%")
    for i, row in enumerate(result["lines"], 1):
        lid = row["lid"] or {}
        print(f"{i}\t{fmt(row['script'])}\t{row['tokens']}\t{fmt(lid.get('output'))}\t"
              f"{fmt(lid.get('segment'))}\t{fmt(row['ft_src'])}\t{fmt(row['ft_tgt'])}")
    print(json.dumps(result, ensure_ascii=False, sort_keys=True))
    return 0
