"""The compare stage: cross-modal statistics of language-representation neurons per step.

Reads AP vectors of the rank stage (S2T = speech side, T2T = text side) and, for confidence
intervals, the activation store itself: a paired bootstrap resamples sentence ids within each
language (the same resample for speech and text, so the pairing of the parallel data is kept),
recomputes AP exactly, and re-derives every statistic. The store is read once per step, one
neuron block at a time, for all resamples together. Bootstrap AP vectors are kept in float32
memory maps beside the artifact (float64 point estimates are exact; the CIs tolerate the
rounding) and deleted when the step is done.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine import overlap as ov
from engine.ranking import average_precision, on_device, top_k
from engine.run import Run, load_ap, load_catalog, matrices, ranking_device
from engine.store import MatrixStore, atomic_write_json

QUANTILES = (2.5, 97.5)


def _ci(samples) -> list[float]:
    samples = np.asarray(samples, float)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return [float("nan"), float("nan")]
    return [float(v) for v in np.percentile(samples, QUANTILES)]


def set_statistics(ap_speech: np.ndarray, ap_text: np.ndarray, k: int) -> dict:
    """Overlap-based statistics of top-k sets of two AP matrices ``[L, N]``."""
    L = ap_speech.shape[0]
    sets_s = [top_k(ap_speech[i], k) for i in range(L)]
    sets_t = [top_k(ap_text[i], k) for i in range(L)]
    O = ov.overlap_matrix(sets_s, sets_t)
    stat, p = ov.permutation_test(O)
    return {"matrix": O.tolist(), "diagonal_ratio": ov.diagonal_ratio(O), "total": int(O.sum()),
            "perm_stat": float(stat), "perm_p": float(p)}


def rank_statistics(ap_speech: np.ndarray, ap_text: np.ndarray) -> dict:
    R = ov.spearman_matrix(ap_speech, ap_text)
    # the paper's formula uses raw rho; the clipped variant is reported beside it because a
    # near-zero sum of mixed-sign correlations makes the raw ratio meaningless
    return {"spearman": R.tolist(), "spearman_diag_concentration": ov.diagonal_concentration(R),
            "spearman_diag_concentration_clipped": ov.diagonal_concentration(R, clip_negative=True)}


def paired_resamples(sentence_ids: list[str], langs: list[str], study: list[str], n_boot: int,
                     seed: int) -> list[np.ndarray]:
    """``n_boot`` resamples of sentence ids, with replacement within each language.

    Returns arrays of (language index, sentence id) keys encoded as strings ``"lang/sid"``.
    """
    rng = np.random.default_rng(seed)
    by_lang = {lang: sorted({s for s, lg in zip(sentence_ids, langs) if lg == lang}) for lang in study}
    out = []
    for _ in range(n_boot):
        keys = []
        for lang in study:
            pool = by_lang[lang]
            keys += [f"{lang}/{pool[i]}" for i in rng.integers(0, len(pool), len(pool))]
        out.append(np.array(keys))
    return out


def _rows_for(keys: np.ndarray, meta: dict, step: str) -> np.ndarray:
    """Row indices (with multiplicity) of a modality's store for a resample of sentence keys."""
    valid = np.array(meta["valid"][step], bool)
    index = {}
    for row, eid in enumerate(meta["example_ids"]):
        sid, lang = eid.split("/")[:2]
        if valid[row]:
            index[f"{lang}/{sid}"] = row
    return np.array([index[k] for k in keys if k in index], dtype=np.int64)


def bootstrap_ap(store: MatrixStore, meta: dict, step: str, resamples: list[np.ndarray], study: list[str],
                 path: Path, device: str = "cpu") -> np.ndarray:
    """AP ``[n_boot, L, N]`` (float32 memmap at ``path``) of every resample, one store pass."""
    labels_all = np.array([study.index(lang) for lang in meta["langs"]])
    rows = [_rows_for(keys, meta, step) for keys in resamples]
    n = store.shape[1]
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(resamples), len(study), n))
    needed = np.unique(np.concatenate(rows)) if rows else np.array([], int)
    position = {r: i for i, r in enumerate(needed)}
    local = [np.array([position[r] for r in rr], dtype=np.int64) for rr in rows]
    for c, block in store.iter_col_blocks(rows=needed):
        block = on_device(block, device)
        for b, rr in enumerate(local):
            out[b, :, c:c + block.shape[1]] = average_precision(block[rr], labels_all[needed][rr],
                                                                n_labels=len(study))
    out.flush()
    return out


