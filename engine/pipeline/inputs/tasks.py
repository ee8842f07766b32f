"""The four task views built from one selection and its split.

| task | modality | input | tgt_lang | reference |
|------|----------|-------|----------|-----------|
| S2T  | speech   | X     | eng      | English text of the sentence |
| T2T  | text     | X     | eng      | English text of the sentence |
| ASR  | speech   | X     | X        | the X text itself |
| TR   | text     | X     | X        | the X text itself |

Speech examples point at the cached 16 kHz WAV of their sentence; a sentence whose audio is
missing (its synthesis failed) is left out of S2T and ASR and counted in ``TaskViews.excluded``.
Text tasks keep every sentence.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from engine.errors import UserError
from engine.pipeline.inputs.corpus import Selection
from engine.science.languages import TARGET_LANG, check_langs

TASKS: tuple[str, ...] = ("S2T", "T2T", "ASR", "TR")
MODALITY = {"S2T": "speech", "T2T": "text", "ASR": "speech", "TR": "text"}
TO_ENGLISH = {"S2T": True, "T2T": True, "ASR": False, "TR": False}


@dataclass(frozen=True)
class Example:
    example_id: str          # f"{sentence_id}/{lang}/{task}"
    sentence_id: str
    lang: str
    task: str
    modality: str            # "speech" | "text"
    tgt_lang: str
    text: str                # input-language text (the transcription for speech)
    reference: str           # gold output text
    audio_path: str | None   # cached 16 kHz wav for speech tasks
    split: str               # "identify" | "steer"


class TaskViews(dict):
    """``dict[task, list[Example]]`` plus ``excluded[task][lang]``: speech examples left out
    because their audio is missing (0 entries omitted)."""

    def __init__(self, views: dict, excluded: dict):
        super().__init__(views)
        self.excluded = excluded

    def split(self, name: str) -> dict[str, list[Example]]:
        """The same views restricted to split ``name`` ("identify" | "steer")."""
        if name not in ("identify", "steer"):
            raise UserError(f"unknown split {name!r}: use identify or steer")
        return {task: [e for e in examples if e.split == name] for task, examples in self.items()}


def _audio_paths(speech) -> Mapping[tuple[str, str], str]:
    if speech is None:
        return {}
    return getattr(speech, "paths", speech)


def build_tasks(selection: Selection, speech_cache=None, *, langs: Sequence[str] | None = None,
                tasks: Sequence[str] = TASKS) -> TaskViews:
    """Examples of every task in ``tasks`` for every sentence and language of ``selection``.

    Parameters
    ----------
    selection : the parallel sentences and their identify/steer split.
    speech_cache : a ``speech.SynthesisResult`` or a mapping (sentence_id, lang) -> wav path;
        required when a speech task is requested.
    langs : study languages (default ``selection.langs``; each must be in the selection).
    tasks : subset of TASKS.

    Returns
    -------
    TaskViews: task -> examples ordered by sentence (selection order) then language;
    example ids are unique within and across tasks.
    """
    langs = check_langs(selection.langs if langs is None else langs)
    for lang in langs:
        if lang not in selection.langs:
            raise UserError(f"language {lang} is not in the selection ({' '.join(selection.langs)}): "
                            f"select it or drop it from the task languages")
    for task in tasks:
        if task not in TASKS:
            raise UserError(f"unknown task {task!r}: use some of {' '.join(TASKS)}")
    paths = _audio_paths(speech_cache)
    if speech_cache is None and any(MODALITY[t] == "speech" for t in tasks):
        raise UserError("speech tasks need synthesised audio: pass the result of "
                        "engine.pipeline.inputs.speech.synthesize_sentences as speech_cache")
    views: dict[str, list[Example]] = {task: [] for task in tasks}
    excluded: dict[str, dict[str, int]] = {}
    for sentence in selection.sentences:
        split = selection.split_of(sentence.sentence_id)
        for lang in langs:
            text = sentence.texts[lang]
            for task in tasks:
                speech = MODALITY[task] == "speech"
                audio = paths.get((sentence.sentence_id, lang)) if speech else None
                if speech and audio is None:
                    per_lang = excluded.setdefault(task, {})
                    per_lang[lang] = per_lang.get(lang, 0) + 1
                    continue
                to_english = TO_ENGLISH[task]
                views[task].append(Example(
                    example_id=f"{sentence.sentence_id}/{lang}/{task}",
                    sentence_id=sentence.sentence_id, lang=lang, task=task,
                    modality=MODALITY[task],
                    tgt_lang=TARGET_LANG if to_english else lang,
                    text=text,
                    reference=sentence.texts[TARGET_LANG] if to_english else text,
                    audio_path=audio, split=split))
    return TaskViews(views, excluded)
