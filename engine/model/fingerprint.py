"""Content hashes of model files in bounded memory, computed once per file version.

A model directory holds gigabytes of weights (4.6 GB for Large in bf16). Its identity enters
the keys of the stages that run the model, so it is asked for several times per run and in
every process of a resumed or sharded run. ``directory_digest`` therefore

- streams each file through SHA-256 in fixed-size chunks (memory does not grow with the
  file), and
- remembers each file's digest in a small JSON cache keyed by resolved path, size and
  modification time (ns): an unchanged file is hashed once, a rewritten one (new size or
  mtime) again.

The digest of a directory is the same whether or not the cache is used.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from engine.files import atomic_write_json, sha256_file


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def cached_file_sha256(path: Path, cache: dict) -> str:
    """``engine.files.sha256_file(path)`` looked up in / added to ``cache`` under (path, size, mtime_ns)."""
    stamp = _stamp(path)
    if stamp not in cache:
        cache[stamp] = sha256_file(path)
    return cache[stamp]


def directory_digest(directory: str | os.PathLike, cache_file: str | os.PathLike | None = None) -> str:
    """``"sha256:<16 hex>"`` over every file below ``directory`` (relative path and content digest,
    in sorted path order).

    ``cache_file``: JSON file of known file digests (created when missing; an unreadable one is
    ignored and rewritten). Entries of files that no longer match their stamp are dropped.
    """
    directory = Path(directory)
    cache: dict = {}
    if cache_file is not None:
        try:
            cache = json.loads(Path(cache_file).read_text())
        except (OSError, ValueError):
            cache = {}
    before = dict(cache)
    h = hashlib.sha256()
    used = {}
    for f in sorted(directory.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(directory).as_posix().encode())
            digest = cached_file_sha256(f, cache)
            used[_stamp(f)] = digest
            h.update(bytes.fromhex(digest))
    if cache_file is not None:
        # keep other directories' entries; drop stale ones of this directory
        prefix = f"{directory.resolve()}{os.sep}"
        merged = {k: v for k, v in cache.items() if not k.startswith(prefix)}
        merged.update(used)
        if merged != before:
            atomic_write_json(Path(cache_file), merged)
    return "sha256:" + h.hexdigest()[:16]
