"""The rank stage: exact AP of every neuron per language and task, and the ASR medians steering sets.

Work is one column chunk of one stored matrix at a time. Under torchrun every rank takes its
share of the chunks (``engine.pipeline.launch``) and writes each as a part file (``files.save_part``) as
it finishes; rank 0 then joins the parts into the artifacts, byte for byte what one process
writes, and recomputes any part that is missing or damaged. A killed launch, rerun, computes
only the chunks that have no part yet.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np

from engine.errors import UserError
from engine.files import atomic_write_bytes, atomic_write_json, load_part, note, save_part
from engine.model.steering import median_activations
from engine.pipeline import launch
from engine.pipeline.run import (
    RECORD_TASKS,
    Run,
    barrier,
    encoder_valid,
    matrices,
    progress,
    ranking_device,
    save_npy,
    step_valid,
)
from engine.pipeline.store import MatrixStore
from engine.science.ranking import average_precision, on_device

#: Per-chunk results inside the rank stage directory; removed once the stage is complete.
PARTS_SUBDIR = "parts"


@dataclasses.dataclass
class _Matrix:
    """One stored matrix to rank: its rows (valid examples) and their labels."""

    task: str
    name: str
    path: Path
    rows: np.ndarray      # int64 [m] row indices into the store
    labels: np.ndarray    # int64 [m] language index of each row
    n_chunks: int
    medians: bool         # ASR decoder: also the per-language medians steering uses

    def part(self, chunk: int) -> str:
        return f"{self.task}.{self.name}.{chunk:06d}"


def _plan(run: Run) -> tuple[list[_Matrix], dict[str, str]]:
    """Matrices to rank, and ``{task: task}`` of shared encoders served from another task's result.

    Refuses (UserError) before any work when a step has no valid example of some language.
    """
    langs = run.cfg["data"]["langs"]
    activity = run.cfg["definitions"]["decoder_activity"]
    plan, copies, ranked = [], {}, {}
    for task in RECORD_TASKS:
        meta = json.loads((run.dir("record") / task / "meta.json").read_text())
        labels = np.array([langs.index(lang) for lang in meta["langs"]])
        for name, path in matrices(run, task).items():
            if name == "encoder" and path in ranked and ranked[path][1] == meta["langs"]:
                # a shared encoder (ASR reads S2T's utterances): same rows, same labels, same AP
                copies[task] = ranked[path][0]
                continue
            if name == "encoder":
                ranked[path] = (task, meta["langs"])
            if name.startswith("decoder_t"):
                valid = np.array(step_valid(meta, name.removeprefix("decoder_t"), activity), bool)
            else:
                valid = np.array(encoder_valid(meta), bool)
            present = set(labels[valid].tolist())
            if len(present) < len(langs):
                missing = [langs[i] for i in range(len(langs)) if i not in present]
                raise UserError(f"{task} {name}: no valid example for {missing} (outputs ended before the "
                                "step); raise data.n_identify or record.max_new_tokens")
            idx = np.flatnonzero(valid)
            plan.append(_Matrix(task, name, path, idx, labels[idx], MatrixStore(path).n_col_chunks,
                                task == "ASR" and name.startswith("decoder_t")))
    return plan, copies


def _rank_chunk(m: _Matrix, chunk: int, langs: list, device: str) -> dict:
    st = MatrixStore(m.path)
    # the stored type itself (bfloat16 too): 16-bit data takes AP's 16-bit path
    block = st.read(m.rows, st.col_chunk(chunk), tensor=True)
    # AP and its tie-breaker (the point-biserial r) in one pass over the block
    ap, sep = average_precision(on_device(block, device), m.labels, n_labels=len(langs), return_separation=True)
    out = {"ap": ap, "sep": sep}
    if m.medians:
        values = block.float().numpy()  # exact for every stored type
        row_langs = np.asarray(langs)[m.labels]
        medians = [median_activations(values, row_langs, lang, chunk_cols=block.shape[1]) for lang in langs]
        out["on"] = np.stack([x[0] for x in medians])
        out["off"] = np.stack([x[1] for x in medians])
    return out


def stage_rank(run: Run) -> None:
    langs = list(run.cfg["data"]["langs"])
    device = ranking_device(run.cfg)
    out = run.dir("rank")
    parts = out / PARTS_SUBDIR
    plan, copies = _plan(run)
    units = [(m, c) for m in plan for c in range(m.n_chunks)]
    saved = len(list(parts.glob("*.npz")))
    if run.rank == 0 and saved:
        note(f"rank: resuming, {saved} of {len(units)} chunks already computed")
    barrier(run, "rank/counted")  # before any rank adds to them
    for m, c in progress(launch.current().mine(units), desc="rank", unit="chunk"):
        if load_part(parts, m.part(c)) is None:
            save_part(parts, m.part(c), _rank_chunk(m, c, langs, device))
    barrier(run, "rank/parts")
    if run.rank != 0:
        return
    for m in plan:
        pieces = []
        for c in range(m.n_chunks):  # a part missing or damaged since is computed here, once
            piece = load_part(parts, m.part(c))
            pieces.append(piece if piece is not None else _rank_chunk(m, c, langs, device))
        for key, suffix in (("ap", "ap"), ("sep", "sep"), ("on", "on_p50"), ("off", "off_p50")):
            if key in pieces[0]:
                save_npy(out / m.task / f"{m.name}_{suffix}.npy", np.concatenate([p[key] for p in pieces], axis=1))
    for task, source in copies.items():
        for suffix in ("ap", "sep"):
            atomic_write_bytes(out / task / f"encoder_{suffix}.npy", (out / source / f"encoder_{suffix}.npy").read_bytes())
    for task in RECORD_TASKS:
        meta = json.loads((run.dir("record") / task / "meta.json").read_text())
        labels = np.array([langs.index(lang) for lang in meta["langs"]])
        activity = run.cfg["definitions"]["decoder_activity"]
        counts = {k: {lang: int(np.sum(~np.array(step_valid(meta, k, activity), bool)[labels == i]))
                      for i, lang in enumerate(langs)} for k in meta["valid"]}
        atomic_write_json(out / task / "excluded.json", counts)
    # every chunk is in the artifacts now; removed before the marker, which lists every file
    shutil.rmtree(parts, ignore_errors=True)
    run.complete("rank", tasks=list(RECORD_TASKS), steps=run.cfg["record"]["steps"])
