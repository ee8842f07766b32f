"""FLEURS transcriptions (the paper's data) and the seeded parallel selection over them.

Only the transcription files ``data/<config>/{train,dev,test}.tsv`` of dataset repo
``google/fleurs`` are read, through ``huggingface_hub`` (its cache makes a second run work
offline). The files have no header; the seven tab-separated columns are: id, audio file name,
raw transcription, normalised transcription, character transcription, number of samples,
speaker gender. FLEURS has several recordings per sentence id; the id is what is shared across
languages, so rows are deduplicated by id.

Tests and offline users pass ``root`` (the pipeline's ``data.fleurs_root``): a local directory
laid out like the dataset repo (``<root>/data/<config>/<split>.tsv``); the Hub is then never
contacted.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.errors import UserError
from engine.pipeline.inputs.corpus import STEER_FRACTION, Selection, Sentence, make_selection
from engine.science.languages import LANGS, check_langs, get_language

FLEURS_REPO = "google/fleurs"
SPLITS: tuple[str, ...] = ("train", "dev", "test")
COLUMNS: tuple[str, ...] = ("id", "audio_file", "raw_transcription", "transcription",
                            "characters", "num_samples", "gender")
DEFAULT_N = 1000


@dataclass(frozen=True)
class FleursRow:
    sentence_id: str
    audio_file: str
    raw_transcription: str      # cased, punctuated: what the model reads and the reference
    transcription: str          # normalised (lower case, no punctuation)
    characters: str
    num_samples: int
    gender: str
    split: str


def parse_tsv(path: str | os.PathLike, split: str) -> list[FleursRow]:
    """Rows of one FLEURS transcription file, in file order.

    Raises UserError naming the file and line for a wrong column count, a non-integer sample
    count, or an empty id or raw transcription, and naming the file when it holds no row at all
    (an empty or truncated download). Blank lines are skipped.
    """
    path = Path(path)
    rows = []
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            lines = handle.read().split("\n")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text ({exc.reason}): re-download the FLEURS file") from None
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        where = f"{path}:{lineno}"
        if len(fields) != len(COLUMNS):
            raise UserError(f"{where}: expected {len(COLUMNS)} tab-separated columns "
                            f"({', '.join(COLUMNS)}), found {len(fields)}: fix or re-download the file")
        sentence_id, audio_file, raw, normalised, characters, num_samples, gender = fields
        if not sentence_id.strip() or not raw.strip():
            raise UserError(f"{where}: empty {'id' if not sentence_id.strip() else 'raw transcription'}: "
                            f"fix or re-download the file")
        try:
            n_samples = int(num_samples)
        except ValueError:
            raise UserError(f"{where}: sample count {num_samples!r} is not an integer: "
                            f"fix or re-download the file") from None
        rows.append(FleursRow(sentence_id.strip(), audio_file, raw.strip(), normalised, characters,
                              n_samples, gender, split))
    if not rows:
        raise UserError(f"{path} holds no transcription rows: re-download the FLEURS file "
                        "(or fix the copy under data.fleurs_root)")
    return rows


def tsv_path(config: str, split: str, *, root: str | os.PathLike | None = None,
             revision: str | None = None) -> Path:
    """Local path of ``data/<config>/<split>.tsv``: under ``root`` if given, else from the Hub cache
    (downloading it when online). UserError naming the config and the fix when unavailable."""
    filename = f"data/{config}/{split}.tsv"
    if root is not None:
        path = Path(root) / filename
        if not path.is_file():
            raise UserError(f"FLEURS file {path} not found: put the {config} transcriptions under "
                            f"{root} (layout data/<config>/<split>.tsv), or set data.fleurs_root='' to "
                            "read them from the Hugging Face Hub")
        return path
    from huggingface_hub import hf_hub_download
    try:
        return Path(hf_hub_download(FLEURS_REPO, filename, repo_type="dataset", revision=revision))
    except Exception as exc:  # offline without cache, network error, missing revision...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"FLEURS transcriptions {config}/{split}.tsv are unavailable ({type(exc).__name__}: "
                        f"{reason[:160]}): connect to the Hugging Face Hub once to cache them "
                        f"(unset HF_HUB_OFFLINE), or set data.fleurs_root to a local copy laid out "
                        f"data/<config>/<split>.tsv") from None


def _id_key(sentence_id: str):
    # FLEURS ids are integers; compare them as numbers, anything else after them as strings.
    return (0, int(sentence_id), "") if sentence_id.isdigit() else (1, 0, sentence_id)


def load_config(config: str, *, root=None, revision: str | None = None,
                splits: Sequence[str] = SPLITS) -> dict[str, FleursRow]:
    """One row per sentence id of FLEURS config ``config`` across ``splits``.

    Of several recordings of one id the first after sorting by (split order, audio file name)
    is kept, so the choice does not depend on file order.
    """
    rows: list[FleursRow] = []
    for split in splits:
        if split not in SPLITS:
            raise UserError(f"unknown FLEURS split {split!r}: use some of {' '.join(SPLITS)}")
        rows.extend(parse_tsv(tsv_path(config, split, root=root, revision=revision), split))
    split_order = {split: i for i, split in enumerate(SPLITS)}
    rows.sort(key=lambda r: (_id_key(r.sentence_id), split_order[r.split], r.audio_file))
    unique: dict[str, FleursRow] = {}
    for row in rows:
        unique.setdefault(row.sentence_id, row)
    return unique


def _tables(langs: Sequence[str], *, root, revision, splits) -> dict[str, dict[str, FleursRow]]:
    return {lang: load_config(get_language(lang).fleurs_config, root=root, revision=revision, splits=splits)
            for lang in ("eng", *langs)}


def count_common(langs: Sequence[str], *, root=None, revision: str | None = None,
                 splits: Sequence[str] = SPLITS) -> int:
    """How many sentence ids every language of ``langs`` and English share: the most sentences
    ``select_fleurs`` can select. Reads the same files (UserError as they do)."""
    tables = _tables(check_langs(langs), root=root, revision=revision, splits=splits)
    return len(set.intersection(*(set(table) for table in tables.values())))


def select_fleurs(langs: Sequence[str] = LANGS, n: int = DEFAULT_N, seed: int = 0, *,
                  n_steer: int | None = None, steer_fraction: float = STEER_FRACTION,
                  root=None, revision: str | None = None, splits: Sequence[str] = SPLITS) -> Selection:
    """N FLEURS sentence ids present in every language of ``langs`` and in English.

    The common ids are sorted, permuted with ``numpy.random.default_rng(seed)`` and the first
    ``n`` taken, so the same inputs give the same selection on every run. Each Sentence has
    ``texts`` (raw transcriptions) for ``langs`` and "eng" (the X->En reference) and
    ``readings`` for the Latin-script languages (Mandarin and Japanese readings for espeak-ng are
    made by the speech layer), and ``normalized``: FLEURS' normalised transcriptions. The last ``n_steer`` (default ``steer_fraction`` of ``n``) are the
    held-out steering set. UserError stating the count when fewer than ``n`` ids are common.
    """
    langs = check_langs(langs)
    if "eng" in langs:
        raise UserError("eng is the X->En target, not a study language: remove it from the language list")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise UserError(f"n={n!r} is invalid: select an integer number of sentences, at least 2")
    tables = _tables(langs, root=root, revision=revision, splits=splits)
    common = set.intersection(*(set(table) for table in tables.values()))
    if len(common) < n:
        configs = " ".join(get_language(lang).fleurs_config for lang in tables)
        raise UserError(f"only {len(common)} FLEURS sentence ids are common to {configs}, fewer than "
                        f"n={n}: lower n to at most {len(common)}")
    ordered = sorted(common, key=_id_key)
    chosen = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))[:n]]
    sentences, audio_files = [], {}
    for sentence_id in chosen:
        texts = {lang: table[sentence_id].raw_transcription for lang, table in tables.items()}
        readings = {lang: text for lang, text in texts.items() if get_language(lang).reading == "text"}
        normalized = {lang: table[sentence_id].transcription for lang, table in tables.items()
                      if table[sentence_id].transcription.strip()}
        sentences.append(Sentence(sentence_id, texts, readings, normalized))
        for lang, table in tables.items():
            row = table[sentence_id]
            audio_files[(sentence_id, lang)] = f"{row.split}/{row.audio_file}"
    return make_selection(sentences, langs, source="fleurs", seed=seed, n_steer=n_steer,
                          steer_fraction=steer_fraction, audio_files=audio_files)


def natural_audio_index(selection: Selection, audio_root: str | os.PathLike) -> dict[tuple[str, str], Path]:
    """(lang, raw text) -> recorded FLEURS audio, for the ``natural`` speech backend.

    ``audio_root`` holds the extracted audio archives as
    ``<audio_root>/<config>/audio/<split>/<audio file>`` (the dataset's
    ``data/<config>/audio/<split>.tar.gz`` unpacked into ``audio/``). Missing files are not an
    error here: the backend reports them per sentence as synthesis failures.
    """
    if selection.source != "fleurs":
        raise UserError("the natural speech backend needs a FLEURS selection: recorded audio exists "
                        "only for FLEURS sentences (use espeak or xtts for the embedded corpus)")
    index = {}
    by_id = {s.sentence_id: s for s in selection.sentences}
    for (sentence_id, lang), relative in selection.audio_files.items():
        config = get_language(lang).fleurs_config
        index[(lang, by_id[sentence_id].texts[lang])] = Path(audio_root) / config / "audio" / relative
    return index
