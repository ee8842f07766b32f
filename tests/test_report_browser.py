"""The tiny claims report as a person sees it: rendered by headless Chromium at 1280 × 800.

Needs Debian's ``chromium`` package (``setup.sh`` installs it) driven by the ``playwright``
Python package through ``executable_path`` (no browser download). Skipped with the reason
where either is absent, except under CI (``CI`` set), where the check must run.
"""
import json
import os
import shutil
from pathlib import Path

import pytest

from engine.outputs import claims as C
from engine.outputs import report as R
from engine.tools import baselines as B

REPO = Path(__file__).resolve().parent.parent
#: Screenshots land here for a reader of the test run (reports/ is not versioned).
ARTIFACTS = Path(os.environ.get("STEP_NEURONS_ARTIFACTS") or REPO / "reports" / "test-artifacts")
WIDTH, HEIGHT = 1280, 800
#: Issue 19: the glance table's last row ends within this many pixels of the top at 1280 × 800.
GLANCE_MAX_PX = 1000


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        why = ("needs Debian's chromium package (apt-get install chromium) and the playwright Python "
               "package (pip install -e '.[dev]'); setup.sh installs both")
        if os.environ.get("CI"):
            pytest.fail(f"the browser check must run in CI: {why}", pytrace=False)
        pytest.skip(why)
    return path


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def tiny_report(tiny_run, tmp_path_factory) -> Path:
    """The tiny run's report, judged against its baselines as the claims suite does."""
    path = tiny_run / "tiny" / next(p.name for p in (tiny_run / "tiny").glob("report-*")
                                    if (p / "analysis.json").is_file()) / "analysis.json"
    analysis = json.loads(path.read_text(encoding="utf-8"))
    registry = C.load_registry()
    baseline = B.load("tiny") or {"claims": {}}
    verdicts, outcomes = {}, {}
    for cid, entry in registry["claims"].items():
        verdicts[cid] = C.check(cid, analysis, entry)
        ok, moved, diff = B.compare(C.measurements(cid, analysis), baseline["claims"].get(cid, {}))
        outcomes[cid] = {"outcome": "passed" if ok else "failed",
                         "baseline": {"passed": ok, "moved": moved, "diff": diff}}
    out = tmp_path_factory.mktemp("tiny-report")
    return R.write_report(analysis, verdicts, outcomes, out, profile="tiny", registry=registry,
                          run_info={"analysis_path": path})["html"]


def _open(browser, html: Path):
    """A page at 1280 × 800 whose every request is logged; none may leave the machine."""
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    requests = []

    def route(r):
        requests.append(r.request.url)
        if r.request.url.startswith(("file:", "data:")):
            r.continue_()
        else:
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.goto(html.resolve().as_uri(), wait_until="load")
    return context, page, requests


def problems(page, requests, page_url: str) -> list[str]:
    """What a reader would trip over: broken images, horizontal scroll, dead anchors, requests."""
    out = []
    images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete && e.naturalWidth])")
    out += [f"image '{alt}' did not load" for alt, width in images if not width]
    scroll = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    if scroll[0] > scroll[1]:
        out.append(f"horizontal scroll: page {scroll[0]} px wide in a {scroll[1]} px window")
    dead = page.evaluate("""[...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))
        .filter(h => !h.startsWith('#') || !document.getElementById(decodeURIComponent(h.slice(1))))""")
    out += [f"link {h} resolves to nothing on the page" for h in dead]
    out += [f"network request {u}" for u in requests if u != page_url and not u.startswith("data:")]
    return out


def test_tiny_report_renders_cleanly_in_a_real_browser(browser, tiny_report):
    context, page, requests = _open(browser, tiny_report)
    try:
        assert problems(page, requests, tiny_report.resolve().as_uri()) == []
        n_images = page.eval_on_selector_all("img", "els => els.length")
        assert n_images == len(R.FIGURES)
        bottom = page.evaluate("document.querySelector('#glance-rows tr:last-child')"
                               ".getBoundingClientRect().bottom + window.scrollY")
        rows = page.eval_on_selector_all("#glance-rows tr", "els => els.length")
        assert rows == len(C.load_registry()["claims"])
        assert bottom <= GLANCE_MAX_PX, f"the glance table ends {bottom:.0f} px down"
        # every claim's evidence is collapsed under its own anchor, and no traceback is shown
        closed = page.eval_on_selector_all("details[id]", "els => els.filter(e => !e.open).length")
        assert closed == rows
        assert "Traceback" not in page.content()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        first, figure = ARTIFACTS / "report-first-screen.png", ARTIFACTS / "report-figure-4.png"
        page.screenshot(path=str(first))
        page.locator("#fig-overlap").screenshot(path=str(figure))
        for shot in (first, figure):
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        print(f"\nscreenshots: {first} ({first.stat().st_size} bytes), {figure}; glance ends at {bottom:.0f} px")
    finally:
        context.close()


def test_the_check_fails_on_a_planted_broken_page(browser, tiny_report, tmp_path):
    # each defect the check looks for, planted once: it must name all four
    text = tiny_report.read_text(encoding="utf-8").replace(
        "</body>", "<div style='width:3000px'>wide</div><img alt='remote' src='http://example.invalid/x.png'>"
                   "<a href='#nowhere'>dead</a></body>")
    broken = tmp_path / "broken.html"
    broken.write_text(text, encoding="utf-8")
    context, page, requests = _open(browser, broken)
    try:
        found = problems(page, requests, broken.resolve().as_uri())
    finally:
        context.close()
    assert any("image 'remote'" in p for p in found), found
    assert any("horizontal scroll" in p for p in found), found
    assert any("#nowhere" in p for p in found), found
    assert any("example.invalid" in p for p in found), found
