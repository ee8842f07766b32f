"""Regression baselines: every claim's numbers on one profile, with tolerances calibrated to noise.

``fixtures/baselines/<profile>.json`` holds, per claim, what ``engine.outputs.claims.measurements``
gives on that profile's run, and per number how a later run is compared with it (its ``rule``):

- ``exact``: the number did not move in any run of the noise study (counts, ratios of counts,
  statistics of selected neuron sets, control rates of greedy outputs). Compared up to float64
  rounding of the arithmetic that made it: ``|m - b| <= EXACT_ULPS * eps64 * max(|m|, |b|)``.
  One neuron entering or leaving a top-k set, or one output token changing script, moves such a
  number by far more.
- ``noise``: the number moved under a change that is not a change of model, data or library
  (torch's CPU kernels, MKL's and oneDNN's instruction sets, numpy's SIMD, thread counts, another
  machine). Float32 activations rounded to the store's 16-bit type land on the other side of a
  rounding boundary now and then, which moves AP by a few ties and Spearman statistics by ~1e-6.
  Tolerance: ``tol = MARGIN * spread``, ``spread`` the largest deviation measured from the
  recorded value. The margin covers CPUs the study did not see while staying far below what a
  real change moves (a weight matrix scaled by 1 + 1e-3 moves these numbers 10-1000x the noise).
- ``parts``: a ratio whose denominator can be near zero (R5's Spearman concentration: trace over
  the sum of a correlation matrix, -0.01 to 0.32 on the tiny model), compared through its
  numerator and denominator (``engine.outputs.claims.baseline_parts``), which determine it. A
  denominator near zero amplifies their noise by ``1 / |den|``; comparing the parts loses no
  sensitivity and gains stability.
- ``unmeasured``: recorded by ``pytest claims/ --update-baselines`` for a number the noise study
  has not seen; compared exactly until ``python -m engine baselines`` measures it.

The noise study (``python -m engine baselines --profile tiny``) runs the profile's pipeline in a
fresh process under each ``noise_variants()`` environment, plus the recorded runs of other
machines (``--observe``), and writes values, rules, spreads and the reason per number. With
``--merge`` the recorded values stay and this machine's runs widen the spreads, so the
baseline's evidence grows with every CPU it meets.
"""
from __future__ import annotations

import difflib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from engine.errors import UserError
from engine.files import REPO_ROOT
from engine.outputs import claims as C

FORMAT = 2
BASELINES_DIR = REPO_ROOT / "fixtures" / "baselines"
MARGIN = 10.0
EXACT_ULPS = 8
EPS64 = 2.0 ** -52
#: Environments under which the pipeline must give the same science: (name, variables, CPU flag
#: it needs or None). "reference" is the machine's own default.
VARIANTS = (
    ("reference", {}, None),
    ("aten-default", {"ATEN_CPU_CAPABILITY": "default"}, None),
    ("aten-avx2", {"ATEN_CPU_CAPABILITY": "avx2"}, "avx2"),
    ("aten-avx512", {"ATEN_CPU_CAPABILITY": "avx512"}, "avx512f"),
    ("mkl-cbwr-compatible", {"MKL_CBWR": "COMPATIBLE"}, None),
    ("mkl-sse4_2", {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}, None),
    ("onednn-sse41", {"ONEDNN_MAX_CPU_ISA": "SSE41"}, None),
    ("numpy-baseline-simd", {"NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
                             "OPENBLAS_CORETYPE": "Prescott"}, None),
    ("1-thread", {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}, None),
    ("2-threads", {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "NUMBA_NUM_THREADS": "2"}, None),
    # the far corner the test suite reruns: generic kernels, one thread, MKL's compatible path
    ("generic-1-thread", {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                          "MKL_CBWR": "COMPATIBLE", "NUMBA_NUM_THREADS": "1"}, None),
)
GENERIC = dict(VARIANTS[-1][1])
#: Every library's generic code path on one thread (GENERIC, and MKL, oneDNN, numpy and OpenBLAS
#: held to SSE4): arithmetic that any x86-64 CPU reproduces bit for bit, so a tiny run under it has
#: the same bytes everywhere (tests/test_artifacts.py compares them with digests recorded on main).
PINNED = {**GENERIC, "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41",
          "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR", "OPENBLAS_CORETYPE": "Prescott"}


