"""The reader's experience in a real browser: headless Chromium (Debian's `chromium`, installed by `make test`)
opens pages of the smoke book with background networking disabled and every request routed through a recording
proxy. Equations must render (MathJax, bundled), glued figures must be images, tables numbered, cross-references
resolved, and no request may leave the machine. Screenshots of two pages are kept in `_build/test-artifacts/`."""

import http.server
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from oodlib.runner import BUILD

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.book,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it)")]
ARTIFACTS = BUILD / "test-artifacts"


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def _record(self) -> None:
        _Recorder.requests.append(f"{self.command} {self.path}")
        self.send_error(502, "blocked by the test proxy")

    do_GET = do_POST = do_HEAD = do_CONNECT = _record

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def proxy():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Recorder.requests.clear()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _chromium(proxy: str, profile_dir: Path, *args: str) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-default-apps", "--disable-extensions", "--no-pings", "--disable-breakpad",
           "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--metrics-recording-only",
           "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,AutofillServerCommunication,"
           "CertificateTransparencyComponentUpdater,Translate,SafeBrowsing,InterestFeedContentSuggestions,"
           "AccountConsistency,DiceWebSigninInterception,SigninInterceptBubble",
           "--disable-signin-promo", "--allow-browser-signin=false",
           f"--user-data-dir={profile_dir}",
           f"--proxy-server=http://{proxy}", "--proxy-bypass-list=<-loopback>", "--virtual-time-budget=15000",
           "--window-size=1280,1600", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180).stdout


@pytest.fixture(scope="module")
def dom(smoke_html, proxy, tmp_path_factory):
    """The rendered DOM (after scripts ran) of each chapter page, plus screenshots of two pages."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pages = sorted((smoke_html / "notebooks").glob("*.html")) + [smoke_html / "book" / "intro.html"]
    dumps = {}
    for page in pages:
        dumps[page.stem] = _chromium(proxy, tmp_path_factory.mktemp("chrome"), "--dump-dom", page.as_uri())
    for page in (smoke_html / "book" / "intro.html", smoke_html / "notebooks" / "section2_1_algorithm.html"):
        shot = ARTIFACTS / f"{page.stem}.png"
        _chromium(proxy, tmp_path_factory.mktemp("chrome"), f"--screenshot={shot}", page.as_uri())
    return dumps


# Chromium itself keeps calling its updater and sign-in service even with every background-networking switch
# off; those requests come from the browser, not from the book, and are the only ones tolerated.
BROWSER_OWN_HOSTS = ("update.googleapis.com", "accounts.google.com", "clients2.google.com")


def test_pages_render_without_any_network_request(dom):
    assert all(dom.values()), "chromium returned an empty DOM"
    from_pages = [r for r in _Recorder.requests if not any(host in r for host in BROWSER_OWN_HOSTS)]
    assert from_pages == [], f"requests left the machine: {from_pages}"


def test_equations_render_with_the_bundled_mathjax(dom):
    page = dom["section2_1_algorithm"]
    assert "<mjx-container" in page, "MathJax did not typeset the page's equations"
    assert "<mjx-merror" not in page, "MathJax reported an error in an equation"


def test_glued_figures_are_images_and_tables_are_numbered(dom):
    page = dom["section2_1_algorithm"]
    assert "&lt;Figure size" not in page and "<Figure size" not in page
    figures = re.findall(r'<figure[^>]*id="fig-s21-[^"]*"[^>]*>.*?</figure>', page, flags=re.S)
    assert figures and all("<img" in f for f in figures), "a numbered figure holds no image"
    assert re.search(r'<span class="caption-number">Table \d+', page), "no numbered table"
    assert re.search(r'<span class="caption-number">Fig\. \d+', page), "no numbered figure"


def test_cross_references_resolve(dom):
    for name, page in dom.items():
        assert "???" not in page, f"{name}: an unresolved reference"
        assert not re.search(r'class="[^"]*\bxref\b[^"]*"[^>]*>\s*<span[^>]*>\s*</span>', page)
    assert re.search(r'<span class="std std-numref">Table \d+</span>', dom["section2_1_algorithm"])


def test_screenshots_are_kept_as_artefacts(dom):
    for name in ("intro", "section2_1_algorithm"):
        shot = ARTIFACTS / f"{name}.png"
        assert shot.exists() and shot.stat().st_size > 10_000, f"no screenshot of {name}"


def test_book_pages_are_free_of_progress_bar_noise(dom):
    for name, page in dom.items():
        assert not re.search(r"\d+%\|[█▏▎▍▌▋▊▉ ]*\|", page), f"{name} shows a progress bar"
