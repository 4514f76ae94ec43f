"""The compare page in a real headless browser (Debian's chromium, driven by selenium): load,
vote with keys and the mouse, reload and resume, the summary page.

Set CHATSFT_SCREENSHOTS=DIR to keep the screenshots of both pages (docs/ holds the README's).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from chatsft.io import read_jsonl, write_jsonl
from tests.serve.server import Server

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver)")

PAIRS = [  # prompt, reference, reply a, reply b
    ([{"role": "user", "content": "What is the capital of France?"}],
     "The capital of France is Paris.", "The capital of France is Paris.", "Paris is nice."),
    ([{"role": "system", "content": "你是一位耐心的老师，回答要准确。"},
      {"role": "user", "content": "日本说什么语言？"},
      {"role": "assistant", "content": "日本的主要语言是日语。"},
      {"role": "user", "content": "那它位于哪个洲？"}],
     "日本位于亚洲。", "日本位于欧洲。", "日本位于**亚洲**。"),
    ([{"role": "system", "content": "You are a helpful assistant."},
      {"role": "user", "content": "How do I print the numbers 1 to 3 in Python?"}],
     "Use a loop:\n\n```python\nfor i in range(1, 4):\n    print(i)\n```",
     "Use a loop:\n\n```python\nfor i in range(1, 4):\n    print(i)\n```\n\n- `range(1, 4)` "
     "stops before 4",
     "Write `print(1, 2, 3)`."),
]


@pytest.fixture()
def compare_server(tmp_path):
    """`chatsft compare` of two runs' evaluate predictions (as `git show` would give them)."""
    for side, k in (("lr-1e-3", 2), ("lr-3e-4", 3)):
        (tmp_path / side).mkdir()
        write_jsonl(tmp_path / side / "eval_predictions.jsonl", [
            {"index": i, "prompt": p[0], "reference": p[1], "prediction": p[k]}
            for i, p in enumerate(PAIRS)])
    srv = Server(["compare", "--a", "lr-1e-3/eval_predictions.jsonl",
                  "--b", "lr-3e-4/eval_predictions.jsonl", "--votes", "votes.jsonl"],
                 cwd=tmp_path)
    yield srv, tmp_path / "votes.jsonl"
    srv.stop()


@pytest.fixture()
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--lang=en-US"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def wait_text(driver, css: str, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.CSS_SELECTOR, css).text == text,
        message=f"{css} never showed {text!r}")


def screenshot(driver, name: str) -> None:
    where = os.environ.get("CHATSFT_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(where) / name))


@pytest.mark.slow
def test_vote_with_keys_and_mouse_resume_and_summary(compare_server, browser):
    from selenium.webdriver.common.by import By

    srv, votes = compare_server
    d = browser
    d.get(srv.url + "/")
    wait_text(d, "#progress", "0 / 3 voted")
    history = d.find_element(By.ID, "history").text
    assert "What is the capital of France?" in history
    shown = {d.find_element(By.ID, "left").text, d.find_element(By.ID, "right").text}
    assert shown == {PAIRS[0][2], PAIRS[0][3]}  # both replies, no names
    assert "lr-" not in d.page_source  # the names stay hidden

    left = d.find_element(By.ID, "left").text
    d.find_element(By.TAG_NAME, "body").send_keys("a")  # key: A (left) better
    wait_text(d, "#progress", "1 / 3 voted")
    [first] = read_jsonl(votes)
    assert first["prompt"] == PAIRS[0][0]
    assert first[first["choice"]]["reply"] == left  # the left reply is the one chosen

    assert "那它位于哪个洲？" in d.find_element(By.ID, "history").text  # the whole history
    assert "日本的主要语言是日语。" in d.find_element(By.ID, "history").text
    assert d.find_elements(By.CSS_SELECTOR, "#left strong, #right strong")  # Markdown bold
    right = d.find_element(By.ID, "right").text
    d.find_element(By.ID, "vote-right").click()  # mouse: B (right) better
    wait_text(d, "#progress", "2 / 3 voted")
    second = read_jsonl(votes)[1]
    assert second[second["choice"]]["reply"] == right

    d.refresh()  # resume: the two voted pairs are skipped
    wait_text(d, "#progress", "2 / 3 voted")
    assert "print the numbers 1 to 3" in d.find_element(By.ID, "history").text
    code = d.find_elements(By.CSS_SELECTOR, ".reply pre code")
    assert code and "for i in range(1, 4):" in code[0].text
    screenshot(d, "compare.png")
    d.find_element(By.TAG_NAME, "body").send_keys("t")  # tie
    wait_text(d, "#progress", "3 / 3 voted")
    assert d.find_element(By.ID, "done").is_displayed()
    assert [v["choice"] for v in read_jsonl(votes)][2] == "tie"

    d.get(srv.url + "/summary")
    choices = [v["choice"] for v in read_jsonl(votes)]
    for k in ("a", "b", "tie", "both_bad"):
        wait_text(d, f"#count-{k}", str(choices.count(k)))
    assert d.find_element(By.ID, "name-a").text == "lr-1e-3/eval_predictions.jsonl"
    rows = d.find_elements(By.CSS_SELECTOR, "#rows tr")
    assert len(rows) == 3 and "那它位于哪个洲？" in rows[1].text
    assert "%" in d.find_element(By.ID, "interval").text
    summary = json.loads(d.execute_script(
        "return fetch('/api/summary').then(r => r.text())"))
    assert summary["voted"] == 3 and summary["counts"]["tie"] == 1
    screenshot(d, "compare_summary.png")