def _null(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine() -> dict:
    """What identifies this machine's arithmetic: CPU model, torch's kernel level, the relevant flags."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = sorted(cpu_flags() & {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16"})
    return {"cpu": model, "torch_capability": torch.backends.cpu.get_cpu_capability(), "flags": flags,
            "cores": os.cpu_count()}


def noise_variants(flags: set[str] | None = None) -> tuple[list[tuple[str, dict]], list[str]]:
    """(runnable variants, names skipped with the missing CPU flag) on a CPU with ``flags``."""
    flags = cpu_flags() if flags is None else flags
    run, skipped = [], []
    for name, env, needs in VARIANTS:
        if needs is not None and needs not in flags:
            skipped.append(f"{name} (CPU lacks {needs})")
        else:
            run.append((name, dict(env)))
    return run, skipped


# ------------------------------------------------------------------------------------------------
# rules and comparison
# ------------------------------------------------------------------------------------------------
def exact_tolerance(b: float, m: float = 0.0) -> float:
    return EXACT_ULPS * EPS64 * max(abs(b), abs(m))


def _why(rule: str, spread: float, worst: str | None, n_runs: int, parts=None, value=None) -> str:
    if rule == "exact":
        return f"did not move in {n_runs} runs of the noise study; float64 rounding only"
    if rule == "noise":
        return f"moved by up to {spread:.2g} ({worst}); tolerance {MARGIN:g} x that"
    if rule == "parts":
        here = "" if value is None else f" (the ratio here: {value:.3g})"
        return (f"ratio compared through {' and '.join(parts)}, which determine it: near a zero denominator "
                f"the ratio multiplies their noise{here}")
    return "not in the noise study yet: compared exactly; `python -m engine baselines` measures it"


def make_entry(value, *, spread: float | None, worst: str | None, n_runs: int, parts=None) -> dict:
    """One number's baseline record: value, rule, tolerance, the measured spread and why."""
    v = None if _null(value) else float(value)
    if parts:
        rule, tol = "parts", None
    elif spread is None:
        rule, tol = "unmeasured", 0.0
    elif spread == 0.0:
        rule, tol = "exact", 0.0
    else:
        rule, tol = "noise", MARGIN * spread
    return {"value": v, "rule": rule, "tol": tol, "spread": spread, "worst": worst,
            "why": _why(rule, spread or 0.0, worst, n_runs, parts, value)}


def compare(measured: dict, entry: dict) -> tuple[bool, list[dict], str]:
    """Compare one claim's ``measured`` numbers with its recorded ``entry`` (``{key: record}``).

    Returns ``(passed, moved, diff)``: ``moved`` lists ``{key, baseline, measured, diff, tol,
    rule}`` for every number outside its rule (and keys present on one side only); ``diff`` is
    the same as text, one line each ("" when passed). Null/NaN matches only null/NaN.
    """
    moved = []
    for k in sorted(set(measured) | set(entry)):
        if k not in entry:
            moved.append({"key": k, "baseline": None, "measured": measured[k], "diff": None, "tol": None,
                          "rule": "not in baseline"})
            continue
        rec = entry[k]
        if k not in measured:
            moved.append({"key": k, "baseline": rec["value"], "measured": None, "diff": None, "tol": None,
                          "rule": "not measured"})
            continue
        if rec["rule"] == "parts":
            continue
        m, b = measured[k], rec["value"]
        if _null(m) or b is None:
            if not (_null(m) and b is None):
                moved.append({"key": k, "baseline": b, "measured": None if _null(m) else float(m), "diff": None,
                              "tol": rec["tol"], "rule": rec["rule"]})
            continue
        d = abs(float(m) - b)
        tol = rec["tol"] if rec["rule"] == "noise" else exact_tolerance(b, float(m))
        if d > tol:
            moved.append({"key": k, "baseline": b, "measured": float(m), "diff": d, "tol": tol, "rule": rec["rule"]})
    return (not moved), moved, "\n".join(_line(r) for r in moved)


def _line(r: dict) -> str:
    if r["rule"] == "not in baseline":
        return f"+ {r['key']}: {r['measured']} (not in baseline)"
    if r["rule"] == "not measured":
        return f"- {r['key']}: {r['baseline']} (in baseline, not measured)"
    if r["diff"] is None:
        return f"~ {r['key']}: baseline {r['baseline']} -> measured {r['measured']}"
    return (f"~ {r['key']}: baseline {r['baseline']:.9g} -> measured {r['measured']:.9g} "
            f"(|diff| {r['diff']:.3g} > tol {r['tol']:.3g}, {r['rule']})")


# ------------------------------------------------------------------------------------------------
# the baseline file
# ------------------------------------------------------------------------------------------------
def path_of(profile: str, directory: Path | None = None) -> Path:
    return Path(directory or os.environ.get("STEP_NEURONS_BASELINES") or BASELINES_DIR) / f"{profile}.json"


def load(profile: str, directory: Path | None = None) -> dict | None:
    """The profile's baseline document, None if none is recorded; UserError for an old format."""
    path = path_of(profile, directory)
    if not path.is_file():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("format") != FORMAT:
        raise UserError(f"{path} is a baseline of format {doc.get('format', 1)} (no per-value tolerances); "
                        f"record it again with `python -m engine baselines --profile {profile}`")
    return doc


def measure_all(analysis: dict) -> dict[str, dict]:
    return {cid: C.measurements(cid, analysis) for cid in C.CLAIM_IDS}


def _source(analysis: dict) -> dict:
    meta = analysis.get("meta", {})
    return {k: meta.get(k) for k in ("model_id", "revision", "data", "speech_backend", "versions", "k", "steps",
                                     "langs")}


def document(profile: str, reference: dict[str, dict], spreads: dict, study: dict, source: dict) -> dict:
    """A baseline document from the reference numbers ``{claim: {key: value}}`` and ``spreads``
    ``{claim: {key: (spread, worst)}}`` (a missing key: unmeasured)."""
    n_runs = len(study.get("runs", [])) + len(study.get("observations", []))
    claims = {}
    for cid, values in reference.items():
        claims[cid] = {}
        for k in sorted(values):
            parts = C.baseline_parts(cid, k)
            spread, worst = spreads.get(cid, {}).get(k, (None, None))
            claims[cid][k] = make_entry(values[k], spread=spread, worst=worst, n_runs=n_runs, parts=parts)
    return {"about": __doc__.split("\n\n")[0].strip() + " Rules: see engine/tools/baselines.py.",
            "format": FORMAT, "profile": profile, "margin": MARGIN, "exact_ulps": EXACT_ULPS,
            "study": study, "source": source, "claims": claims}


def write(profile: str, doc: dict, directory: Path | None = None, log=print) -> Path:
    """Write the document atomically and print a unified diff against the previous one."""
    path = path_of(profile, directory)
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    new = json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, path)
    diff = list(difflib.unified_diff(old.splitlines(), new.splitlines(), f"{path.name} (old)",
                                     f"{path.name} (new)", lineterm="", n=1))
    log(f"baselines written: {path} ({'unchanged' if not diff else f'{len(diff)} diff lines'})")
    for line in diff:
        log(line)
    return path


