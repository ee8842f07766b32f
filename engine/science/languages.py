"""One table of language codes: SeamlessM4T <-> FLEURS config <-> espeak-ng voice <-> fastText <-> script.

SeamlessM4T codes ("deu", "cmn", ...) are the project's identifiers everywhere; every other code
is looked up here so that no module spells a FLEURS config or an espeak voice on its own.

The table holds every FLEURS language whose text SeamlessM4T's text decoder can generate (90 of
FLEURS' 102 configs; v1 and v2 share the 96 text languages). Sources:

- FLEURS configs: the ``google/fleurs`` dataset card (102 configs, ``<iso639>_<region>``).
- SeamlessM4T codes: the text-target column of the supported-language table in
  ``facebookresearch/seamless_communication`` docs/m4t/README.md, which is the key set of the
  checkpoints' ``generation_config.text_decoder_lang_to_code_id``. Mapping choices: ``ar_eg`` ->
  ``arb`` (FLEURS reads FLoRes, written in Modern Standard Arabic), ``fa_ir`` -> ``pes``,
  ``ff_sn`` -> ``fuv``, ``fil_ph`` -> ``tgl``, ``om_et`` -> ``gaz``, ``ms_my`` -> ``zlm``,
  ``mn_mn`` -> ``khk``, ``ne_np`` -> ``npi``, ``lv_lv`` -> ``lvs``, ``uz_uz`` -> ``uzn``,
  ``sw_ke`` -> ``swh``, ``ps_af`` -> ``pbt``. Left out, because the text decoder has no such
  target: ``ast_es``, ``ha_ng``, ``kam_ke``, ``kea_cv``, ``lb_lu``, ``ln_cd``, ``mi_nz``,
  ``nso_za``, ``oc_fr``, ``umb_ao``, ``wo_sn``, ``xh_za``.
- fastText labels: the 176 labels of lid.176 (fasttext.cc, "Language identification");
  ``""`` where lid.176 has no label (Fulfulde, Oromo, Igbo, Ganda, Luo, Nyanja, Shona, Zulu):
  those languages get no language-ID control rate.
- Scripts: the FLoRes-200 script subtag FLEURS' text comes from (``rus_Cyrl``, ``snd_Arab``,
  ``srp_Cyrl``, ``asm_Beng``, ...), as a script class of ``engine.science.scripts.SCRIPT_CLASSES``
  (``"cjk"`` joins Han, Hiragana and Katakana, as the paper does).
- espeak-ng voices: the voice of that language in espeak-ng 1.51 (``espeak-ng --voices``);
  ``""`` where espeak-ng has none (speech for it needs another backend).

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
    fasttext_label: str  # lid.176 label, e.g. "de"; "" when lid.176 has none
    script: str          # script class of engine.science.scripts.SCRIPT_CLASSES: "latin", "cjk", "cyrillic", ...


LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in (
        Language("afr", "Afrikaans", "af_za", "af", "text", "af", "latin"),
        Language("amh", "Amharic", "am_et", "am", "text", "am", "ethiopic"),
        Language("arb", "Modern Standard Arabic", "ar_eg", "ar", "text", "ar", "arabic"),
        Language("asm", "Assamese", "as_in", "as", "text", "as", "bengali"),
        Language("azj", "North Azerbaijani", "az_az", "az", "text", "az", "latin"),
        Language("bel", "Belarusian", "be_by", "be", "text", "be", "cyrillic"),
        Language("ben", "Bengali", "bn_in", "bn", "text", "bn", "bengali"),
        Language("bos", "Bosnian", "bs_ba", "bs", "text", "bs", "latin"),
        Language("bul", "Bulgarian", "bg_bg", "bg", "text", "bg", "cyrillic"),
        Language("cat", "Catalan", "ca_es", "ca", "text", "ca", "latin"),
        Language("ceb", "Cebuano", "ceb_ph", "", "text", "ceb", "latin"),
        Language("ces", "Czech", "cs_cz", "cs", "text", "cs", "latin"),
        Language("ckb", "Central Kurdish", "ckb_iq", "", "text", "ckb", "arabic"),
        Language("cmn", "Mandarin Chinese", "cmn_hans_cn", "cmn-latn-pinyin", "pinyin", "zh", "cjk"),
        Language("cym", "Welsh", "cy_gb", "cy", "text", "cy", "latin"),
        Language("dan", "Danish", "da_dk", "da", "text", "da", "latin"),
        Language("deu", "German", "de_de", "de", "text", "de", "latin"),
        Language("ell", "Greek", "el_gr", "el", "text", "el", "greek"),
        Language("eng", "English", "en_us", "en-us", "text", "en", "latin"),
        Language("est", "Estonian", "et_ee", "et", "text", "et", "latin"),
        Language("fin", "Finnish", "fi_fi", "fi", "text", "fi", "latin"),
        Language("fra", "French", "fr_fr", "fr-fr", "text", "fr", "latin"),
        Language("fuv", "Nigerian Fulfulde", "ff_sn", "", "text", "", "latin"),
        Language("gaz", "West Central Oromo", "om_et", "om", "text", "", "latin"),
        Language("gle", "Irish", "ga_ie", "ga", "text", "ga", "latin"),
        Language("glg", "Galician", "gl_es", "", "text", "gl", "latin"),
        Language("guj", "Gujarati", "gu_in", "gu", "text", "gu", "gujarati"),
        Language("heb", "Hebrew", "he_il", "he", "text", "he", "hebrew"),
        Language("hin", "Hindi", "hi_in", "hi", "text", "hi", "devanagari"),
        Language("hrv", "Croatian", "hr_hr", "hr", "text", "hr", "latin"),
        Language("hun", "Hungarian", "hu_hu", "hu", "text", "hu", "latin"),
        Language("hye", "Armenian", "hy_am", "hy", "text", "hy", "armenian"),
        Language("ibo", "Igbo", "ig_ng", "", "text", "", "latin"),
        Language("ind", "Indonesian", "id_id", "id", "text", "id", "latin"),
        Language("isl", "Icelandic", "is_is", "is", "text", "is", "latin"),
        Language("ita", "Italian", "it_it", "it", "text", "it", "latin"),
        Language("jav", "Javanese", "jv_id", "", "text", "jv", "latin"),
        Language("jpn", "Japanese", "ja_jp", "ja", "kana", "ja", "cjk"),
        Language("kan", "Kannada", "kn_in", "kn", "text", "kn", "kannada"),
        Language("kat", "Georgian", "ka_ge", "ka", "text", "ka", "georgian"),
        Language("kaz", "Kazakh", "kk_kz", "kk", "text", "kk", "cyrillic"),
        Language("khk", "Halh Mongolian", "mn_mn", "", "text", "mn", "cyrillic"),
        Language("khm", "Khmer", "km_kh", "", "text", "km", "khmer"),
        Language("kir", "Kyrgyz", "ky_kg", "ky", "text", "ky", "cyrillic"),
        Language("kor", "Korean", "ko_kr", "ko", "text", "ko", "hangul"),
        Language("lao", "Lao", "lo_la", "", "text", "lo", "lao"),
        Language("lit", "Lithuanian", "lt_lt", "lt", "text", "lt", "latin"),
        Language("lug", "Ganda", "lg_ug", "", "text", "", "latin"),
        Language("luo", "Luo", "luo_ke", "", "text", "", "latin"),
        Language("lvs", "Standard Latvian", "lv_lv", "lv", "text", "lv", "latin"),
        Language("mal", "Malayalam", "ml_in", "ml", "text", "ml", "malayalam"),
        Language("mar", "Marathi", "mr_in", "mr", "text", "mr", "devanagari"),
        Language("mkd", "Macedonian", "mk_mk", "mk", "text", "mk", "cyrillic"),
        Language("mlt", "Maltese", "mt_mt", "mt", "text", "mt", "latin"),
        Language("mya", "Burmese", "my_mm", "my", "text", "my", "myanmar"),
        Language("nld", "Dutch", "nl_nl", "nl", "text", "nl", "latin"),
        Language("nob", "Norwegian Bokmal", "nb_no", "nb", "text", "no", "latin"),
        Language("npi", "Nepali", "ne_np", "ne", "text", "ne", "devanagari"),
        Language("nya", "Nyanja", "ny_mw", "", "text", "", "latin"),
        Language("ory", "Odia", "or_in", "or", "text", "or", "oriya"),
        Language("pan", "Punjabi", "pa_in", "pa", "text", "pa", "gurmukhi"),
        Language("pbt", "Southern Pashto", "ps_af", "", "text", "ps", "arabic"),
        Language("pes", "Western Persian", "fa_ir", "fa", "text", "fa", "arabic"),
        Language("pol", "Polish", "pl_pl", "pl", "text", "pl", "latin"),
        Language("por", "Portuguese", "pt_br", "pt-br", "text", "pt", "latin"),
        Language("ron", "Romanian", "ro_ro", "ro", "text", "ro", "latin"),
        Language("rus", "Russian", "ru_ru", "ru", "text", "ru", "cyrillic"),
        Language("slk", "Slovak", "sk_sk", "sk", "text", "sk", "latin"),
        Language("slv", "Slovenian", "sl_si", "sl", "text", "sl", "latin"),
        Language("sna", "Shona", "sn_zw", "", "text", "", "latin"),
        Language("snd", "Sindhi", "sd_in", "sd", "text", "sd", "arabic"),
        Language("som", "Somali", "so_so", "", "text", "so", "latin"),
        Language("spa", "Spanish", "es_419", "es-419", "text", "es", "latin"),
        Language("srp", "Serbian", "sr_rs", "sr", "text", "sr", "cyrillic"),
        Language("swe", "Swedish", "sv_se", "sv", "text", "sv", "latin"),
        Language("swh", "Swahili", "sw_ke", "sw", "text", "sw", "latin"),
        Language("tam", "Tamil", "ta_in", "ta", "text", "ta", "tamil"),
        Language("tel", "Telugu", "te_in", "te", "text", "te", "telugu"),
        Language("tgk", "Tajik", "tg_tj", "", "text", "tg", "cyrillic"),
        Language("tgl", "Tagalog (Filipino)", "fil_ph", "", "text", "tl", "latin"),
        Language("tha", "Thai", "th_th", "th", "text", "th", "thai"),
        Language("tur", "Turkish", "tr_tr", "tr", "text", "tr", "latin"),
        Language("ukr", "Ukrainian", "uk_ua", "uk", "text", "uk", "cyrillic"),
        Language("urd", "Urdu", "ur_pk", "ur", "text", "ur", "arabic"),
        Language("uzn", "Northern Uzbek", "uz_uz", "uz", "text", "uz", "latin"),
        Language("vie", "Vietnamese", "vi_vn", "vi", "text", "vi", "latin"),
        Language("yor", "Yoruba", "yo_ng", "", "text", "yo", "latin"),
        Language("yue", "Cantonese", "yue_hant_hk", "yue", "text", "yue", "cjk"),
        Language("zlm", "Malay", "ms_my", "ms", "text", "ms", "latin"),
        Language("zul", "Zulu", "zu_za", "", "text", "", "latin"),
    )
}

#: Study languages in the paper's ranked order; English is only the target of X->En.
LANGS: tuple[str, ...] = ("deu", "spa", "fra", "cmn", "jpn")
#: The paper's languages, English first (what the embedded corpus holds).
PAPER_LANGS: tuple[str, ...] = ("eng",) + LANGS
#: Every language of the table, English first.
ALL_LANGS: tuple[str, ...] = ("eng",) + tuple(sorted(c for c in LANGUAGES if c != "eng"))
TARGET_LANG = "eng"


#: The paper's names of its languages in its tables ("Chinese" where the language table says
#: "Mandarin Chinese"); any other language is shown by its code (``table_name``).
TABLE_NAMES: dict[str, str] = {"eng": "English", "deu": "German", "spa": "Spanish", "fra": "French",
                               "cmn": "Chinese", "jpn": "Japanese"}


def table_name(code: str) -> str:
    """A language as the paper's tables name it, else its code."""
    return TABLE_NAMES.get(code, code)


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


