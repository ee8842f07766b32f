"""The compare stage: cross-modal statistics of language-representation neurons per step.

Reads AP vectors of the rank stage (S2T = speech side, T2T = text side) and their secondary key
(the point-biserial r, ``ranking.top_k``), and, for confidence intervals, the activation store
itself: a paired bootstrap resamples sentence ids within each language (the same resample for
speech and text, so the pairing of the parallel data is kept) and recomputes AP and r exactly.
A resample reorders nothing, it only gives each row a multiplicity, so each neuron is sorted
once per step and every resample's AP comes from weighted counts over that one order
(``ranking.resampled_average_precision``). The store is read once per step, one neuron block at
a time, for all resamples together.

Bootstrap AP (float64) and r (float32: it only breaks ties of equal AP) are written to flat files
beside the artifact with positioned writes and read back one resample at a time, so peak memory
follows the block and one resample's vectors, not ``n_boot x L x N``; the files are deleted when
the step is done. Each resample's whole k sweep comes from one ordering per (side, language):
top-k for every k is a prefix of the top-max(k) ordering.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from engine import overlap as ov
from engine.ranking import on_device, resampled_average_precision, top_k
from engine.run import Run, load_ap, load_catalog, load_sep, matrices, ranking_device
from engine.store import MatrixStore, atomic_write_json

QUANTILES = (2.5, 97.5)


def _ci(samples) -> list[float]:
    samples = np.asarray(samples, float)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return [float("nan"), float("nan")]
    return [float(v) for v in np.percentile(samples, QUANTILES)]


def overlap_sweep(ap_speech: np.ndarray, ap_text: np.ndarray, ks, sep_speech: np.ndarray | None = None,
                  sep_text: np.ndarray | None = None) -> np.ndarray:
    """Overlap matrices ``O[k_index, i, j] = |top_k(speech_i) ∩ top_k(text_j)|`` for every k in ``ks``.

    ``ap_*``: ``[L, N]`` AP; ``sep_*``: ``[L, N]`` secondary keys (``ranking.top_k``). One
    ordering of the top ``max(ks)`` per (side, language) serves every k, because top-k under a
    total order is a prefix of top-K for k <= K: a neuron is in both top-k sets iff the larger
    of its two positions is below k. int64 ``[len(ks), L, L]``; equals ``overlap_matrix`` of
    the ``top_k`` sets for each k (tested).
    """
    L, N = ap_speech.shape
    ks = [int(k) for k in ks]
    K = max(ks) if ks else 0
    sep_speech = [None] * L if sep_speech is None else sep_speech
    sep_text = [None] * L if sep_text is None else sep_text
    orders_s = [top_k(ap_speech[i], K, sep_speech[i]) for i in range(L)]
    orders_t = [top_k(ap_text[j], K, sep_text[j]) for j in range(L)]
    out = np.zeros((len(ks), L, L), dtype=np.int64)
    position = np.full(N, K, dtype=np.int64)  # K = "not in the top K"
    rank = np.arange(K)
    bounds = np.asarray(ks)
    for j in range(L):
        position[orders_t[j]] = rank
        for i in range(L):
            last = np.sort(np.maximum(rank, position[orders_s[i]]))
            out[:, i, j] = np.searchsorted(last, bounds, side="left")
        position[orders_t[j]] = K
    return out


def statistics_of_overlap(O: np.ndarray) -> dict:
    """The overlap-based statistics of one matrix (what ``set_statistics`` reports)."""
    stat, p = ov.permutation_test(O)
    return {"matrix": O.tolist(), "diagonal_ratio": ov.diagonal_ratio(O), "total": int(O.sum()),
            "perm_stat": float(stat), "perm_p": float(p)}


def set_statistics(ap_speech: np.ndarray, ap_text: np.ndarray, k: int, sep_speech: np.ndarray | None = None,
                   sep_text: np.ndarray | None = None) -> dict:
    """Overlap-based statistics of top-k sets of two AP matrices ``[L, N]`` (ties broken by ``sep_*``)."""
    return statistics_of_overlap(overlap_sweep(ap_speech, ap_text, [k], sep_speech, sep_text)[0])


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


def resample_weights(resamples: list[np.ndarray], meta: dict, step: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a modality's store that any resample draws, and each resample's multiplicities.

    Returns ``(rows, weights)``: ``rows`` int64 ``[m]`` ascending store rows valid at ``step``,
    ``weights`` int64 ``[n_boot, m]``: how often resample b draws row ``rows[i]``.
    """
    drawn = [_rows_for(keys, meta, step) for keys in resamples]
    rows = np.unique(np.concatenate(drawn)) if drawn else np.zeros(0, np.int64)
    weights = np.stack([np.bincount(np.searchsorted(rows, d), minlength=rows.size) for d in drawn]) \
        if drawn else np.zeros((0, rows.size), np.int64)
    return rows, weights


