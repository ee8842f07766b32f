"""Profiles as files (``engine/profiles/<name>.toml``) plus ``--set section.key=value`` overrides.

The schema is the union of the shipped profiles: every profile has the same keys, so a typo
in an override is an error rather than a silently ignored setting.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import tomllib

from engine.errors import UserError
from engine.files import REPO_ROOT
from engine.pipeline import definitions as definitions_mod
from engine.pipeline.inputs.corpus import corpus_size
from engine.science.languages import ALL_LANGS, PAPER_LANGS, check_pairs, steering_pairs

PROFILE_DIR = Path(__file__).resolve().parents[1] / "profiles"
KNOWN_LANGS = ALL_LANGS


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str, overrides: list[str] | dict | None = None) -> dict:
    """Load a profile by name or TOML path, apply overrides, validate; returns a plain dict.

    ``overrides``: ``["rank.k=50", ...]`` or ``{"rank.k": 50}``. Values are parsed as TOML
    scalars/arrays and must have the type of the setting they replace.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.toml"
    if not path.exists():
        raise UserError(f"unknown profile '{name_or_path}'; choose one of {available_profiles()} "
                        "or give a path to a .toml file")
    cfg = tomllib.loads(path.read_text())
    cfg.setdefault("profile", {})["name"] = path.stem
    schema = _schema()
    for section, keys in schema.items():
        for key in keys:
            if key not in cfg.get(section, {}):
                raise UserError(f"profile {path} lacks [{section}] {key}; copy it from {PROFILE_DIR / 'tiny.toml'}")
    for section, keys in cfg.items():
        for key in keys:
            if section != "profile" and key not in schema.get(section, {}):
                raise UserError(f"profile {path} has unknown setting [{section}] {key}; remove it or fix its name "
                                f"(settings are in {PROFILE_DIR / 'tiny.toml'})")
    file_definitions = dict(cfg["definitions"])
    parsed = _parse_overrides(overrides)
    for dotted, value in parsed.items():
        section, _, key = dotted.partition(".")
        if section not in schema or key not in schema[section]:
            raise UserError(f"unknown setting '{dotted}'; settings are "
                            + ", ".join(f"{s}.{k}" for s in schema for k in schema[s]))
        old = cfg[section][key]
        if isinstance(old, float) and isinstance(value, int):
            value = float(value)
        if type(value) is not type(old):
            raise UserError(f"setting '{dotted}' must be {type(old).__name__} like {old!r}, got {value!r}")
        cfg[section][key] = value
    # the preset in force sets every definition the profile file and --set leave to it
    set_here = {d.partition(".")[2] for d in parsed if d.startswith("definitions.")}
    cfg["definitions"] = definitions_mod.resolve(file_definitions, set_here, cfg["definitions"])
    validate(cfg)
    return cfg


def _parse_overrides(overrides) -> dict:
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    out = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UserError(f"override '{item}' is not key=value (e.g. rank.k=50)")
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw.strip()  # a bare word is a string
    return out


#: Accepted values of the settings that take a name.
CHOICES: dict[str, tuple[str, ...]] = {
    "model.dtype": ("float32", "bfloat16", "float16", "auto"),
    "data.source": ("embedded", "fleurs"),
    "speech.backend": ("espeak", "xtts", "natural"),
    "record.prefix": ("greedy", "gold"),
    "record.store_dtype": ("float16", "bfloat16", "float32", "auto"),  # engine.pipeline.store.STORE_DTYPES + auto
    "steer.positions": ("all", "from_t"),
    "definitions.preset": definitions_mod.PRESETS,
    **{f"definitions.{d.name}": d.choices for d in definitions_mod.DEFINITIONS if d.choices},
}
#: Also accepted (the loader's short names), not advertised.
ALIASES: dict[str, tuple[str, ...]] = {"model.dtype": ("fp32", "bf16", "fp16")}
#: Smallest accepted value of each integer (and float) setting; every other int must be >= 0.
MINIMUM: dict[str, int | float] = {
    "model.batch_size": 1, "data.n_identify": 1, "data.n_steer": 1, "record.max_new_tokens": 1,
    "record.rows_per_block": 1, "record.cols_per_chunk": 1, "rank.k": 1, "rank.n_boot": 1, "steer.max_new_tokens": 1,
}
#: Settings that must not be empty strings.
NON_EMPTY = ("model.id", "output.root", "prompts.S2T", "prompts.T2T", "prompts.ASR", "prompts.TR")


