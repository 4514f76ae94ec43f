"""`dvc plots show` with the shipped page template draws every chart once, with no network,
in a real headless chromium; DVC's own page (scripts from a CDN) draws nothing there.

Set CHATSFT_SCREENSHOTS=DIR to keep the screenshot (docs/ holds the README's).
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver)")
LIVE = Path("metrics/train/plots/metrics")
SOURCES = ("data/demo.jsonl", "data/tools.jsonl")


def _tsv(path: Path, rows: list[tuple]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f, delimiter="\t", lineterminator="\n").writerows(rows)


def _dvc(repo: Path, *args: str) -> None:
    dvc = Path(sys.executable).with_name("dvc")
    subprocess.run([str(dvc), *args], cwd=repo, check=True, capture_output=True,
                   env=dict(os.environ, DVC_NO_ANALYTICS="1"))


@pytest.fixture(scope="module")
def plots_repo(tmp_path_factory) -> Path:
    """A DVC repo with the project's dvc.yaml, .dvc/config, templates and page, and curves
    like a training run's."""
    repo = tmp_path_factory.mktemp("plots")
    _dvc(repo, "init", "--no-scm")
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    shutil.copytree(ROOT / "plots", repo / "plots")
    steps = range(1, 301)
    _tsv(repo / LIVE / "train" / "loss.tsv", [("step", "loss")] + [
        (s, round(3 * math.exp(-s / 80) + 0.5 + 0.3 * math.sin(s * 1.7), 4)) for s in steps])
    _tsv(repo / LIVE / "train" / "learning_rate.tsv", [("step", "learning_rate")] + [
        (s, 3e-3 * min(1, s / 15) * (1 + math.cos(math.pi * s / 300)) / 2) for s in steps])
    _tsv(repo / LIVE / "train" / "tokens_per_second.tsv", [("step", "tokens_per_second")] + [
        (s, 9000 + 500 * math.sin(s)) for s in steps])
    _tsv(repo / LIVE / "eval" / "loss_by_source.tsv", [("step", "source", "loss")] + [
        (s, name, round(base + 2 * math.exp(-s / 90), 4)) for s in (50, 100, 150, 200, 250, 300)
        for name, base in ((SOURCES[0], 1.1), (SOURCES[1], 0.6), ("all", 0.8))])
    return repo


@pytest.fixture()
def offline_browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1200,1000", "--lang=en-US",
                # no network at all: no name resolves, and any proxy use fails
                "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_network_conditions(offline=True, latency=0, download_throughput=0,
                                  upload_throughput=0)
    yield driver
    driver.quit()


def _drawn(driver, page: Path, wait: float = 20) -> tuple[int, list[int], list[str]]:
    """(vega views embedded, non-blank pixels of each chart canvas, chart titles)."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(page.as_uri())
    count = ("return document.querySelectorAll('.vega-embed canvas.marks, "
             ".vega-embed svg.marks').length")
    try:
        WebDriverWait(driver, wait).until(lambda d: d.execute_script(count) >= 4)
    except Exception:  # noqa: BLE001 - a blank page: reported by the counts below
        pass
    pixels = driver.execute_script("""
        return Array.from(document.querySelectorAll('.vega-embed canvas.marks')).map(c => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4)
                if (d[i + 3] > 0 && (d[i] < 200 || d[i + 1] < 200 || d[i + 2] < 200)) n++;
            return n; });""")
    titles = driver.execute_script(
        "return Array.from(document.querySelectorAll('.vega-embed')).map(e => "
        "e.getAttribute('aria-label') || '')")
    return driver.execute_script(count), pixels, titles


def test_plots_page_draws_every_chart_once_offline(plots_repo, offline_browser):
    from PIL import Image

    _dvc(plots_repo, "plots", "show", "-o", "offline")
    page = plots_repo / "offline" / "index.html"
    html = page.read_text()
    assert "cdn.jsdelivr" not in html and "<script src=" not in html
    defined = [next(iter(p)) for p in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]]
    assert len(defined) == 4
    views, pixels, _ = _drawn(offline_browser, page)
    assert views == len(defined)  # each plot once: no automatic repeats of the curve files
    assert len(pixels) == len(defined) and min(pixels) > 500, pixels
    # The per-source chart draws one line per source (and `all`): vega's first three
    # category colours each cover some of its pixels.
    colours = offline_browser.execute_script("""
        const c = document.querySelector('#eval_loss_by_source canvas.marks');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const want = {'76,120,168': 0, '245,133,24': 0, '228,87,86': 0};
        for (let i = 0; i < d.length; i += 4) {
            const k = d[i] + ',' + d[i + 1] + ',' + d[i + 2];
            if (d[i + 3] === 255 && k in want) want[k]++;
        }
        return want;""")
    assert min(colours.values()) > 50, colours
    shot = offline_browser.get_screenshot_as_png()
    image = Image.open(io.BytesIO(shot)).convert("L")
    dark = sum(image.histogram()[:128])
    assert dark > 0.005 * image.width * image.height  # not a blank white page
    if os.environ.get("CHATSFT_SCREENSHOTS"):
        out = Path(os.environ["CHATSFT_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "plots.png").write_bytes(shot)


def test_dvc_default_page_is_blank_offline(plots_repo, offline_browser, tmp_path):
    """The negative control: DVC's own page loads vega from a CDN and draws nothing offline."""
    repo = tmp_path / "repo"
    shutil.copytree(plots_repo, repo)
    _dvc(repo, "config", "--unset", "plots.html_template")
    _dvc(repo, "plots", "show", "-o", "cdn")
    page = repo / "cdn" / "index.html"
    assert "cdn.jsdelivr.net/npm/vega" in page.read_text()
    views, pixels, _ = _drawn(offline_browser, page, wait=5)
    assert views == 0 and pixels == []
