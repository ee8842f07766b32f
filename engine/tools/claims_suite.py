"""``python -m engine claims``: run the claims suite (``pytest claims/``) in this process and print
where its report is; the last line is JSON."""
from __future__ import annotations

import json

from engine.files import REPO_ROOT
from engine.outputs.report import reports_root


def claims_arguments(parser) -> None:
    parser.add_argument("--profile", default="tiny", help="tiny (default), tiny-qwen2-audio, tiny-voxtral (offline, "
                                                          "judged on their baselines) or paper")
    parser.add_argument("--update-baselines", action="store_true",
                        help="rewrite fixtures/baselines/<profile>.json from this run and show the diff")
    parser.add_argument("-n", "--workers", default=None,
                        help="pytest-xdist workers (e.g. 2 or auto); default: no xdist")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments passed to pytest (after --)")


def claims_command(args) -> int:
    """Run ``pytest claims/ --profile X`` in-process and print the report directory."""
    import pytest

    argv = [str(REPO_ROOT / "claims"), "--profile", args.profile, "-q"]
    if args.update_baselines:
        argv.append("--update-baselines")
    if args.workers:
        argv += ["-n", str(args.workers)]
    argv += list(args.pytest_args or [])
    rc = int(pytest.main(argv))
    latest = reports_root() / "latest"
    summary = {"exit_code": rc, "profile": args.profile, "report": None, "summary": None}
    if latest.exists():
        print(f"report: {latest.resolve() / 'claims-report.html'}")
        summary["report"] = str(latest.resolve() / "claims-report.html")
        claims_json = latest / "claims.json"
        if claims_json.is_file():
            summary["summary"] = json.loads(claims_json.read_text(encoding="utf-8")).get("summary")
    else:
        print("no report was written (no claim test ran)")
    print(json.dumps(summary))
    return rc