def _fail(dotted: str, value, fix: str):
    raise UserError(f"{dotted}={value!r} is invalid: {fix}")


def _check_types(cfg: dict, schema: dict) -> None:
    """Every setting has the type of the schema's (tiny profile's) value; list items too."""
    for section, keys in schema.items():
        for key, example in keys.items():
            value, dotted = cfg[section][key], f"{section}.{key}"
            want = type(example)
            if want is float and type(value) is int:
                value = cfg[section][key] = float(value)
            if type(value) is not want:
                _fail(dotted, value, f"give {_a(want.__name__)} like {example!r}")
            if want is list and example:
                item = type(example[0])
                if any(type(v) is not item for v in value):
                    _fail(dotted, value, f"give a list of {item.__name__} like {example!r}")


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def validate(cfg: dict) -> None:
    """Every setting against its type and range, and the combinations later stages need, before
    any work: UserError with one line naming the setting and the fix.

    Checks that need the model (k against the neuron catalog), the requested stages (steering
    pairs) or the file system (model directory, FLEURS files) are made by the pipeline's
    preflight (``check_stages``, ``check_against_catalog``).
    """
    _check_types(cfg, _schema())
    for dotted, choices in CHOICES.items():
        section, key = dotted.split(".")
        if cfg[section][key] not in choices + ALIASES.get(dotted, ()):
            _fail(dotted, cfg[section][key], f"use one of {', '.join(choices)}")
    for section, keys in cfg.items():
        for key, value in keys.items():
            dotted = f"{section}.{key}"
            low = MINIMUM.get(dotted, 0)
            if type(value) in (int, float) and not value >= low:
                _fail(dotted, value, f"use {'an integer' if type(value) is int else 'a number'} >= {low}")
    for dotted in NON_EMPTY:
        section, key = dotted.split(".")
        if not cfg[section][key].strip():
            _fail(dotted, cfg[section][key], "it must not be empty")
    for task, prompt in cfg["prompts"].items():
        try:
            prompt.format(target="German")
        except (KeyError, IndexError, ValueError) as exc:
            _fail(f"prompts.{task}", prompt, f"its only placeholder may be {{target}} ({exc!r}); write a literal "
                  "brace as {{ or }}")
    device = cfg["model"]["device"]
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        _fail("model.device", device, "use cpu, cuda or cuda:<index>")
    langs = cfg["data"]["langs"]
    bad = [lang for lang in langs if lang not in KNOWN_LANGS or lang == "eng"]
    if bad:
        raise UserError(f"unknown study language(s) {bad} in data.langs; use codes from {KNOWN_LANGS[1:]}")
    if len(langs) < 2 or len(set(langs)) != len(langs):
        raise UserError(f"data.langs must list at least two distinct languages, got {langs}")
    if cfg["data"]["source"] == "embedded" and set(langs) - set(PAPER_LANGS):
        raise UserError(f"the embedded corpus holds only {list(PAPER_LANGS[1:])}; for "
                        f"{sorted(set(langs) - set(PAPER_LANGS))} set data.source=fleurs")
    check_pairs(cfg["steer"]["pairs"])  # against data.langs when the steer stage is asked for
    steps = cfg["record"]["steps"]
    if not steps or any(s < 1 for s in steps) or sorted(set(steps)) != steps:
        raise UserError(f"record.steps must be increasing integers >= 1, got {steps}")
    if cfg["record"]["max_new_tokens"] < max(steps):
        raise UserError(f"record.max_new_tokens={cfg['record']['max_new_tokens']} is below the last step "
                        f"{max(steps)}; raise it")
    _check_definitions(cfg)
    sweep = cfg["rank"]["k_sweep"]
    if not sweep or sorted(set(sweep)) != sweep or sweep[0] < 1:
        _fail("rank.k_sweep", sweep, "give increasing integers >= 1, e.g. [10, 25, 50]")
    if cfg["steer"]["tau"] > 100:
        _fail("steer.tau", cfg["steer"]["tau"], "it is a control rate in percent: use 0 to 100")
    d = cfg["data"]
    if d["source"] == "embedded":
        if d["fleurs_root"]:
            _fail("data.fleurs_root", d["fleurs_root"], "it is read only with data.source=fleurs; "
                  "set data.source=fleurs or data.fleurs_root=''")
        room = corpus_size()
        if d["n_identify"] + d["n_steer"] > room:
            raise UserError(f"data.n_identify + data.n_steer = {d['n_identify'] + d['n_steer']} exceeds the "
                            f"{room} sentences of the embedded corpus; lower data.n_identify to at most "
                            f"{room - d['n_steer']}")
    if cfg["speech"]["backend"] == "espeak" and cfg["speech"]["voice"]:
        import shutil

        # imported here, not at the top: the backends pull in numpy and scipy (~1 s), which reading
        # a profile otherwise never needs
        from engine.pipeline.inputs.tts import EspeakBackend

        if shutil.which("espeak-ng"):  # absent: preflight names the missing binary
            known = EspeakBackend().variants()
            if cfg["speech"]["voice"] not in known:
                _fail("speech.voice", cfg["speech"]["voice"], "with the espeak backend it names a voice variant "
                      f"of `espeak-ng --voices=variant`, e.g. {', '.join(known[:6])}; or '' for each language's own")
    if cfg["speech"]["backend"] == "natural":
        if d["source"] != "fleurs":
            _fail("speech.backend", "natural", "recorded speech exists only for FLEURS: set data.source=fleurs "
                  "or use espeak or xtts")
        if not cfg["speech"]["voice"]:
            _fail("speech.voice", "", "the natural backend reads recordings from speech.voice: set it to the "
                  "directory holding <config>/audio/<split>/*.wav")


