"""The web page of `connectome serve` in a real browser: Debian's chromium driven by Selenium,
against a real server running a small prune job. Skipped where chromium or chromedriver is missing."""

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("selenium")

from conftest import write_idx  # noqa: E402
from serve_helpers import Server  # noqa: E402

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                reason="needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)")
# Enough steps for a curve, over in a few seconds on one core.
JOB = {"model": "lenet_300_100", "remove": "2%", "calib_samples": 500, "eval_samples": 100, "batch_size": 250}


@pytest.fixture
def server(tmp_path):
    data_root = tmp_path / "data"
    write_idx(data_root / "idx", n_train=3000, n_test=300)
    s = Server(tmp_path / "serve", "--data-root", str(data_root))
    s.data = f"mnist:{data_root / 'idx'}"
    yield s
    s.stop()


@pytest.fixture
def browser(monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never try a download
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def test_page_lists_the_job_and_charts_its_steps(server, browser, tmp_path):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def until(condition, what):
        try:
            return WebDriverWait(browser, 90, poll_frequency=0.2,
                                 ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(condition)
        except TimeoutException:
            browser.save_screenshot(str(tmp_path / "timeout.png"))
            pytest.fail(f"page: no {what} in 90 s; job {server.job(job['id'])}; screenshot {tmp_path / 'timeout.png'}")

    def chart_points():
        return int(browser.find_element(By.ID, "chart").get_attribute("data-points"))

    job = server.submit(**JOB, data=server.data)
    browser.get(server.url + "/")
    row = f'#jobs tr[data-job-id="{job["id"]}"]'

    # The table lists the job with its state, as attribute and as coloured badge.
    state = until(lambda d: d.find_element(By.CSS_SELECTOR, row).get_attribute("data-state"), "job row")
    assert state in ("queued", "running", "done")
    text, classes = browser.execute_script(  # one read: the table is re-rendered every 2 s
        "const b = document.querySelector(arguments[0]); return [b.textContent, b.className]", f"{row} .state")
    assert text in ("queued", "running", "done") and "state" in classes

    # Selected by default; its steps reach the chart (from the job, then server-sent events).
    until(lambda d: chart_points() > 1, "points on the chart")
    browser.save_screenshot(str(tmp_path / "serve-page-running.png"))
    xs = browser.execute_script("return window.connectomeChart.data[0]")
    assert len(xs) > 1 and xs[0] == 0 and xs == sorted(xs)  # weights removed, from the dense model on

    # On `end` the page reloads the job: the whole curve, and the files as links.
    until(lambda d: d.find_element(By.CSS_SELECTOR, row).get_attribute("data-state") == "done", "state done")
    # Read in one script: the page re-renders the list, so element handles can go stale between calls.
    links = until(lambda d: d.execute_script("return [...document.querySelectorAll('#files a')].map(a => a.textContent)"),
                  "file links")
    assert "model.safetensors" in links
    done = server.job(job["id"])
    assert chart_points() == len(done["points"]) == len(browser.execute_script("return window.connectomeChart.data[0]"))
    assert browser.find_element(By.ID, "summary").text == "0 running · 0 queued · 1 job"
    browser.save_screenshot(str(tmp_path / "serve-page.png"))
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors

    # To look at the page: CONNECTOME_PAGE_SCREENSHOT=/tmp/serve-page.png (and /tmp/serve-page-running.png).
    if os.environ.get("CONNECTOME_PAGE_SCREENSHOT"):
        out = Path(os.environ["CONNECTOME_PAGE_SCREENSHOT"])
        shutil.copy(tmp_path / "serve-page.png", out)
        shutil.copy(tmp_path / "serve-page-running.png", out.with_stem(out.stem + "-running"))
