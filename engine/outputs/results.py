"""A finished run, read-only, for notebooks: ``engine.open_run(path_or_profile)``.

    >>> import engine
    >>> run = engine.open_run("tiny")                   # runs/tiny, or any run directory
    >>> run.overlap(6).diagonal_ratio                   # compare stage, decoder step 6
    >>> run.top_k("S2T", "deu", step=1, k=10)[0]        # Neuron(stack, layer, component, ...)
    >>> fig = run.plot_overlap(steps=[1, 11])           # the report's figure, as a Figure

Everything is read from the run's artifacts (the report stage's ``analysis.json`` names the
key of every stage it was built from, so the AP vectors, catalog and steering outputs read are
exactly the ones behind it); nothing is recomputed except what a call asks for (a top-k set
for another k, a distribution for another language). Lower-level functions on plain arrays stay
in ``engine.science.ranking`` (``average_precision``, ``top_k``, ``bottom_k``) and ``engine.science.overlap``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.errors import UserError
from engine.model.catalog import Catalog
from engine.model.steering import control_neurons
from engine.outputs import claims, plots
from engine.pipeline.completion import verify_complete
from engine.pipeline.inputs.corpus import Selection
from engine.pipeline.store import MatrixStore
from engine.science.distribution import distribution
from engine.science.ranking import bottom_k, top_k

TASKS = ("S2T", "T2T", "ASR")
ENCODER_OF = {"S2T": "speech_encoder", "ASR": "speech_encoder", "T2T": "text_encoder"}


@dataclass(frozen=True)
class Neuron:
    """One neuron: ``flat`` index in its group's catalog order (the columns of its recorded matrix), the
    stack, layer, component and channel it is, and its AP."""
    stack: str
    layer: int
    component: str
    channel: int
    flat: int
    ap: float


@dataclass(frozen=True)
class Overlap:
    """Compare-stage statistics of one decoder step (SPEC §2); ``*_ci`` are 95% intervals from
    balanced half-samples (``engine.science.intervals``), ``()`` where withheld (the artifact's
    ``ci_notes`` says why)."""
    step: int
    k: int
    langs: list[str]
    matrix: np.ndarray            # [L, L] int: |TopK_speech(i) ∩ TopK_text(j)|
    diagonal_ratio: float
    diagonal_ratio_ci: tuple
    total: int
    total_ci: tuple
    perm_p: float                 # permutation test: exact over all L! matchings up to 10 languages, else Monte Carlo (raw["perm_method"])
    spearman: np.ndarray          # [L, L] float: ρ(AP speech i, AP text j)
    spearman_diag_concentration: float
    spearman_diag_concentration_ci: tuple
    raw: dict                     # the analysis.json entry, every field


@dataclass(frozen=True)
class KSweep:
    ks: list[int]
    diagonal_ratio: dict[int, list[float]]        # step -> ratio per k
    diagonal_ratio_ci: dict[int, list[tuple]]     # step -> CI per k


def _resolve_root(path_or_profile: str | Path, out: str | Path | None) -> Path:
    candidate = Path(path_or_profile)
    if candidate.is_dir():
        return candidate.resolve()
    root = Path(out or "runs") / str(path_or_profile)
    if root.is_dir():
        return root.resolve()
    raise UserError(f"no run at '{path_or_profile}' (looked for the directory {candidate} and {root}); "
                    f"run `python -m engine run --profile {path_or_profile}` first or pass a run directory")


def _whole(directory: Path) -> Path:
    """``directory`` once its COMPLETE.json and every artifact it lists check out (nothing is
    changed: a read-only reader names the first damaged file and leaves the repair to a rerun)."""

    verdict = verify_complete(directory)
    if verdict.damaged:
        raise UserError(f"{verdict.damaged[0]}; rerun `python -m engine run` with this run's settings "
                        "to recompute it")
    if not verdict.complete:
        raise UserError(f"{directory} is not complete; rerun `python -m engine run` to finish it")
    return directory


def _report_dir(root: Path, key: str | None) -> Path:
    if root.name.startswith("report-") and (root / "COMPLETE.json").is_file():
        return _whole(root)
    found = [d for d in root.glob("report-*") if (d / "COMPLETE.json").is_file() and (d / "analysis.json").is_file()]
    if key is not None:
        found = [d for d in found if d.name == f"report-{key}"]
    if not found:
        raise UserError(f"{root} holds no finished run (no complete report-* directory); "
                        "run `python -m engine run` to finish it")
    # the newest finished report: the run an upgrade or a changed setting produced last
    return _whole(max(found, key=lambda d: ((d / "COMPLETE.json").stat().st_mtime_ns, d.name)))


def open_run(path_or_profile: str | Path = "tiny", *, out: str | Path | None = None,
             key: str | None = None) -> "RunResults":
    """Open a finished run read-only.

    ``path_or_profile``: a profile name (its run under ``out``, default ``runs/``), a run
    directory (``runs/tiny``) or one report stage directory (``runs/tiny/report-<key>``).
    Where several finished reports exist (settings or versions changed between runs), the
    newest is opened unless ``key`` names one. UserError when there is no finished run.
    """
    return RunResults(_report_dir(_resolve_root(path_or_profile, out), key))


class RunResults:
    """Typed, read-only access to one finished run (see the module docstring)."""

    def __init__(self, report_dir: Path):
        self.report_dir = Path(report_dir)
        self.root = self.report_dir.parent
        self._checked: dict[str, Path] = {}  # stage directories verified whole (once: hashing is not free)

    def __repr__(self) -> str:
        return (f"RunResults({str(self.root)!r}, profile={self.meta.get('profile')!r}, "
                f"langs={self.langs}, steps={self.steps}, k={self.k})")

    # -- what the run holds ------------------------------------------------------------------
    @cached_property
    def analysis(self) -> dict:
        """analysis.json as written by the report stage (what the claims suite judges)."""
        return json.loads((self.report_dir / "analysis.json").read_text())

    @property
    def meta(self) -> dict:
        return self.analysis["meta"]

    @property
    def langs(self) -> list[str]:
        return list(self.meta["langs"])

    @property
    def steps(self) -> list[int]:
        return [int(t) for t in self.meta["steps"]]

    @property
    def k(self) -> int:
        return int(self.meta["k"])

    def stage_dir(self, stage: str) -> Path:
        """Directory of ``stage`` ("data", "record", "rank", ...) this report was built from."""
        keys = self.meta.get("stage_keys") or {}
        if stage not in keys:
            raise UserError(f"analysis.json names no key for stage '{stage}'; stages: {sorted(keys)}")
        path = self.root / f"{stage}-{keys[stage]}"
        if not path.is_dir():
            raise UserError(f"{path} is gone (the report was built from it); rerun `python -m engine run`")
        if stage not in self._checked:
            self._checked[stage] = _whole(path)
        return self._checked[stage]

    @cached_property
    def catalog(self):
        return Catalog.from_json(json.loads((self.stage_dir("record") / "catalog.json").read_text()))

    # -- rankings ----------------------------------------------------------------------------
    def _check(self, task: str, lang: str | None = None, step: int | None = None) -> None:
        if task not in TASKS:
            raise UserError(f"task '{task}' is not one of {TASKS} (TR is steered, never ranked)")
        if lang is not None and lang not in self.langs:
            raise UserError(f"language '{lang}' is not in this run; it has {self.langs}")
        if step is not None and int(step) not in self.steps:
            raise UserError(f"step {step} is not in this run; it has steps {self.steps}")

    def ap(self, task: str, step: int | None = None) -> np.ndarray:
        """AP of every neuron: [n_langs, n_neurons] float, rows in ``self.langs`` order.

        ``step=None`` gives the task's encoder stack; an int the decoder at that step.
        """
        self._check(task, step=step)
        name = "encoder" if step is None else f"decoder_t{int(step)}"
        return np.load(self.stage_dir("rank") / task / f"{name}_ap.npy")

    def separation(self, task: str, step: int | None = None) -> np.ndarray:
        """Point-biserial r of every neuron, [n_langs, n_neurons]: the secondary key that orders
        neurons of equal AP in top-k / bottom-k (``engine.science.ranking.top_k``)."""
        self._check(task, step=step)
        name = "encoder" if step is None else f"decoder_t{int(step)}"
        return np.load(self.stage_dir("rank") / task / f"{name}_sep.npy")

    def _group(self, task: str, step: int | None) -> str:
        return "text_decoder" if step is not None else ENCODER_OF[task]

    def neurons(self, task: str, flat: Sequence[int], lang: str, step: int | None = None) -> list[Neuron]:
        """``flat`` indices of the task's group (the encoder its input went through, or the
        decoder at ``step``) as Neurons, with ``lang``'s AP, in the given order. A Neuron's
        ``stack`` is the stack its component is in, named for what it is (a speech LLM's
        ``projector``, say)."""
        self._check(task, lang, step)
        group = self._group(task, step)
        row = self.ap(task, step)[self.langs.index(lang)]
        flat = np.asarray(flat, dtype=np.int64)
        where = {}
        for comp, channels in self.catalog.locate(group, flat):
            for ch in channels.tolist():
                where[comp.offset + ch] = (comp, ch)
        return [Neuron(where[i][0].stack, where[i][0].layer, where[i][0].name, int(where[i][1]), int(i),
                       float(row[i])) for i in flat.tolist()]

    def top_k(self, task: str, lang: str, step: int | None = None, k: int | None = None) -> list[Neuron]:
        """``lang``'s k highest-AP neurons (k defaults to the run's), best first."""

        self._check(task, lang, step)
        i = self.langs.index(lang)
        return self.neurons(task, top_k(self.ap(task, step)[i], k or self.k, self.separation(task, step)[i]),
                            lang, step)

    def bottom_k(self, task: str, lang: str, step: int | None = None, k: int | None = None) -> list[Neuron]:
        """``lang``'s k lowest-AP neurons, lowest first."""

        self._check(task, lang, step)
        i = self.langs.index(lang)
        return self.neurons(task, bottom_k(self.ap(task, step)[i], k or self.k, self.separation(task, step)[i]),
                            lang, step)

    def control_set(self, lang: str, step: int, k: int | None = None) -> list[Neuron]:
        """Language-control neurons of ``lang`` at ``step``: ASR top-k ∪ bottom-k (k defaults to
        the steering k), in flat order: exactly the neurons the steer stage set."""

        self._check("ASR", lang, step)
        k = k or int(self.analysis["steering"].get("config", {}).get("k", self.k))
        i = self.langs.index(lang)
        return self.neurons("ASR", control_neurons(self.ap("ASR", step)[i], k, self.separation("ASR", step)[i]),
                            lang, step)

    # -- set and rank statistics -------------------------------------------------------------
    def overlap(self, step: int) -> Overlap:
        self._check("S2T", step=step)
        e = self.analysis["overlap"][str(int(step))]
        return Overlap(step=int(step), k=int(e["k"]), langs=list(e["langs"]), matrix=np.asarray(e["matrix"]),
                       diagonal_ratio=e["diagonal_ratio"], diagonal_ratio_ci=tuple(e.get("diagonal_ratio_ci") or ()),
                       total=int(e["total"]), total_ci=tuple(e.get("total_ci") or ()), perm_p=e["perm_p"],
                       spearman=np.asarray(e["spearman"], dtype=float),
                       spearman_diag_concentration=e["spearman_diag_concentration"],
                       spearman_diag_concentration_ci=tuple(e.get("spearman_diag_concentration_ci") or ()),
                       raw=e)

    @property
    def k_sweep(self) -> KSweep:
        s = self.analysis["k_sweep"]
        return KSweep(ks=list(s["ks"]),
                      diagonal_ratio={int(t): list(v) for t, v in s["diagonal_ratio"].items()},
                      diagonal_ratio_ci={int(t): [tuple(c) if c is not None else () for c in v]
                                         for t, v in (s.get("diagonal_ratio_ci") or {}).items()})

    # -- the recorded activity itself ---------------------------------------------------------
    def _record_meta(self, task: str) -> dict:
        self._check(task)
        return json.loads((self.stage_dir("record") / task / "meta.json").read_text())

    def recorded_activities(self, task: str = "S2T") -> list[str]:
        """The decoder activities this run recorded: ``"position"`` and/or ``"prefix_mean"``."""
        record = self.stage_dir("record") / task
        t = self.steps[0]
        return [a for a, name in (("position", f"decoder_t{t}"), ("prefix_mean", f"decoder_t{t}_prefix_mean"))
                if (record / name / "layout.json").is_file()]

    def activations(self, task: str, step: int | None = None, activity: str | None = None) -> np.ndarray:
        """A task's stored activations as float32 ``[n, N]``, exactly as the record stage stored them.

        Rows are ``examples(task)`` in order; columns the catalog's order (``self.catalog``):
        ``step=None`` gives the encoder the task's input went through (S2T and ASR share the
        speech encoder's), an int the decoder at that step, where a row whose output ended before
        the step is NaN. ``activity``: ``"position"`` (the output at position t) or
        ``"prefix_mean"`` (its mean over positions 0..t), required only where both were recorded.
        The whole matrix is read into memory: at the paper's sizes a decoder step of one task is
        5,000 x 491,520 values (9.8 GB as float32).
        """
        self._check(task, step=step)
        record = self.stage_dir("record")
        if step is None:
            return self._read(record / ENCODER_OF[task])
        have = self.recorded_activities(task)
        if activity is None:
            if len(have) > 1:
                raise UserError(f"this run recorded both decoder activities {have}: pass activity='position' or "
                                "activity='prefix_mean'")
            activity = have[0]
        if activity not in have:
            raise UserError(f"activity '{activity}' was not recorded by this run; it has {have}")
        suffix = "" if activity == "position" else f"_{activity}"
        return self._read(record / task / f"decoder_t{int(step)}{suffix}")

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        return np.asarray(MatrixStore(path).read(), dtype=np.float32)

    def examples(self, task: str) -> list[dict]:
        """One dict per row of ``activations(task, ...)``, in the same order: ``sentence_id``,
        ``lang``, ``text`` (the input text; for speech, the text it was synthesised from) and
        ``audio`` (the cached waveform's path, None for text input)."""
        meta = self._record_meta(task)
        selection = Selection.from_json(json.loads((self.stage_dir("data") / "selection.json").read_text()))
        sentences = {s.sentence_id: s for s in selection.sentences}
        speech = meta["modality"] == "speech"
        spoken = speech and (self.meta.get("definitions") or {}).get("synthesis_text") == "normalized"
        paths = {}
        if speech:
            manifest = json.loads((self.stage_dir("speech") / "manifest.json").read_text())
            cache = self.root.parent / "cache" / "speech"
            paths = {(sid, lang): str(cache / rel) for sid, lang, rel in manifest["paths"]}
        out = []
        for eid in meta["example_ids"]:
            sid, lang = eid.split("/")[:2]
            sentence = sentences[sid].spoken() if spoken else sentences[sid]
            out.append({"sentence_id": sid, "lang": lang, "text": sentence.texts[lang],
                        "audio": paths.get((sid, lang)) if speech else None})
        return out

    def distribution(self, lang: str | None = None, k: int | None = None) -> dict:
        """Where ``lang``'s top-k neurons live (per layer, per component) in every stack: the
        analysis.json section for the run's own language and k, computed from AP otherwise."""

        stored = self.analysis["distribution"]
        lang, k = lang or stored["lang"], k or int(stored["k"])
        if lang == stored["lang"] and k == int(stored["k"]):
            return stored
        self._check("S2T", lang)
        i, cat = self.langs.index(lang), self.catalog
        out = {"lang": lang, "k": k,
               "speech_encoder": distribution(self.ap("S2T")[i], cat.group("speech_encoder"), k,
                                              self.separation("S2T")[i]),
               "text_encoder": distribution(self.ap("T2T")[i], cat.group("text_encoder"), k,
                                            self.separation("T2T")[i]),
               "text_decoder": {}}
        for t in self.steps:
            out["text_decoder"][str(t)] = {
                side: distribution(self.ap(task, t)[i], cat.group("text_decoder"), k, self.separation(task, t)[i])
                for side, task in (("speech", "S2T"), ("text", "T2T"))}
        return out

    # -- steering ----------------------------------------------------------------------------
    def steering(self, intervention: str | None = None) -> list[dict]:
        """Steering table rows (src, tgt, task, step, intervention, control rate with CI,
        fastText probabilities); ``intervention`` filters ("median", "random", "none")."""
        rows = self.analysis["steering"]["rows"]
        return [r for r in rows if intervention is None or r["intervention"] == intervention]

    @property
    def effect_ratio(self) -> dict:
        return self.analysis["steering"]["effect_ratio"]

    def outputs(self, src: str, task: str, tgt: str | None = None, step: int | None = None,
                intervention: str = "median") -> list[dict]:
        """Generated texts (example_id, sentence_id, text) of one steering condition; with no
        ``tgt`` the unsteered baseline of ``src``."""
        table = json.loads((self.stage_dir("steer") / "steering_outputs.json").read_text())
        key = f"{src}/{task}/none" if tgt is None else f"{src}>{tgt}/{task}/{int(step)}/{intervention}"
        if key not in table:
            raise UserError(f"no steering outputs for '{key}'; conditions: {', '.join(sorted(table)[:6])}, ...")
        return table[key]

    # -- claims ------------------------------------------------------------------------------
    def verdicts(self) -> dict:
        """Each paper claim judged on this run against the paper's bounds: {id: Verdict}
        (computed on request from analysis.json; the claims suite adds the baselines)."""

        registry = claims.load_registry()
        return {cid: claims.check(cid, self.analysis, entry) for cid, entry in registry["claims"].items()}

    # -- figures (the report's, for any step, language or k) ---------------------------------
    # paper=True adds the paper's numbers exactly as the report draws them; False draws ours alone.
    def _paper(self, name: str, paper: bool):
        return plots.paper_values(claims.load_registry())[name] if paper else None

    def plot_overlap(self, steps: Sequence[int] | None = None, paper: bool = True):
        return plots.overlap(self.analysis["overlap"], steps, paper=self._paper("overlap", paper))

    def plot_spearman(self, steps: Sequence[int] | None = None, paper: bool = True):
        return plots.spearman(self.analysis["overlap"], steps, paper=self._paper("spearman", paper))

    def plot_k_sweep(self, steps: Sequence[int] | None = None):
        return plots.k_sweep(self.analysis["k_sweep"], steps)

    def plot_distribution(self, lang: str | None = None, k: int | None = None,
                          steps: Sequence[int] | None = None, paper: bool = True):
        return plots.distribution(self.distribution(lang, k), steps, paper=self._paper("distribution", paper),
                                  model_type=self.meta.get("model_type"))

    def plot_control_rate(self, steps: Sequence[int] | None = None, paper: bool = True):
        return plots.control_rate(self.analysis["steering"], steps, paper=self._paper("control_rate", paper))

    def plot_fasttext(self, steps: Sequence[int] | None = None, paper: bool = True):
        return plots.fasttext(self.analysis["steering"], steps, paper=self._paper("fasttext", paper))

    def plot_effect_ratio(self, paper: bool = True):
        return plots.effect_ratio(self.analysis["steering"], paper=self._paper("effect_ratio", paper))