def _check_definitions(cfg: dict) -> None:
    """The ``[definitions]`` combinations that have a meaning (engine.pipeline.definitions)."""
    defs = cfg["definitions"]
    activities = definitions_mod.BY_NAME["decoder_activity"].choices
    bad = [a for a in cfg["record"]["decoder_activity"] if a not in activities]
    if bad:
        _fail("record.decoder_activity", cfg["record"]["decoder_activity"], f"list some of {', '.join(activities)}")
    if defs["short_outputs"] == "keep" and defs["decoder_activity"] != "prefix_mean":
        _fail("definitions.short_outputs", "keep", "an output that ended before step t has no position t: keep "
              "needs definitions.decoder_activity=prefix_mean (the mean over its shorter prefix), or use drop")


def check_stages(cfg: dict, stages) -> None:
    """Combinations that only the requested stages need (UserError, one line)."""
    if "steer" in stages:
        langs = cfg["data"]["langs"]
        if not steering_pairs(cfg["steer"]["pairs"], langs):
            raise UserError(f"data.langs={langs} contains no steering pair of steer.pairs (by default German or "
                            "French with Chinese or Japanese); add the languages or set steer.pairs, or leave out "
                            "the steer and report stages with --stages")


def _schema() -> dict:
    return tomllib.loads((PROFILE_DIR / "tiny.toml").read_text())


def check_against_catalog(cfg: dict, n_decoder: int, n_encoders: dict[str, int]) -> None:
    """k larger than a neuron group cannot be honoured: refuse before any work."""
    ks = [cfg["rank"]["k"], cfg["steer"]["k"] * 2, *cfg["rank"]["k_sweep"]]
    smallest = min([n_decoder, *n_encoders.values()])
    if max(ks) > smallest:
        raise UserError(f"k={max(ks)} (rank.k, rank.k_sweep or 2*steer.k) exceeds the {smallest} neurons "
                        "of the smallest module group of this model; lower k")


def model_path(cfg: dict) -> str:
    """A relative model id that exists under the repository root is a local directory."""
    mid = cfg["model"]["id"]
    if mid.startswith("~"):
        return str(Path(mid).expanduser())
    local = REPO_ROOT / mid
    return str(local) if not Path(mid).is_absolute() and local.exists() else mid


def looks_like_path(model_id: str) -> bool:
    """A Hub id is exactly ``owner/name``; anything else (absolute, ./, ~, deeper) is a directory."""
    return (Path(model_id).is_absolute() or model_id.startswith((".", "~")) or model_id.count("/") > 1
            or model_id.endswith("/") or "\\" in model_id)


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def section(cfg: dict, *names: str) -> dict:
    return {n: copy.deepcopy(cfg[n]) for n in names}


def profile_arguments(parser) -> None:
    """--profile and --set, shared by every command that reads a profile."""
    parser.add_argument("--profile", default="tiny", help="profile name or .toml path (default: tiny)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a profile setting, e.g. --set rank.k=50 (repeatable)")
