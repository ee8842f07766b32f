"""Where reports go: ``reports/<profile>-<timestamp>/``, and ``reports/latest`` pointing at the newest."""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

from engine.files import REPO_ROOT

#: Environment override of the reports root (tests point it at a temporary directory).
ENV_REPORTS = "STEP_NEURONS_REPORTS"


def reports_root() -> Path:
    return Path(os.environ.get(ENV_REPORTS) or REPO_ROOT / "reports")


def new_report_dir(profile: str, root: Path | None = None, now: _dt.datetime | None = None) -> Path:
    """Create and return ``<root>/<profile>-<YYYYmmdd-HHMMSS>`` (suffix -2, -3... on collision)."""
    root = Path(root or reports_root())
    root.mkdir(parents=True, exist_ok=True)
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        path = root / (f"{profile}-{stamp}" if n == 1 else f"{profile}-{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a report directory under {root}")


def update_latest(out_dir: Path) -> Path:
    """Point ``<parent>/latest`` at ``out_dir`` atomically (relative symlink, os.replace)."""
    out_dir = Path(out_dir)
    link = out_dir.parent / "latest"
    tmp = out_dir.parent / f".latest.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(out_dir.name, tmp)
    os.replace(tmp, link)
    return link