def bootstrap_ap(store: MatrixStore, meta: dict, step: str, resamples: list[np.ndarray], study: list[str],
                 path: Path, device: str = "cpu") -> "BootstrapFiles":
    """AP and point-biserial r ``[n_boot, L, N]`` of every resample, one store pass, one sort per neuron.

    Written to ``path.with_suffix(".ap")`` (float64) and ``".sep"`` (float32) in C order, block by
    block with positioned writes; read one resample at a time with ``BootstrapFiles.resample``.
    """
    labels_all = np.array([study.index(lang) for lang in meta["langs"]])
    rows, weights = resample_weights(resamples, meta, step)
    B, L, N = len(resamples), len(study), store.shape[1]
    files = BootstrapFiles(Path(path), B, L, N)
    with open(files.ap_path, "wb") as fa, open(files.sep_path, "wb") as fs:
        fa.truncate(B * L * N * 8)
        fs.truncate(B * L * N * 4)
        for c, block in store.iter_col_blocks(rows=rows, tensor=True):  # stored type: 16-bit path
            ap, sep = resampled_average_precision(on_device(block, device), labels_all[rows], weights,
                                                  n_labels=L)
            for b in range(B):
                for li in range(L):
                    at = (b * L + li) * N + c
                    os.pwrite(fa.fileno(), np.ascontiguousarray(ap[b, li]).tobytes(), at * 8)
                    os.pwrite(fs.fileno(), np.ascontiguousarray(sep[b, li], dtype=np.float32).tobytes(), at * 4)
            del ap, sep  # before the next block's are made: one block's results alive at a time
    return files


class BootstrapFiles:
    """Flat files of bootstrap AP (float64) and r (float32), ``[n_boot, L, N]`` each."""

    def __init__(self, path: Path, n_boot: int, n_langs: int, n_neurons: int):
        self.ap_path, self.sep_path = path.with_suffix(".ap"), path.with_suffix(".sep")
        self.shape = (n_boot, n_langs, n_neurons)

    def resample(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ap [L, N] float64, sep [L, N] float64)`` of resample b, read from disk (not mapped)."""
        _, L, N = self.shape
        ap = np.fromfile(self.ap_path, dtype=np.float64, count=L * N, offset=b * L * N * 8)
        sep = np.fromfile(self.sep_path, dtype=np.float32, count=L * N, offset=b * L * N * 4)
        return ap.reshape(L, N), sep.astype(np.float64).reshape(L, N)

    def delete(self) -> None:
        for f in (self.ap_path, self.sep_path):
            f.unlink(missing_ok=True)


def resample_statistics(ap_s, ap_x, sep_s, sep_x, k: int, ks) -> dict:
    """Every statistic of one bootstrap resample: set statistics at k, rank statistics, and the
    diagonal ratio at every k of the sweep, all sets from one ordering per (side, language)."""
    ks = list(ks)
    O = overlap_sweep(ap_s, ap_x, [k, *ks], sep_s, sep_x)
    st = statistics_of_overlap(O[0])
    rs = rank_statistics(ap_s, ap_x)
    return {"diagonal_ratio": st["diagonal_ratio"], "total": st["total"],
            "spearman_diag_concentration": rs["spearman_diag_concentration"],
            "spearman_diag_concentration_clipped": rs["spearman_diag_concentration_clipped"],
            "sweep": [ov.diagonal_ratio(o) for o in O[1:]]}


def distribution(ap_row: np.ndarray, components, k: int, separation: np.ndarray | None = None) -> dict:
    """Where the top-k neurons of one AP row live: per layer, per component name, and sizes."""
    chosen = np.sort(top_k(ap_row, k, separation))
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
        sep_s, sep_x = load_sep(run, "S2T", name), load_sep(run, "T2T", name)
        point = overlap_sweep(ap_s, ap_x, [k, *ks], sep_s, sep_x)
        entry = {"k": k, "langs": study, **statistics_of_overlap(point[0]), **rank_statistics(ap_s, ap_x)}
        boots = {}
        for task, side in (("S2T", "speech"), ("T2T", "text")):
            store = MatrixStore(matrices(run, task)[name])
            boots[side] = bootstrap_ap(store, metas[task], step, resamples, study, work / f"boot_{side}_t{t}",
                                       ranking_device(cfg))
        samples = {"diagonal_ratio": [], "total": [], "spearman_diag_concentration": [],
                   "spearman_diag_concentration_clipped": []}
        sweep = []
        for b in range(n_boot):
            (bs, sep_bs), (bx, sep_bx) = boots["speech"].resample(b), boots["text"].resample(b)
            st = resample_statistics(bs, bx, sep_bs, sep_bx, k, ks)
            for stat in samples:
                samples[stat].append(st[stat])
            sweep.append(st["sweep"])
        for stat, vals in samples.items():
            entry[f"{stat}_ci"] = _ci(vals)
        entry["n_boot"] = n_boot
        result["overlap"][step] = entry
        result["k_sweep"]["diagonal_ratio"][step] = [ov.diagonal_ratio(o) for o in point[1:]]
        result["k_sweep"]["diagonal_ratio_ci"][step] = [_ci([row[i] for row in sweep]) for i in range(len(ks))]
        for files in boots.values():
            files.delete()
        dec = catalog.stack("text_decoder")
        result["distribution"].setdefault("text_decoder", {})[step] = {
            "speech": distribution(ap_s[focus], dec, k, sep_s[focus]),
            "text": distribution(ap_x[focus], dec, k, sep_x[focus])}
    result["distribution"]["speech_encoder"] = distribution(
        load_ap(run, "S2T", "encoder")[focus], catalog.stack("speech_encoder"), k,
        load_sep(run, "S2T", "encoder")[focus])
    result["distribution"]["text_encoder"] = distribution(
        load_ap(run, "T2T", "encoder")[focus], catalog.stack("text_encoder"), k,
        load_sep(run, "T2T", "encoder")[focus])
    return result


def stage_compare(run: Run) -> None:
    result = compare(run, load_catalog(run))
    atomic_write_json(run.dir("compare") / "compare.json", result)
    run.complete("compare")
