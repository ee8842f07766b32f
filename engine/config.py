"""Profiles as files (``engine/profiles/<name>.toml``) plus ``--set section.key=value`` overrides.

The schema is the union of the shipped profiles: every profile has the same keys, so a typo
in an override is an error rather than a silently ignored setting.
"""
from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path

from engine.data.languages import ALL_LANGS
from engine.errors import UserError

PROFILE_DIR = Path(__file__).parent / "profiles"
REPO_ROOT = Path(__file__).resolve().parent.parent
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
    schema = tomllib.loads((PROFILE_DIR / "tiny.toml").read_text())
    for section, keys in schema.items():
        for key in keys:
            if key not in cfg.get(section, {}):
                raise UserError(f"profile {path} lacks [{section}] {key}; copy it from {PROFILE_DIR / 'tiny.toml'}")
    for dotted, value in _parse_overrides(overrides).items():
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


def validate(cfg: dict) -> None:
    """Contradictions that can be found before any work starts."""
    langs = cfg["data"]["langs"]
    bad = [lang for lang in langs if lang not in KNOWN_LANGS or lang == "eng"]
    if bad:
        raise UserError(f"unknown study language(s) {bad}; use codes from {KNOWN_LANGS[1:]}")
    if len(langs) < 2 or len(set(langs)) != len(langs):
        raise UserError(f"data.langs must list at least two distinct languages, got {langs}")
    steps = cfg["record"]["steps"]
    if not steps or any(s < 1 for s in steps) or sorted(set(steps)) != steps:
        raise UserError(f"record.steps must be increasing integers >= 1, got {steps}")
    if cfg["record"]["max_new_tokens"] < max(steps):
        raise UserError(f"record.max_new_tokens={cfg['record']['max_new_tokens']} is below the last step "
                        f"{max(steps)}; raise it")
    for section in ("rank", "steer"):
        if cfg[section]["k"] < 0:
            raise UserError(f"{section}.k must be >= 0")
    if cfg["record"]["prefix"] not in ("greedy", "gold"):
        raise UserError("record.prefix must be 'greedy' or 'gold'")
    if cfg["steer"]["positions"] not in ("all", "from_t"):
        raise UserError("steer.positions must be 'all' or 'from_t'")
    if cfg["data"]["source"] not in ("embedded", "fleurs"):
        raise UserError("data.source must be 'embedded' or 'fleurs'")
    if cfg["speech"]["backend"] not in ("espeak", "xtts", "natural"):
        raise UserError("speech.backend must be espeak, xtts or natural")


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
    local = REPO_ROOT / mid
    return str(local) if not Path(mid).is_absolute() and local.exists() else mid


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def section(cfg: dict, *names: str) -> dict:
    return {n: copy.deepcopy(cfg[n]) for n in names}


def profile_arguments(parser) -> None:
    """--profile and --set, shared by every command that reads a profile."""
    parser.add_argument("--profile", default="tiny", help="profile name or .toml path (default: tiny)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a profile setting, e.g. --set rank.k=50 (repeatable)")
