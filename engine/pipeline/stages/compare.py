"""The compare stage: cross-modal statistics of language-representation neurons per step.

Reads AP vectors of the rank stage (S2T = speech side, T2T = text side) and their secondary key
(the point-biserial r, ``ranking.top_k``), and, for confidence intervals, the activation store
itself: balanced half-samples of the sentences (``engine.science.intervals``: the same split for every
language, both modalities and every step) get their AP recomputed exactly. A half-sample
reorders nothing, it only gives each row weight 0 or 1, so each neuron is sorted once per step
and every half-sample's AP comes from weighted counts over that one order
(``ranking.resampled_average_precision``). The store is read once per step, one neuron block at
a time, for all half-samples together. The statistics themselves are ``engine.science.crossmodal``'s,
the same code ``engine.compare_activations`` runs on in-memory arrays.

Half-sample AP (float64) and r (float32: it only breaks ties of equal AP) are written to flat
files beside the artifact with positioned writes and read back one half-sample at a time, so peak
memory follows the block and one half-sample's vectors, not ``n_boot x L x N``; the files are
deleted when the step is done. Under torchrun every rank computes its share of the neuron
chunks into the same files (positioned writes, rank 0 creates them) and rank 0 summarises.
Resuming: each chunk is marked once its bytes are on disk and each step's statistics are kept
until the stage is complete, so a rerun computes only unfinished chunks of unfinished steps.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.files import atomic_write_bytes, atomic_write_json, load_part, save_part
from engine.pipeline import launch
from engine.pipeline.run import Run, barrier, load_ap, load_catalog, load_sep, matrices, ranking_device, step_valid
from engine.pipeline.store import MatrixStore
from engine.science import crossmodal as cm
from engine.science import intervals as iv
from engine.science.distribution import distribution
from engine.science.ranking import on_device, resampled_average_precision

#: Each finished step's statistics inside the compare stage directory, so that a rerun after a
#: kill starts at the first unfinished step; removed once the stage is complete.
STEPS_SUBDIR = "steps"


def half_sample_rows(meta: dict, step: str, splits: dict, activity: str = "position"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a modality's store valid at ``step`` (in decoder activity ``activity``) and every
    half-sample's 0/1 weights on them.

    Returns ``(rows, weights)``: ``rows`` int64 ``[m]`` ascending, ``weights`` int64
    ``[n_boot, m]`` (``intervals.half_sample_weights`` of the rows' sentence ids).
    """
    valid = np.array(step_valid(meta, step, activity), bool)
    rows = np.flatnonzero(valid).astype(np.int64)
    sids = [meta["example_ids"][r].split("/")[0] for r in rows]
    return rows, iv.half_sample_weights(sids, splits)


def bootstrap_ap(store: MatrixStore, meta: dict, step: str, splits: dict, study: list[str],
                 path: Path, device: str = "cpu", *, chunks: Sequence[int] | None = None,
                 resume: bool = False, activity: str = "position") -> "BootstrapFiles":
    """AP and point-biserial r ``[n_boot, L, N]`` of every half-sample, one store pass, one sort per neuron.

    Written to ``path.with_suffix(".ap")`` (float64) and ``".sep"`` (float32) in C order, block by
    block with positioned writes; read one resample at a time with ``BootstrapFiles.resample``.
    ``chunks``: only these column chunks of the store, into files another process has created
    (``BootstrapFiles.prepare``); None: every chunk, into files created here. ``resume``: skip
    the chunks an earlier, interrupted call finished (each is marked once its bytes are on disk).
    ``activity``: the decoder activity the store holds (its rows valid at ``step``).
    """
    labels_all = np.array([study.index(lang) for lang in meta["langs"]])
    rows, weights = half_sample_rows(meta, step, splits, activity)
    B, L, N = len(weights), len(study), store.shape[1]
    files = BootstrapFiles(Path(path), B, L, N)
    if chunks is None:
        files.prepare(resume)
    todo = range(store.n_col_chunks) if chunks is None else chunks
    with open(files.ap_path, "r+b") as fa, open(files.sep_path, "r+b") as fs:
        for chunk in todo:
            if resume and files.chunk_done(chunk):
                continue
            cols = store.col_chunk(chunk)
            c = cols.start
            block = store.read(rows, cols, tensor=True)  # stored type: 16-bit path
            ap, sep = resampled_average_precision(on_device(block, device), labels_all[rows], weights,
                                                  n_labels=L)
            for b in range(B):
                for li in range(L):
                    at = (b * L + li) * N + c
                    os.pwrite(fa.fileno(), np.ascontiguousarray(ap[b, li]).tobytes(), at * 8)
                    os.pwrite(fs.fileno(), np.ascontiguousarray(sep[b, li], dtype=np.float32).tobytes(), at * 4)
            del ap, sep  # before the next block's are made: one block's results alive at a time
            if resume:  # the chunk's bytes reach the disk before its mark does
                os.fdatasync(fa.fileno())
                os.fdatasync(fs.fileno())
                files.mark_done(chunk)
    return files