#: {German, French} -> {Chinese, Japanese} and back: the paper's 8 steering pairs.
PAPER_PAIRS: tuple[tuple[str, str], ...] = (
    ("deu", "jpn"), ("deu", "cmn"), ("fra", "jpn"), ("fra", "cmn"),
    ("jpn", "deu"), ("jpn", "fra"), ("cmn", "deu"), ("cmn", "fra"),
)


def steering_pairs(pairs, langs) -> tuple[tuple[str, str], ...]:
    """The pairs a run steers: ``steer.pairs`` checked against ``data.langs``.

    The default, the paper's 8 pairs, is restricted to the recorded languages (a profile
    recording German and Japanese steers deu<->jpn), as before pairs were a setting; pairs set
    explicitly must all be recorded (:func:`check_pairs`). May return an empty tuple.
    """
    if tuple(tuple(p) for p in pairs) == PAPER_PAIRS:
        return tuple(p for p in PAPER_PAIRS if p[0] in langs and p[1] in langs)
    return check_pairs(pairs, langs)


def check_pairs(pairs, langs=None) -> tuple[tuple[str, str], ...]:
    """Validate steering pairs (and, given ``langs``, against the recorded languages).

    ``pairs``: a sequence of ``[src, tgt]`` (lists or tuples) of table codes. Returns them as
    a tuple of tuples in the given order. UserError, before any work, for a malformed pair, an
    unknown code, ``src == tgt``, a repeated pair, or a language the profile does not record
    (a pair can only be steered toward a language whose neurons were ranked), or a same-script
    pair with a language lid.176 cannot identify (its control rate would be undefined).
    """
    out = []
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(x, str) for x in pair):
            raise UserError(f"steering pair {pair!r} is not [src, tgt]; write steer.pairs as "
                            '[["deu", "jpn"], ["fra", "cmn"]]')
        src, tgt = pair
        get_language(src), get_language(tgt)
        if src == tgt:
            raise UserError(f"steering pair {src}->{tgt} steers a language toward itself; choose two languages")
        missing = [lang for lang in (src, tgt) if langs is not None and lang not in langs]
        if missing:
            raise UserError(f"steering pair {src}->{tgt}: '{missing[0]}' is not recorded (data.langs = "
                            f"{list(langs)}); add it to data.langs or drop the pair")
        if (src, tgt) in out:
            raise UserError(f"steering pair {src}->{tgt} is listed twice in steer.pairs")
        same = LANGUAGES[src].script == LANGUAGES[tgt].script
        unlabeled = [lang for lang in (src, tgt) if not LANGUAGES[lang].fasttext_label]
        if same and unlabeled:
            raise UserError(f"steering pair {src}->{tgt}: both are written in {LANGUAGES[src].script} script, "
                            f"so control is measured by language ID, but fastText lid.176 has no label for "
                            f"'{unlabeled[0]}'; choose a pair in two scripts or languages lid.176 knows")
        out.append((src, tgt))
    return tuple(out)


def check_model_languages(codes, lang_to_code_id, model_id: str = "the model") -> None:
    """UserError unless every code is in the table and in the model's text-decoder languages.

    ``lang_to_code_id``: the checkpoint's ``generation_config.text_decoder_lang_to_code_id``
    (``{"deu": 256042, ...}``). Called when a model is loaded, so that a table entry the
    tokenizer cannot generate is caught before any example runs.
    """
    available = set(lang_to_code_id or {})
    for code in codes:
        get_language(code)
    missing = [code for code in codes if code not in available]
    if missing:
        raise UserError(f"{model_id} cannot generate text in {missing} (its text decoder knows "
                        f"{len(available)} languages: {' '.join(sorted(available))}); choose others")
