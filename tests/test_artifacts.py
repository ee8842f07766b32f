"""Every artifact of a tiny run has the bytes it had on main when ``fixtures/digests/tiny.json``
was recorded: a change of code that is meant to leave the science alone (a restructuring, a
faster path) must leave every stage's output alone too.

The run is ``pinned_tiny_run``: the tiny profile under ``engine.tools.baselines.PINNED``, every
library's generic code path on one thread, whose arithmetic any x86-64 CPU reproduces bit for
bit (the machine's own kernels round differently from one CPU to the next, see
``engine.tools.baselines``). The digests are of every file each stage's ``COMPLETE.json`` lists,
zarr chunks included, and the stage keys are compared too: a key that moved would make every
earlier run's artifacts unusable. Recorded with library versions of their own; under other
versions (``DEPS=latest``) the bytes may rightly differ, and the test says so and skips.

To record them again after a deliberate change of the science:
``python -m tests.test_artifacts <output root of a PINNED tiny run> > fixtures/digests/tiny.json``.
"""
from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RECORDED = REPO / "fixtures" / "digests" / "tiny.json"


def artifact_digests(profile_root: Path) -> dict:
    """``{"keys": {stage: key}, "artifacts": {stage: {path: sha256}}}`` of every complete stage
    directory under ``profile_root`` (``<out>/<profile>``), from the files its COMPLETE.json lists."""
    keys, artifacts = {}, {}
    for directory in sorted(Path(profile_root).glob("*-*")):
        marker = directory / "COMPLETE.json"
        if not marker.is_file():
            continue
        stage, key = directory.name.split("-", 1)
        if stage in keys:
            raise ValueError(f"two complete {stage} stages under {profile_root}: {keys[stage]} and {key}")
        keys[stage] = key
        listed = json.loads(marker.read_text())["artifacts"]
        artifacts[stage] = {rel: hashlib.sha256((directory / rel).read_bytes()).hexdigest() for rel in sorted(listed)}
    return {"keys": keys, "artifacts": artifacts}


def differences(recorded: dict, now: dict) -> list[str]:
    """One line per stage key or artifact that is not what was recorded (missing, extra, other bytes)."""
    out = [f"stage {s}: key {recorded['keys'].get(s)} recorded, {now['keys'].get(s)} now"
           for s in sorted(set(recorded["keys"]) | set(now["keys"])) if recorded["keys"].get(s) != now["keys"].get(s)]
    for stage in sorted(set(recorded["artifacts"]) | set(now["artifacts"])):
        was, got = recorded["artifacts"].get(stage, {}), now["artifacts"].get(stage, {})
        for rel in sorted(set(was) | set(got)):
            if rel not in got:
                out.append(f"{stage}/{rel}: missing")
            elif rel not in was:
                out.append(f"{stage}/{rel}: not on main")
            elif was[rel] != got[rel]:
                out.append(f"{stage}/{rel}: other bytes")
    return out


def test_differences_name_a_planted_change_of_each_kind():
    recorded = {"keys": {"record": "a", "rank": "b"}, "artifacts": {"record": {"m": "1", "n": "2"}, "rank": {"x": "3"}}}
    assert differences(recorded, json.loads(json.dumps(recorded))) == []
    now = {"keys": {"record": "a", "rank": "c"}, "artifacts": {"record": {"m": "9", "o": "2"}, "rank": {"x": "3"}}}
    assert differences(recorded, now) == ["stage rank: key b recorded, c now", "record/m: other bytes",
                                          "record/n: missing", "record/o: not on main"]


@pytest.mark.slow
def test_every_artifact_of_a_tiny_run_has_mains_bytes(pinned_tiny_run):
    from engine.pipeline.run import library_versions

    recorded = json.loads(RECORDED.read_text())
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip(f"the digests are of x86-64 arithmetic; this machine is {platform.machine()}")
    if recorded["versions"] != library_versions():
        moved = sorted(k for k in recorded["versions"] if recorded["versions"][k] != library_versions().get(k))
        pytest.skip(f"recorded under other library versions ({', '.join(moved)}), whose kernels may rightly round "
                    "otherwise; rerun under requirements.lock")
    root, _ = pinned_tiny_run
    found = differences(recorded, artifact_digests(root / "tiny"))
    assert not found, (f"{len(found)} artifacts or keys of the tiny run differ from main's:\n" + "\n".join(found[:20]))


if __name__ == "__main__":
    from engine.pipeline.run import library_versions
    from engine.tools.baselines import PINNED

    doc = {"about": "sha256 of every artifact of `engine run --profile tiny` under engine.tools.baselines.PINNED, "
                    "recorded on main; see tests/test_artifacts.py",
           "env": PINNED, "versions": library_versions(), **artifact_digests(Path(sys.argv[1]) / "tiny")}
    print(json.dumps(doc, indent=1, sort_keys=True))