class BootstrapFiles:
    """Flat files of bootstrap AP (float64) and r (float32), ``[n_boot, L, N]`` each."""

    def __init__(self, path: Path, n_boot: int, n_langs: int, n_neurons: int):
        self.ap_path, self.sep_path = path.with_suffix(".ap"), path.with_suffix(".sep")
        self.done_dir = path.with_suffix(".done")
        self.shape = (n_boot, n_langs, n_neurons)

    def prepare(self, resume: bool = False) -> None:
        """Make both files at their full size (zeros), replacing any earlier ones; with
        ``resume``, keep files of the right size and the chunks marked done in them."""
        B, L, N = self.shape
        sizes = ((self.ap_path, B * L * N * 8), (self.sep_path, B * L * N * 4))
        if resume and all(f.is_file() and f.stat().st_size == n for f, n in sizes):
            return
        shutil.rmtree(self.done_dir, ignore_errors=True)
        for f, n in sizes:
            with open(f, "wb") as fh:
                fh.truncate(n)

    def chunk_done(self, chunk: int) -> bool:
        return (self.done_dir / str(chunk)).exists()

    def mark_done(self, chunk: int) -> None:
        atomic_write_bytes(self.done_dir / str(chunk), b"")

    def resample(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ap [L, N] float64, sep [L, N] float64)`` of resample b, read from disk (not mapped)."""
        _, L, N = self.shape
        ap = np.fromfile(self.ap_path, dtype=np.float64, count=L * N, offset=b * L * N * 8)
        sep = np.fromfile(self.sep_path, dtype=np.float32, count=L * N, offset=b * L * N * 4)
        return ap.reshape(L, N), sep.astype(np.float64).reshape(L, N)

    def delete(self) -> None:
        for f in (self.ap_path, self.sep_path):
            f.unlink(missing_ok=True)
        shutil.rmtree(self.done_dir, ignore_errors=True)


def compare(run, catalog) -> dict | None:
    """Everything the claims about language-representation neurons read (analysis.json).

    Under torchrun every rank computes its share of the half-samples' AP; rank 0 returns the
    result, the others None."""
    cfg = run.cfg
    study = list(cfg["data"]["langs"])
    k, ks, n_boot = cfg["rank"]["k"], list(cfg["rank"]["k_sweep"]), cfg["rank"]["n_boot"]
    metas = {task: json.loads((run.dir("record") / task / "meta.json").read_text()) for task in ("S2T", "T2T")}
    sids = [eid.split("/")[0] for meta in metas.values() for eid in meta["example_ids"]]
    splits = iv.half_sample_splits(sids, n_boot, cfg["rank"]["seed"])
    result = {"overlap": {}, "k_sweep": {"ks": ks, "diagonal_ratio": {}, "diagonal_ratio_ci": {}},
              "distribution": {"lang": "deu" if "deu" in study else study[0], "k": k}}
    focus = study.index(result["distribution"]["lang"])
    work = run.dir("compare")
    work.mkdir(parents=True, exist_ok=True)
    points, reps = {}, {}
    steps_done = work / STEPS_SUBDIR
    for t in cfg["record"]["steps"]:
        name, step = f"decoder_t{t}", str(t)
        ap_s, ap_x = load_ap(run, "S2T", name), load_ap(run, "T2T", name)
        sep_s, sep_x = load_sep(run, "S2T", name), load_sep(run, "T2T", name)
        dec = catalog.group("text_decoder")
        result["distribution"].setdefault("text_decoder", {})[step] = {
            "speech": distribution(ap_s[focus], dec, k, sep_s[focus]),
            "text": distribution(ap_x[focus], dec, k, sep_x[focus])}
        # a step an interrupted run finished is read back (rank 0 decides, every rank skips it)
        part = load_part(steps_done, f"t{t}") if run.rank == 0 else None
        if launch.current().from_rank0(f"compare/t{t}/saved", lambda: part is not None):
            if run.rank == 0:
                kept = json.loads(str(part.pop("json")))
                entry, sweep = kept["entry"], kept["sweep"]
                reps[step] = {key.removeprefix("rep_"): v for key, v in part.items()}
                points[step] = cm.step_points(entry, sweep)
                result["overlap"][step] = {"langs": study, **entry}
                result["k_sweep"]["diagonal_ratio"][step] = sweep["diagonal_ratio"]
                result["k_sweep"]["diagonal_ratio_ci"][step] = sweep["diagonal_ratio_ci"]
            continue
        stores = {side: MatrixStore(matrices(run, task)[name]) for task, side in (("S2T", "speech"), ("T2T", "text"))}
        boots = {side: BootstrapFiles(work / f"boot_{side}_t{t}", n_boot, len(study), st.shape[1])
                 for side, st in stores.items()}
        if run.rank == 0:
            for files in boots.values():
                files.prepare(resume=True)
        barrier(run, f"compare/t{t}/created")
        for task, side in (("S2T", "speech"), ("T2T", "text")):
            st = stores[side]
            bootstrap_ap(st, metas[task], step, splits, study, work / f"boot_{side}_t{t}", ranking_device(cfg),
                         chunks=launch.current().mine(range(st.n_col_chunks)), resume=True,
                         activity=cfg["definitions"]["decoder_activity"])
        barrier(run, f"compare/t{t}/written")
        if run.rank != 0:
            continue

        def replicates():
            for b in range(n_boot):
                (bs, sep_bs), (bx, sep_bx) = boots["speech"].resample(b), boots["text"].resample(b)
                yield bs, sep_bs, bx, sep_bx

        entry, reps[step] = cm.summarize_step({"ap_s": ap_s, "ap_x": ap_x, "sep_s": sep_s, "sep_x": sep_x},
                                              replicates(), k, ks, n_boot)
        sweep = entry.pop("k_sweep")
        save_part(steps_done, f"t{t}", {"json": np.array(json.dumps({"entry": entry, "sweep": sweep})),
                                        **{f"rep_{key}": v for key, v in reps[step].items()}})
        points[step] = cm.step_points(entry, sweep)
        result["overlap"][step] = {"langs": study, **entry}
        result["k_sweep"]["diagonal_ratio"][step] = sweep["diagonal_ratio"]
        result["k_sweep"]["diagonal_ratio_ci"][step] = sweep["diagonal_ratio_ci"]
        for files in boots.values():
            files.delete()
    if run.rank != 0:
        return None
    result["step_differences"] = cm.step_differences(points, reps)
    result["distribution"]["speech_encoder"] = distribution(
        load_ap(run, "S2T", "encoder")[focus], catalog.group("speech_encoder"), k,
        load_sep(run, "S2T", "encoder")[focus])
    result["distribution"]["text_encoder"] = distribution(
        load_ap(run, "T2T", "encoder")[focus], catalog.group("text_encoder"), k,
        load_sep(run, "T2T", "encoder")[focus])
    return result


def stage_compare(run: Run) -> None:
    result = compare(run, load_catalog(run))
    if result is None:  # another rank's share is done; rank 0 writes the result
        return
    atomic_write_json(run.dir("compare") / "compare.json", result)
    # every step is in compare.json now; removed before the marker, which lists every file
    shutil.rmtree(run.dir("compare") / STEPS_SUBDIR, ignore_errors=True)
    run.complete("compare")
