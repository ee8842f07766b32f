"""Whole files or none: atomic writes, JSON read back with the file named when it is damaged,
content digests, and the one line a full disk or an unwritable output gets.

The lowest layer of file handling, shared by the activation store, the speech cache and the
stages, so that every one of them says the same thing about the same failure.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

from engine.errors import UserError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
#: The checkout this package runs from: fixtures, profiles' default output root, reports.
REPO_ROOT = Path(__file__).resolve().parents[1]


def note(message: str) -> None:
    """One line on stderr about damage found and what is done about it."""
    print(message, file=sys.stderr, flush=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``.

    A disk-full or permission error becomes a UserError naming the path; the destination is
    never left partially written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise UserError(os_error_message(path, exc)) from exc


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(Path(path), json.dumps(obj, indent=1, sort_keys=True).encode())


def read_json(path: Path, what: str = "file"):
    """Parse the JSON file ``path``; a missing, empty or garbled file is a ``Damaged`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise Damaged(path, "is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Damaged(path, f"is not a whole {what} (not valid JSON)") from None


def os_error_message(path: Path, exc: OSError) -> str:
    """The one line for an OSError met while writing ``path`` (disk full, not writable, other)."""
    if exc.errno in DISK_FULL:
        return f"disk full while writing {path}; free space or choose another --out, then rerun to resume"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path} ({exc.strerror}); choose a writable --out directory"
    return f"cannot write {path}: {exc.strerror or exc}"


class Damaged(UserError):
    """A file that exists (or should) but cannot be trusted; ``str()`` is one line naming it."""

    def __init__(self, path: Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path} {problem}")


#: Bytes read per step of a digest: large enough for full hashing speed, small enough to be
#: irrelevant to resident memory.
CHUNK_BYTES = 1 << 20


def sha256_file(path: str | os.PathLike, chunk_bytes: int = CHUNK_BYTES) -> str:
    """SHA-256 hex digest of a file's bytes, read in ``chunk_bytes`` pieces into one buffer.

    Equals ``hashlib.sha256(Path(path).read_bytes()).hexdigest()``; peak extra memory is one
    chunk, whatever the file size.
    """
    h = hashlib.sha256()
    buf = bytearray(chunk_bytes)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


def file_digest(path: Path, *, content: bool = True) -> dict:
    """``{"size": bytes, "sha256": hex}`` of a file (``sha256`` left out when ``content`` is False)."""
    path = Path(path)
    out = {"size": path.stat().st_size}
    if content:
        out["sha256"] = sha256_file(path)
    return out


def disk_usage(path: Path, skip: Path | None = None) -> int:
    """Bytes of the regular files below ``path`` (links not followed), leaving out ``skip`` and
    everything below it."""
    total = 0
    for f in Path(path).rglob("*"):
        if skip is not None and (f == skip or skip in f.parents):
            continue
        if f.is_file() and not f.is_symlink():
            total += f.stat().st_size
    return total


def save_part(directory: Path, name: str, arrays: dict) -> Path:
    """Write one piece of a sharded result: ``arrays`` as ``<directory>/<name>.<sha256[:16]>.npz``.

    The content's digest is in the file name, so ``load_part`` recognises any later damage;
    the write is atomic, so a killed writer leaves no part at all.
    """
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    path = Path(directory) / f"{name}.{hashlib.sha256(data).hexdigest()[:16]}.npz"
    atomic_write_bytes(path, data)
    return path


def load_part(directory: Path, name: str) -> dict | None:
    """The arrays of part ``name`` written by ``save_part``, or None when there is none whole.

    A part whose bytes no longer match the digest in its name is removed with one line.
    """
    import io

    import numpy as np

    for path in sorted(Path(directory).glob(f"{name}.*.npz")):
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest()[:16] == path.name.rsplit(".", 2)[1]:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        note(f"{path} is damaged (checksum mismatch); computing it again")
        path.unlink(missing_ok=True)
    return None
