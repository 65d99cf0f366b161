"""`iqs report` / `iqs cull --report`: the HTML page, built here and checked in a real browser
(headless Chromium through selenium; .ci/run installs the Debian packages)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iqs_cli import html_report, workflow, xmp
from iqs_cli.cli import app
from iqs_cli.result import ShotResult
from iqs_cli.undo import undo
from tests.helpers import make_photo

runner = CliRunner()
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def shoot(tmp_path) -> Path:
    """Two dark failures (one RAW+JPEG pair), two mid and one bright shot, in two folders."""
    root = tmp_path / "trip"
    make_photo(root / "day1" / "IMG_0001.JPG", size=(96, 64), brightness=3)
    (root / "day1" / "IMG_0001.CR2").write_bytes(b"raw bytes stand-in")
    make_photo(root / "day1" / "IMG_0002.JPG", size=(96, 64), brightness=130, seed=1)
    make_photo(root / "day1" / "IMG_0003.JPG", size=(64, 96), brightness=120, seed=2)
    # A folder "dark <" holding "script> é.jpg": the path says </script>, which must not end
    # the page's data element.
    make_photo(root / "day2" / "dark </script> é.jpg", size=(96, 64), brightness=4)
    make_photo(root / "day2" / "bright.jpg", size=(96, 64), brightness=250)
    return root


def page_data(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    found = re.search(r'<script type="application/json" id="iqs-data">(.*?)</script>', text, re.S)
    return json.loads(found.group(1))


def labels_of(data: dict) -> dict:
    return {s["name"]: s["label"] for s in data["shots"]}


def test_report_after_cull_shows_moved_shots_from_the_cache(shoot, tiny_model, tmp_path):
    cull = runner.invoke(app, ["cull", str(shoot), "--move-rejected", "--model", str(tiny_model),
                               "--report", str(tmp_path / "cull.html")])
    assert cull.exit_code == 0, cull.output
    page = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(shoot), "-o", str(page), "--model", str(tiny_model)])
    assert result.exit_code == 0, result.output
    assert f"wrote {page} (5 shots" in result.output
    for made in (tmp_path / "cull.html", page):
        data = page_data(made)
        assert labels_of(data) == {
            "day1/IMG_0001.JPG": "rejected", "day1/IMG_0002.JPG": "pending",
            "day1/IMG_0003.JPG": "pending", "day2/dark </script> é.jpg": "rejected",
            "day2/bright.jpg": "accepted"}
        moved = {s["name"]: s["moved_to"] for s in data["shots"] if "moved_to" in s}
        assert moved == {"day1/IMG_0001.JPG": "_rejected/day1/IMG_0001.JPG",
                         "day2/dark </script> é.jpg": "_rejected/day2/dark </script> é.jpg"}
        pair = next(s for s in data["shots"] if s["name"] == "day1/IMG_0001.JPG")
        assert sorted(Path(f).name for f in pair["files"]) == ["IMG_0001.CR2", "IMG_0001.JPG"]
        assert all(Path(f).is_file() for s in data["shots"] for f in s["files"])
        assert data["model"] == "tiny 0.0.1" and data["roots"] == [str(shoot.resolve())]
        assert all(s["thumb"].startswith("data:image/jpeg;base64,") for s in data["shots"])
    # Every shot came from the results cache: the cull copied the moved photos' entries to
    # where they went, so nothing is scored again.
    assert page_data(page)["cached"] == 5
    # Once undone, nothing is shown as moved.
    assert not undo(shoot).errors
    again = workflow.report([str(shoot)], workflow.ScoreOptions(model=str(tiny_model)))
    assert [s.moved_from for s in again.shots] == [None] * 5
    assert all(s.result.cached for s in again.shots)  # back where they were: still known


def test_page_is_self_contained(shoot, tiny_model, tmp_path):
    page = tmp_path / "report.html"
    assert runner.invoke(app, ["report", str(shoot), "-o", str(page), "--model",
                               str(tiny_model)]).exit_code == 0
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "http://" not in text.replace("http://www.w3.org", "")  # no network address at all
    assert text.count("</script>") == 2  # a file name cannot end the data element


def test_person_labels_and_burst_groups_are_shown(tmp_path):
    photos = [make_photo(tmp_path / f"p{i}.jpg", brightness=60 + i) for i in range(3)]
    results = [ShotResult(str(p), [str(p)], label="rejected", mos=30.0 + i, stars=1,
                          reasons=["blur"], probabilities={"rejected": .7, "pending": .2,
                                                           "accepted": .1}, model="m")
               for i, p in enumerate(photos)]
    for result in results[:2]:  # a burst of two (the fields issue 16 adds)
        result.group, result.group_best = "b1", results[1].path
        result.group_rank = 1 if result is results[1] else 2
    xmp.write_shot(results[0])
    xmp.write_person_labels(photos[0], "accepted", 4)
    shots = [html_report.ReportShot(r) for r in results]
    for shot in shots:
        shot.person = html_report.person_label(shot.result)
    page = html_report.build_page(shots, [tmp_path], wording={"blur": "blurry"})
    assert not page.thumbnail_errors
    out = tmp_path / "r.html"
    html_report.write_page(page, out)
    records = page_data(out)["shots"]
    assert records[0]["person"] == {"label": "accepted", "rating": 4}
    assert records[1]["person"] is None and records[0]["reasons"] == ["blurry"]
    assert (records[0]["group"], records[0]["group_rank"], records[0]["group_size"],
            records[0]["group_best"]) == ("b1", 2, 2, "p1.jpg")
    assert "group" not in records[2]


def test_a_photo_that_cannot_be_decoded_is_one_error(tmp_path, tiny_model):
    make_photo(tmp_path / "ok.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    page = tmp_path / "out" / "r.html"
    (tmp_path / "out").mkdir()
    result = runner.invoke(app, ["report", str(tmp_path), "-o", str(page), "--model",
                                 str(tiny_model)])
    assert result.exit_code == 1
    assert "broken.jpg" in result.output
    data = page_data(page)
    broken = next(s for s in data["shots"] if s["name"] == "broken.jpg")
    assert broken["label"] is None and broken["error"] and broken["thumb"] is None


# ---------------------------------------------------------------------------------------------
# In a real browser


def _browser(download_dir: Path, width: int):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("chromium is not installed (apt-get install chromium chromium-driver; "
                    ".ci/run does)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                    "(pip install '.[test]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                f"--window-size={width},900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    if width < 500:  # a headless window is at least 500 px wide: emulate the phone's viewport
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(download_dir)})
    return driver


def _screenshot(driver, name: str, tmp_path: Path) -> Path:
    """Saved in IQS_SCREENSHOT_DIR when set (to look at), else beside the test's files."""
    folder = Path(os.environ.get("IQS_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    assert driver.save_screenshot(str(path))
    return path


def _wait(condition, seconds: float = 10.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


@pytest.fixture
def culled_page(shoot, tiny_model, tmp_path) -> Path:
    page = tmp_path / "page" / "cull.html"
    page.parent.mkdir()
    result = runner.invoke(app, ["cull", str(shoot), "--move-rejected", "--model",
                                 str(tiny_model), "--report", str(page)])
    assert result.exit_code == 0, result.output
    return page


def test_browser_counts_filter_keys_and_changes_file(culled_page, shoot, tiny_model, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = _browser(downloads, 1280)
    try:
        driver.get(culled_page.as_uri())
        tiles = driver.find_elements(By.CSS_SELECTOR, "#grid .tile")
        assert len(tiles) == 5
        shown = lambda: [t for t in driver.find_elements(By.CSS_SELECTOR, "#grid .tile")
                         if t.is_displayed()]
        by_label = {k: len(driver.find_elements(By.CSS_SELECTOR, f'.tile[data-label="{k}"]'))
                    for k in ("rejected", "pending", "accepted")}
        assert by_label == {"rejected": 2, "pending": 2, "accepted": 1}
        counts = {b.get_attribute("data-filter"): b.text for b in
                  driver.find_elements(By.CSS_SELECTOR, "#filters button") if b.is_displayed()}
        assert counts == {"all": "All (5)", "rejected": "✕ Rejected (2)",
                          "pending": "○ Pending (2)", "accepted": "✓ Accepted (1)",
                          "moved": "↪ Moved (2)"}
        # Labels are words and icons, not colour alone; every picture says what it shows.
        badges = [" ".join(t.find_element(By.CSS_SELECTOR, ".badge").text.split()) for t in tiles]
        assert sorted(badges) == ["○ Pending", "○ Pending", "✓ Accepted", "✕ Rejected",
                                  "✕ Rejected"]
        assert all("MOS" in img.get_attribute("alt") for img in
                   driver.find_elements(By.CSS_SELECTOR, ".tile img"))
        moved = driver.find_elements(By.CSS_SELECTOR, ".tile .moved")
        assert sorted(m.text for m in moved) == ["↪ moved to _rejected/day1/",
                                                 "↪ moved to _rejected/day2/dark </"]
        _screenshot(driver, "report-desktop.png", tmp_path)

        driver.find_element(By.CSS_SELECTOR, '#filters [data-filter="rejected"]').click()
        assert sorted(t.get_attribute("data-label") for t in shown()) == ["rejected"] * 2
        driver.find_element(By.CSS_SELECTOR, '#filters [data-filter="all"]').click()
        assert len(shown()) == 5

        # Sorted worst first: the first tile is a rejected one. Arrow right, then "a".
        order = [t.get_attribute("data-id") for t in shown()]
        first = shown()[0]
        first.click()  # opens the large view of that shot
        viewer = driver.find_element(By.ID, "viewer")
        assert viewer.get_attribute("open") is not None
        # The original is shown from its file:// address once loaded (a JPEG).
        _wait(lambda: driver.find_element(By.ID, "viewer-img").get_attribute("data-full") == "yes")
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        _wait(lambda: viewer.get_attribute("open") is None)
        active = driver.switch_to.active_element
        assert active.get_attribute("data-id") == order[0]  # focus back on its tile
        active.send_keys(Keys.ARROW_RIGHT)
        active = driver.switch_to.active_element
        assert active.get_attribute("data-id") == order[1]
        target = json.loads(driver.execute_script(
            "return JSON.stringify(JSON.parse(document.getElementById('iqs-data').textContent)"
            ".shots[arguments[0]])", int(order[1])))
        assert target["label"] == "rejected"
        active.send_keys("a")
        assert active.get_attribute("data-label") == "accepted"
        assert "was Rejected" in active.text
        assert driver.find_element(By.ID, "save").text == "Save changes (1)"
        # The focus ring is visible: an outline on the focused tile.
        assert driver.execute_script("return getComputedStyle(document.activeElement)"
                                     ".outlineStyle") != "none"
        driver.find_element(By.ID, "save").click()
        saved = _wait(lambda: [p for p in downloads.glob("changes*.json")])
        changes_path = saved[0]
        _wait(lambda: changes_path.stat().st_size > 0)
        # Nothing was asked from the network: every resource is inline or a local file.
        resources = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        assert all(r.startswith(("data:", "file:", "blob:")) for r in resources), resources
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()

    changes = json.loads(changes_path.read_text(encoding="utf-8"))
    assert changes["format"] == "iqs-changes" and changes["version"] == 1
    [change] = changes["changes"]
    assert change["label"] == "accepted" and change["path"] == target["path"]
    assert "/_rejected/" in change["path"]  # a moved shot: labelled where it is now
    result = runner.invoke(app, ["apply", str(changes_path)])
    assert result.exit_code == 0, result.output
    for file in change["files"]:
        labels = xmp.read_labels(xmp.sidecar_path(file))
        assert labels["pick"] == 3 and not labels["by_iqs"]
        assert labels["iqs"]["label"] == "rejected"  # iqs's own verdict is still recorded
    # The next report shows the person's label.
    page = tmp_path / "again.html"
    assert runner.invoke(app, ["report", str(shoot), "-o", str(page), "--model",
                               str(tiny_model)]).exit_code == 0
    [again] = [s for s in page_data(page)["shots"] if s["path"] == change["path"]]
    assert again["person"] == {"label": "accepted", "rating": 3} and again["label"] == "rejected"


def test_browser_phone_width_has_no_horizontal_scroll(culled_page, tmp_path):
    from selenium.webdriver.common.by import By

    driver = _browser(tmp_path, 390)
    try:
        driver.get(culled_page.as_uri())
        assert driver.execute_script("return window.innerWidth") == 390
        width = driver.execute_script("return [document.documentElement.scrollWidth, "
                                      "document.documentElement.clientWidth]")
        assert width[0] <= width[1], width
        tile = driver.find_element(By.CSS_SELECTOR, "#grid .tile")
        assert tile.size["width"] < 390 / 1.5  # two columns
        _screenshot(driver, "report-phone.png", tmp_path)
        tile.click()
        width = driver.execute_script("return [document.documentElement.scrollWidth, "
                                      "document.documentElement.clientWidth]")
        assert width[0] <= width[1], width
        _screenshot(driver, "report-phone-large.png", tmp_path)
    finally:
        driver.quit()