def distribution(ap_row: np.ndarray, components, k: int) -> dict:
    """Where the top-k neurons of one AP row live: per layer, per component name, and sizes."""
    chosen = np.sort(top_k(ap_row, k))
    n_layers = max(c.layer for c in components) + 1
    by_layer = [0] * n_layers
    by_component: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for comp in components:
        n = int(np.count_nonzero((chosen >= comp.offset) & (chosen < comp.offset + comp.dim)))
        by_layer[comp.layer] += n
        by_component[comp.name] = by_component.get(comp.name, 0) + n
        sizes[comp.name] = sizes.get(comp.name, 0) + comp.dim
    return {"by_layer": by_layer, "by_component": by_component, "component_sizes": sizes}


def compare(run, catalog) -> dict:
    """Everything the claims about language-representation neurons read (analysis.json)."""
    cfg = run.cfg
    study = list(cfg["data"]["langs"])
    k, ks, n_boot = cfg["rank"]["k"], list(cfg["rank"]["k_sweep"]), cfg["rank"]["n_boot"]
    metas = {task: json.loads((run.dir("record") / task / "meta.json").read_text()) for task in ("S2T", "T2T")}
    sids = [eid.split("/")[0] for eid in metas["T2T"]["example_ids"]]
    resamples = paired_resamples(sids, metas["T2T"]["langs"], study, n_boot, cfg["rank"]["seed"])
    result = {"overlap": {}, "k_sweep": {"ks": ks, "diagonal_ratio": {}, "diagonal_ratio_ci": {}},
              "distribution": {"lang": "deu" if "deu" in study else study[0], "k": k}}
    focus = study.index(result["distribution"]["lang"])
    work = run.dir("compare")
    work.mkdir(parents=True, exist_ok=True)
    for t in cfg["record"]["steps"]:
        name, step = f"decoder_t{t}", str(t)
        ap_s, ap_x = load_ap(run, "S2T", name), load_ap(run, "T2T", name)
        entry = {"k": k, "langs": study, **set_statistics(ap_s, ap_x, k), **rank_statistics(ap_s, ap_x)}
        boots = {}
        for task, side in (("S2T", "speech"), ("T2T", "text")):
            store = MatrixStore(matrices(run, task)[name])
            boots[side] = bootstrap_ap(store, metas[task], step, resamples, study, work / f"boot_{side}_t{t}.npy",
                                       ranking_device(cfg))
        samples = {"diagonal_ratio": [], "total": [], "spearman_diag_concentration": [],
                   "spearman_diag_concentration_clipped": []}
        sweep = {kk: [] for kk in ks}
        for b in range(n_boot):
            bs, bx = np.asarray(boots["speech"][b], np.float64), np.asarray(boots["text"][b], np.float64)
            st = set_statistics(bs, bx, k)
            samples["diagonal_ratio"].append(st["diagonal_ratio"])
            samples["total"].append(st["total"])
            rs = rank_statistics(bs, bx)
            for name in ("spearman_diag_concentration", "spearman_diag_concentration_clipped"):
                samples[name].append(rs[name])
            for kk in ks:
                sweep[kk].append(set_statistics(bs, bx, kk)["diagonal_ratio"])
        for stat, vals in samples.items():
            entry[f"{stat}_ci"] = _ci(vals)
        entry["n_boot"] = n_boot
        result["overlap"][step] = entry
        result["k_sweep"]["diagonal_ratio"][step] = [set_statistics(ap_s, ap_x, kk)["diagonal_ratio"] for kk in ks]
        result["k_sweep"]["diagonal_ratio_ci"][step] = [_ci(sweep[kk]) for kk in ks]
        boots.clear()  # drop the memory maps before deleting their files
        for f in work.glob(f"boot_*_t{t}.npy"):
            f.unlink()
        dec = catalog.stack("text_decoder")
        result["distribution"].setdefault("text_decoder", {})[step] = {
            "speech": distribution(ap_s[focus], dec, k), "text": distribution(ap_x[focus], dec, k)}
    result["distribution"]["speech_encoder"] = distribution(
        load_ap(run, "S2T", "encoder")[focus], catalog.stack("speech_encoder"), k)
    result["distribution"]["text_encoder"] = distribution(
        load_ap(run, "T2T", "encoder")[focus], catalog.stack("text_encoder"), k)
    return result


def stage_compare(run: Run) -> None:
    result = compare(run, load_catalog(run))
    atomic_write_json(run.dir("compare") / "compare.json", result)
    run.complete("compare")