def update_values(profile: str, analysis: dict, old: dict | None) -> dict:
    """``--update-baselines``: this run's numbers as the new values; every number keeps the
    spread the noise study measured for it (a new number is ``unmeasured``)."""
    reference = measure_all(analysis)
    spreads = {cid: {k: (r["spread"], r["worst"]) for k, r in entry.items() if r["spread"] is not None}
               for cid, entry in (old or {}).get("claims", {}).items()}
    study = dict((old or {}).get("study", {}))
    study["values_from"] = {"how": "pytest claims/ --update-baselines", "machine": machine(),
                            "date": time.strftime("%Y-%m-%d")}
    return document(profile, reference, spreads, study, _source(analysis))


# ------------------------------------------------------------------------------------------------
# the noise study
# ------------------------------------------------------------------------------------------------
def deviation(value, reference, digits: int | None = None) -> float:
    """|value - reference|, less the rounding of a ``digits``-significant-digit ``value``; inf
    where exactly one of them is null."""
    if _null(value) or _null(reference):
        return 0.0 if _null(value) and _null(reference) else math.inf
    d = abs(float(value) - float(reference))
    if digits and value != 0:
        d = max(0.0, d - 0.5 * 10 ** (math.floor(math.log10(abs(value))) - digits + 1))
    return d


