import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.files import CHUNK_BYTES, sha256_file
from engine.model import fingerprint
from engine.pipeline import config
from engine.pipeline import run as pipeline
from engine.pipeline.stages import STAGES

TINY = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_model"


def _whole_file_digest(directory: Path) -> str:
    """The original implementation (whole files in memory): the oracle for the streamed one."""
    h = hashlib.sha256()
    for f in sorted(directory.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(directory).as_posix().encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return "sha256:" + h.hexdigest()[:16]


@pytest.mark.parametrize("size", [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES,
                                  3 * CHUNK_BYTES + 17])
def test_streamed_file_hash_equals_hashlib_over_the_whole_file(tmp_path, size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    f = tmp_path / "w.bin"
    f.write_bytes(data)
    assert sha256_file(f) == hashlib.sha256(data).hexdigest()
    assert sha256_file(f, chunk_bytes=7) == hashlib.sha256(data).hexdigest()


def test_directory_digest_equals_the_whole_file_oracle_with_and_without_cache(tmp_path):
    cache = tmp_path / "cache.json"
    assert fingerprint.directory_digest(TINY) == _whole_file_digest(TINY)
    assert fingerprint.directory_digest(TINY, cache) == _whole_file_digest(TINY)
    assert fingerprint.directory_digest(TINY, cache) == _whole_file_digest(TINY)  # from the cache


def test_cache_is_used_then_invalidated_by_size_or_mtime(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.mkdir()
    (model / "a.bin").write_bytes(b"a" * 1000)
    (model / "b.bin").write_bytes(b"b" * 10)
    cache = tmp_path / "cache.json"
    calls = []
    real = fingerprint.sha256_file
    monkeypatch.setattr(fingerprint, "sha256_file", lambda p, *a: calls.append(Path(p).name) or real(p, *a))

    first = fingerprint.directory_digest(model, cache)
    assert sorted(calls) == ["a.bin", "b.bin"] and len(json.loads(cache.read_text())) == 2
    calls.clear()
    assert fingerprint.directory_digest(model, cache) == first and calls == []

    st = (model / "a.bin").stat()
    os.utime(model / "a.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # same bytes, new mtime
    assert fingerprint.directory_digest(model, cache) == first and calls == ["a.bin"]
    calls.clear()

    (model / "b.bin").write_bytes(b"b" * 11)  # new size (and content)
    changed = fingerprint.directory_digest(model, cache)
    assert calls == ["b.bin"] and changed != first and changed == _whole_file_digest(model)
    assert len(json.loads(cache.read_text())) == 2  # stale entries of this directory dropped


def test_run_hashes_the_weights_once_per_run_and_caches_under_the_output_root(tmp_path, monkeypatch):
    calls = []
    real = fingerprint.sha256_file
    monkeypatch.setattr(fingerprint, "sha256_file", lambda p, *a: calls.append(p) or real(p, *a))
    cfg = config.load_profile("tiny")
    run = pipeline.Run(cfg, tmp_path / "out")
    keys = [run.key(s) for s in STAGES]  # record and steer both need the weights
    assert run.weights_revision() == _whole_file_digest(TINY)
    n_files = sum(1 for f in TINY.rglob("*") if f.is_file())
    assert len(calls) == n_files
    calls.clear()
    again = pipeline.Run(cfg, tmp_path / "out")  # a later process of the same run
    assert [again.key(s) for s in STAGES] == keys and calls == []
    assert (tmp_path / "out" / "cache" / "weights-sha256.json").exists()


def test_hashing_a_large_model_file_keeps_rss_bounded(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    big = model / "model.safetensors"
    size = 384 * 2**20
    with open(big, "wb") as fh:  # sparse: costs no disk, but reading it whole costs its size in RAM
        fh.truncate(size)
    script = (
        "import resource, sys, json\n"
        "from engine.pipeline import config, run as pipeline\n"
        "cfg = config.load_profile('tiny', {'model.id': sys.argv[1]})\n"
        "run = pipeline.Run(cfg, sys.argv[2])\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "digest = run.weights_revision()\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'grew_kib': after - before, 'digest': digest}))\n")
    out = subprocess.run([sys.executable, "-c", script, str(model), str(tmp_path / "out")],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    h = hashlib.sha256(b"model.safetensors")
    h.update(hashlib.sha256(b"\0" * size).digest())
    assert result["digest"] == "sha256:" + h.hexdigest()[:16]
    assert result["grew_kib"] < 100 * 1024, f"RSS grew by {result['grew_kib'] / 1024:.0f} MiB while hashing"
