"""The rank stage: exact AP of every neuron per language and task, and the ASR medians steering sets."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.errors import UserError
from engine.files import atomic_write_bytes
from engine.run import RECORD_TASKS, Run, matrices, progress, ranking_device, save_npy
from engine.store import MatrixStore, atomic_write_json


def stage_rank(run: Run) -> None:
    from engine.ranking import average_precision, on_device
    from engine.steering import median_activations

    langs = run.cfg["data"]["langs"]
    device = ranking_device(run.cfg)
    out = run.dir("rank")
    steps = run.cfg["record"]["steps"]
    ranked: dict[Path, tuple[str, list]] = {}  # encoder store -> (task that ranked it, its row languages)
    for task in RECORD_TASKS:
        meta = json.loads((run.dir("record") / task / "meta.json").read_text())
        labels = np.array([langs.index(lang) for lang in meta["langs"]])
        for name, path in matrices(run, task).items():
            if name == "encoder" and path in ranked and ranked[path][1] == meta["langs"]:
                # a shared encoder (ASR reads S2T's utterances): same rows, same labels, same AP
                for suffix in ("ap", "sep"):
                    src = out / ranked[path][0] / f"{name}_{suffix}.npy"
                    atomic_write_bytes(out / task / f"{name}_{suffix}.npy", src.read_bytes())
                continue
            if name == "encoder":
                ranked[path] = (task, meta["langs"])
            rows = np.ones(len(labels), bool)
            if name.startswith("decoder_t"):
                rows = np.array(meta["valid"][name.removeprefix("decoder_t")], bool)
            st = MatrixStore(path)
            present = set(labels[rows].tolist())
            if len(present) < len(langs):
                missing = [langs[i] for i in range(len(langs)) if i not in present]
                raise UserError(f"{task} {name}: no valid example for {missing} (outputs ended before the "
                                "step); raise data.n_identify or record.max_new_tokens")
            idx = np.flatnonzero(rows)
            row_langs = np.asarray(meta["langs"])[idx]
            ap, sep, on, off = [], [], [], []
            n_chunks = -(-st.shape[1] // st.layout["cols_per_chunk"])
            # blocks in the stored type itself (bfloat16 too): 16-bit data takes AP's 16-bit path
            for _, block in progress(st.iter_col_blocks(rows=idx, tensor=True), total=n_chunks,
                                     desc=f"rank {task} {name}", unit="chunk", leave=False):
                # AP and its tie-breaker (the point-biserial r) in one pass over the block
                a, r = average_precision(on_device(block, device), labels[idx], n_labels=len(langs),
                                         return_separation=True)
                ap.append(a)
                sep.append(r)
                if task == "ASR" and name.startswith("decoder_t"):
                    values = block.float().numpy()  # exact for every stored type
                    medians = [median_activations(values, row_langs, lang, chunk_cols=block.shape[1])
                               for lang in langs]
                    on.append(np.stack([m[0] for m in medians]))
                    off.append(np.stack([m[1] for m in medians]))
            save_npy(out / task / f"{name}_ap.npy", np.concatenate(ap, axis=1))
            save_npy(out / task / f"{name}_sep.npy", np.concatenate(sep, axis=1))
            if on:
                save_npy(out / task / f"{name}_on_p50.npy", np.concatenate(on, axis=1))
                save_npy(out / task / f"{name}_off_p50.npy", np.concatenate(off, axis=1))
        counts = {name.removeprefix("decoder_t"): {lang: int(np.sum(~np.array(v, bool)[labels == i]))
                                                   for i, lang in enumerate(langs)}
                  for name, v in (("decoder_t" + k, meta["valid"][k]) for k in meta["valid"])}
        atomic_write_json(out / task / "excluded.json", counts)
    run.complete("rank", tasks=list(RECORD_TASKS), steps=steps)
