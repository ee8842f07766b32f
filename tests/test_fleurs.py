"""FLEURS transcription parsing and the parallel selection, on fixture TSVs (never the network)."""
import csv
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.pipeline.inputs import fleurs
from engine.pipeline.inputs.fleurs import load_config, parse_tsv, select_fleurs, tsv_path
from engine.science.languages import LANGS, LANGUAGES

ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "fleurs"


def _oracle_rows(config):
    """The obvious reading: csv module, every split, all rows."""
    rows = []
    for split in ("train", "dev", "test"):
        with open(ROOT / "data" / config / f"{split}.tsv", encoding="utf-8", newline="") as handle:
            rows += [(r, split) for r in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]
    return rows


def test_parse_tsv_columns():
    rows = parse_tsv(ROOT / "data" / "de_de" / "train.tsv", "train")
    oracle = [r for r, split in _oracle_rows("de_de") if split == "train"]
    assert len(rows) == len(oracle) > 0
    for row, raw in zip(rows, oracle):
        assert (row.sentence_id, row.audio_file, row.raw_transcription, row.transcription,
                row.characters, row.num_samples, row.gender) == (raw[0], raw[1], raw[2], raw[3], raw[4],
                                                                  int(raw[5]), raw[6])
        assert row.split == "train"


@pytest.mark.parametrize("line, match", [
    ("1\ta.wav\tHallo.\thallo\th|a\t100", r"bad\.tsv:2: expected 7 tab-separated columns .* found 6"),
    ("1\ta.wav\tHallo.\thallo\th|a\t100\tMALE\textra", r"bad\.tsv:2: .*found 8"),
    ("1\ta.wav\tHallo.\thallo\th|a\tmany\tMALE", r"bad\.tsv:2: sample count 'many'"),
    ("1\ta.wav\t \thallo\th|a\t100\tMALE", r"bad\.tsv:2: empty raw transcription"),
])
def test_parse_tsv_bad_lines_name_file_and_line(tmp_path, line, match):
    good = "9\tb.wav\tGut.\tgut\tg|u|t\t100\tFEMALE"
    path = tmp_path / "bad.tsv"
    path.write_text(good + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=match):
        parse_tsv(path, "train")


def test_parse_tsv_crlf_and_blank_lines(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_bytes(b"1\ta.wav\tHi.\thi\th|i\t10\tMALE\r\n\r\n2\tb.wav\tYo.\tyo\ty|o\t10\tMALE\r\n")
    assert [r.gender for r in parse_tsv(path, "dev")] == ["MALE", "MALE"]


def test_load_config_dedupes_repeated_recordings():
    table = load_config("de_de", root=ROOT)
    oracle_ids = {r[0] for r, _ in _oracle_rows("de_de")}
    assert set(table) == oracle_ids
    assert len(_oracle_rows("de_de")) == len(oracle_ids) + 2   # ids 3 and 7 recorded twice
    assert table["3"].audio_file == "10030003.wav"              # first after sorting by file name
    assert table["7"].split == "dev"                            # dev precedes test


def test_common_ids_match_oracle():
    id_sets = [{r[0] for r, _ in _oracle_rows(LANGUAGES[l].fleurs_config)} for l in ("eng",) + LANGS]
    common = set.intersection(*id_sets)
    selection = select_fleurs(LANGS, n=len(common), root=ROOT)
    assert {s.sentence_id for s in selection.sentences} == common
    assert len(common) == 10


def test_texts_and_english_reference():
    selection = select_fleurs(LANGS, n=6, root=ROOT)
    tables = {lang: load_config(LANGUAGES[lang].fleurs_config, root=ROOT) for lang in ("eng",) + LANGS}
    for s in selection.sentences:
        assert set(s.texts) == {"eng", *LANGS}
        for lang, text in s.texts.items():
            assert text == tables[lang][s.sentence_id].raw_transcription
        assert set(s.readings) == {"eng", "deu", "spa", "fra"}   # CJK readings are the speech layer's job


def test_selection_deterministic_and_seeded():
    a = select_fleurs(LANGS, n=8, seed=1, root=ROOT)
    b = select_fleurs(LANGS, n=8, seed=1, root=ROOT)
    c = select_fleurs(LANGS, n=8, seed=2, root=ROOT)
    ids = lambda sel: [s.sentence_id for s in sel.sentences]  # noqa: E731
    assert ids(a) == ids(b) and a.steer_ids == b.steer_ids
    assert ids(a) != ids(c)


def test_split_disjoint_and_complete():
    selection = select_fleurs(LANGS, n=10, root=ROOT, n_steer=3)
    assert len(selection.steer_ids) == 3 and len(selection.identify_ids) == 7
    assert not set(selection.steer_ids) & set(selection.identify_ids)
    assert set(selection.steer_ids) | set(selection.identify_ids) == {s.sentence_id for s in selection.sentences}
    assert select_fleurs(LANGS, n=10, root=ROOT).steer_ids == select_fleurs(LANGS, n=10, root=ROOT, n_steer=2).steer_ids


def test_too_few_common_ids_says_how_many():
    with pytest.raises(UserError, match=r"only 10 FLEURS sentence ids are common .* lower n to at most 10"):
        select_fleurs(LANGS, n=11, root=ROOT)
    # fewer languages, more common ids: de_de lacks id 5, ja_jp lacks id 9
    assert len(select_fleurs(("spa", "fra"), n=12, root=ROOT).sentences) == 12


@pytest.mark.parametrize("kwargs, match", [
    (dict(langs=("deu", "xyz")), "unknown language code 'xyz'"),
    (dict(langs=("eng", "deu")), "eng is the X->En target"),
    (dict(langs=("deu", "deu")), "repeats a language"),
    (dict(n=1), "n=1 is invalid"),
    (dict(n_steer=10), "n_steer=10 with 10 sentences is invalid"),
])
def test_bad_arguments(kwargs, match):
    args = dict(langs=LANGS, n=10, root=ROOT) | kwargs
    with pytest.raises(UserError, match=match):
        select_fleurs(**args)


def test_missing_local_file_names_config(tmp_path):
    with pytest.raises(UserError, match=r"de_de/train\.tsv not found: put the de_de transcriptions"):
        tsv_path("de_de", "train", root=tmp_path)


def test_hub_unavailable_names_config_and_fix(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot find the requested files in the disk cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(UserError, match=r"fr_fr/dev\.tsv are unavailable .*connect to the Hugging Face Hub"):
        tsv_path("fr_fr", "dev")


def test_hub_call_arguments(monkeypatch, tmp_path):
    import huggingface_hub

    calls = []

    def fake(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs))
        return str(tmp_path / "x.tsv")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    assert tsv_path("ja_jp", "test", revision="abc") == tmp_path / "x.tsv"
    assert calls == [("google/fleurs", "data/ja_jp/test.tsv", {"repo_type": "dataset", "revision": "abc"})]


def test_natural_audio_index():
    selection = select_fleurs(LANGS, n=10, root=ROOT)
    index = fleurs.natural_audio_index(selection, "/audio")
    s = next(x for x in selection.sentences if x.sentence_id == "7")
    assert index[("cmn", s.texts["cmn"])] == Path("/audio/cmn_hans_cn/audio/dev/10070007.wav")
    assert len(index) == 10 * 6


@pytest.mark.network
def test_real_fleurs_dev_transcriptions():
    rows = parse_tsv(tsv_path("de_de", "dev"), "dev")
    assert len(rows) > 300 and all(r.raw_transcription for r in rows)