def spreads_of(reference: dict[str, dict], runs: dict[str, tuple[dict, int | None]]) -> dict:
    """``{claim: {key: (spread, worst run)}}``: the largest deviation of any run from the reference
    (a run that lacks a number, e.g. an older baseline without it, says nothing about it)."""
    out = {}
    for cid, values in reference.items():
        out[cid] = {}
        for k, ref in values.items():
            spread, worst = 0.0, None
            for name, (numbers, digits) in runs.items():
                if k not in numbers.get(cid, {}):
                    continue
                d = deviation(numbers[cid][k], ref, digits)
                if d > spread:
                    spread, worst = d, name
            out[cid][k] = (spread, worst)
    return out


def read_observation(path: Path) -> tuple[dict, int | None]:
    """Numbers of another machine's run: an ``analysis.json`` (full precision) or a baseline file
    of format 1 (values to ``significant_digits``) or 2."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if "overlap" in doc:
        return measure_all(doc), None
    if doc.get("format") == FORMAT:
        return {cid: {k: r["value"] for k, r in e.items()} for cid, e in doc["claims"].items()}, None
    return doc["claims"], int(doc.get("significant_digits", 6))


def run_variant(profile: str, env: dict, out: Path, reuse: Path | None = None, overrides=()) -> dict:
    """The profile's pipeline in a fresh process under ``env`` (variables set before torch
    loads); its measurements. ``reuse``: a finished run root whose data and speech stages (and
    speech cache) are copied first, since no variant reaches them (pure Python and espeak-ng)."""
    root = Path(out)
    if reuse is not None:
        for stage_dir in list(Path(reuse, profile).glob("data-*")) + list(Path(reuse, profile).glob("speech-*")):
            shutil.copytree(stage_dir, root / profile / stage_dir.name, dirs_exist_ok=True)
        if (Path(reuse) / "cache" / "speech").is_dir():
            shutil.copytree(Path(reuse) / "cache" / "speech", root / "cache" / "speech", dirs_exist_ok=True)
    cmd = [sys.executable, "-m", "engine", "run", "--profile", profile, "--out", str(root)]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env={**os.environ, "STEP_NEURONS_QUIET": "1", **env},
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"noise variant {env or 'reference'} failed (exit {proc.returncode}): "
                        f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no output'}")
    analysis = next(Path(root, profile).glob("report-*/analysis.json"))
    return measure_all(json.loads(analysis.read_text(encoding="utf-8")))


def study(profile: str, *, work: Path, variants=None, observe=(), merge: bool = False, log=print) -> dict:
    """Run the noise study and return the new baseline document (see the module docstring)."""
    chosen, skipped = noise_variants()
    if variants is not None:
        unknown = sorted(set(variants) - {n for n, _, _ in VARIANTS})
        if unknown:
            raise UserError(f"unknown noise variant(s) {unknown}; known: {', '.join(n for n, _, _ in VARIANTS)}")
        chosen = [(n, e) for n, e in chosen if n in variants or n == "reference"]
    old = load(profile) if merge else None
    if merge and old is None:
        raise UserError(f"--merge: no baseline recorded at {path_of(profile)}; run without --merge first")
    runs: dict[str, tuple[dict, int | None]] = {}
    reuse = None
    t0 = time.perf_counter()
    for name, env in chosen:
        log(f"noise study: {name} {env or ''} ...")
        runs[name] = (run_variant(profile, env, work / name, reuse), None)
        reuse = reuse or work / name
    here = machine()
    observations = []
    for path in observe:
        numbers, digits = read_observation(Path(path))
        label = f"observed: {Path(path).name}"
        runs[label] = (numbers, digits)
        observations.append({"path": str(path), "significant_digits": digits})
    if merge:
        reference = {cid: {k: r["value"] for k, r in e.items()} for cid, e in old["claims"].items()}
        here_keys = {cid: set(v) for cid, v in runs["reference"][0].items()}
        if here_keys != {cid: set(v) for cid, v in reference.items()}:
            raise UserError("--merge: this code measures other numbers than the recorded baseline holds; "
                            "record it again without --merge")
        previous = {cid: {k: (r["spread"] or 0.0, r["worst"]) for k, r in e.items()} for cid, e in old["claims"].items()}
        runs = {f"{here['cpu']}: {n}": v for n, v in runs.items()}
    else:
        reference = runs["reference"][0]
        previous = {}
    spreads = spreads_of(reference, runs)
    for cid, keys in previous.items():
        for k, (s, w) in keys.items():
            if k in spreads.get(cid, {}) and s > spreads[cid][k][0]:
                spreads[cid][k] = (s, w)
    entry = {"machine": here, "date": time.strftime("%Y-%m-%d"), "runs": [n for n, _ in chosen],
             "skipped": skipped, "seconds": round(time.perf_counter() - t0)}
    doc_study = dict(old["study"]) if merge else {"command": f"python -m engine baselines --profile {profile}"}
    doc_study["machines"] = (doc_study.get("machines", []) if merge else []) + [entry]
    doc_study["runs"] = doc_study.get("runs", []) + [f"{here['cpu']}: {n}" for n, _ in chosen]
    doc_study["observations"] = doc_study.get("observations", []) + observations
    doc_study["variants"] = {n: e for n, e, _ in VARIANTS}
    source = old["source"] if merge else _source(json.loads(next(
        Path(work, "reference", profile).glob("report-*/analysis.json")).read_text(encoding="utf-8")))
    return document(profile, reference, spreads, doc_study, source)


def baselines_arguments(parser) -> None:
    parser.description = (
        "Measure the noise floor of every baseline number and record the profile's baseline with a "
        "tolerance and its reason per number: the pipeline runs in a fresh process under each noise "
        "variant (torch's CPU kernels, MKL's and oneDNN's instruction sets, numpy's SIMD, 1 and 2 "
        "threads); numbers that never move are compared exactly, the others within "
        f"{MARGIN:g}x their spread. About 6 minutes for the tiny profile on 2 cores.")
    parser.add_argument("--profile", default="tiny", help="profile (default tiny)")
    parser.add_argument("--variants", default=None,
                        help="comma-separated subset of: " + ", ".join(n for n, _, _ in VARIANTS))
    parser.add_argument("--observe", action="append", default=[], metavar="PATH",
                        help="another machine's analysis.json, or an earlier baseline file, counted as one more run")
    parser.add_argument("--merge", action="store_true",
                        help="keep the recorded values and widen their spreads with this machine's runs")
    parser.add_argument("--work", default=None, help="where the variant runs go (default: a temporary directory)")


def baselines_command(args) -> int:
    import tempfile

    if args.profile == "paper":
        raise UserError("baselines are for offline profiles; the paper profile is judged on the paper's bounds")
    variants = None if args.variants is None else [v.strip() for v in args.variants.split(",") if v.strip()]
    with tempfile.TemporaryDirectory(prefix="noise-study-") as tmp:
        work = Path(args.work or tmp)
        doc = study(args.profile, work=work, variants=variants, observe=args.observe, merge=args.merge,
                    log=lambda m: print(m, flush=True))
    write(args.profile, doc)
    rules = [r["rule"] for e in doc["claims"].values() for r in e.values()]
    print(json.dumps({"profile": args.profile, "numbers": len(rules),
                      **{rule: rules.count(rule) for rule in ("exact", "noise", "parts", "unmeasured")},
                      "machine": doc["study"]["machines"][-1]["machine"]}))
    return 0
