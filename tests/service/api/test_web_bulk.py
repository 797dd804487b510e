"""The web page's Bulk tab in a real headless Chromium, against a live `unpaired serve`:
upload, progress, failed items, download (with the API key), cancel."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from tests.service.api.browser import screenshot, wait
from tests.service.api.conftest import png
from tests.service.servers import running_server, service_env
from tests.service.video_clips import TIMES_MS, decoded, phone_clip
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
]


def open_bulk_tab(driver: webdriver.Chrome, url: str, key: str | None = None) -> None:
    driver.get(url + "/")
    if key:
        field = driver.find_element(By.ID, "api-key")
        field.send_keys(key)
        field.send_keys("\t")
    wait(driver).until(lambda d: d.find_element(By.ID, "model").is_enabled())
    Select(driver.find_element(By.ID, "direction")).select_by_value("AtoB")
    driver.find_element(By.ID, "tab-bulk").click()
    assert driver.find_element(By.ID, "bulk-panel").is_displayed()
    assert not driver.find_element(By.ID, "translate-panel").is_displayed()


def state_of(driver: webdriver.Chrome) -> str:
    return driver.find_element(By.ID, "bulk-state").text


def wait_for_state(driver: webdriver.Chrome, *states: str, seconds: float = 120) -> str:
    wait(driver, seconds).until(lambda d: state_of(d) in states)
    return state_of(driver)


def downloaded(folder: Path, seconds: float = 60) -> Path:
    return wait_until(
        lambda: next((p for p in folder.iterdir() if p.suffix == ".zip"), None),
        lambda: f"nothing downloaded into {folder}: {list(folder.iterdir())}",
        timeout=seconds,
    )


def test_an_archive_becomes_a_job_with_its_failures_listed_and_its_results_downloaded(
    browser: webdriver.Chrome, downloads: Path, model_store: Path, tmp_path: Path
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(6):
            archive.writestr(f"photos/{i:02d}.png", png(48, 64, offset=8 * i))
        archive.writestr("photos/broken.png", b"not an image at all")
    upload = tmp_path / "photos.zip"
    upload.write_bytes(buffer.getvalue())
    env = service_env(model_store, api_keys="bulk-key")
    with running_server(env, tmp_path / "api.log") as server:
        open_bulk_tab(browser, server.url, key="bulk-key")
        browser.find_element(By.ID, "bulk-files").send_keys(str(upload))
        assert "1 file chosen (1 archive)" in browser.find_element(By.ID, "bulk-chosen").text
        browser.find_element(By.ID, "bulk-submit").click()

        assert wait_for_state(browser, "partially_failed", "succeeded", "failed") == (
            "partially_failed"
        )
        counts = browser.find_element(By.ID, "bulk-counts").text
        assert counts.startswith("6 of 7 converted, 1 failed"), counts
        assert browser.find_element(By.ID, "bulk-progress").get_attribute("value") == "1"
        rows = browser.find_elements(By.CSS_SELECTOR, "#bulk-errors tbody tr")
        cells = [[c.text for c in row.find_elements(By.TAG_NAME, "td")] for row in rows]
        assert len(cells) == 1 and cells[0][0] == "photos/broken.png" and cells[0][1], cells
        assert not browser.find_element(By.ID, "bulk-cancel").is_enabled()
        browser.set_window_size(1280, 1000)  # the failed items too
        screenshot(browser, tmp_path, "web-bulk.png")

        browser.find_element(By.ID, "bulk-download").click()  # the key goes with the fetch
        job_id = browser.find_element(By.ID, "bulk-id").text
        result = httpx.get(
            f"{server.url}/v1/jobs/{job_id}/result",
            headers={"Authorization": "Bearer bulk-key"},
            timeout=60,
        )
        assert result.status_code == 200
        saved = downloaded(downloads)
    assert saved.name == f"job-{job_id}.zip"
    with zipfile.ZipFile(saved) as got, zipfile.ZipFile(io.BytesIO(result.content)) as api:
        outputs = sorted(n for n in got.namelist() if n.endswith(".png"))
        assert outputs == [f"photos/{i:02d}.png" for i in range(6)]
        assert {n: got.read(n) for n in got.namelist()} == {
            n: api.read(n) for n in api.namelist()
        }  # the very bytes the API serves


def test_several_images_make_a_job_too(
    browser: webdriver.Chrome, model_store: Path, tmp_path: Path
) -> None:
    paths = []
    for i in range(3):
        path = tmp_path / f"image-{i}.png"
        path.write_bytes(png(40, 40, offset=10 * i))
        paths.append(path)
    with running_server(service_env(model_store), tmp_path / "api.log") as server:
        open_bulk_tab(browser, server.url)
        browser.find_element(By.ID, "bulk-files").send_keys("\n".join(map(str, paths)))
        browser.find_element(By.ID, "bulk-submit").click()
        assert wait_for_state(browser, "succeeded", "partially_failed", "failed") == "succeeded"
        assert browser.find_element(By.ID, "bulk-counts").text.startswith("3 of 3 converted")
        assert not browser.find_element(By.ID, "bulk-errors").is_displayed()
        assert browser.find_element(By.ID, "bulk-download").is_enabled()


def test_two_archives_are_refused_in_the_page_an_archive_with_images_is_one_job(
    browser: webdriver.Chrome, model_store: Path, tmp_path: Path
) -> None:
    image, archive, other = tmp_path / "a.png", tmp_path / "b.zip", tmp_path / "c.zip"
    image.write_bytes(png())
    archive.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
    other.write_bytes(archive.read_bytes())
    with running_server(service_env(model_store), tmp_path / "api.log") as server:
        open_bulk_tab(browser, server.url)
        browser.find_element(By.ID, "bulk-files").send_keys(f"{image}\n{archive}\n{other}")
        browser.find_element(By.ID, "bulk-submit").click()
        status = browser.find_element(By.ID, "status")
        wait(browser).until(lambda d: "one archive at most" in status.text)
        assert not browser.find_element(By.ID, "bulk-job").is_displayed()
        # an (empty) archive and an image: one job of the image
        browser.find_element(By.ID, "bulk-files").clear()
        browser.find_element(By.ID, "bulk-files").send_keys(f"{image}\n{archive}")
        browser.find_element(By.ID, "bulk-submit").click()
        assert wait_for_state(browser, "succeeded", "partially_failed", "failed") == "succeeded"
        assert browser.find_element(By.ID, "bulk-counts").text.startswith("1 of 1 converted")
        # and an error from the server is shown, not swallowed: an empty archive
        browser.find_element(By.ID, "bulk-files").clear()
        browser.find_element(By.ID, "bulk-files").send_keys(str(archive))
        browser.find_element(By.ID, "bulk-submit").click()
        wait(browser).until(lambda d: "not accepted" in status.text)
        assert "problem" in (status.get_attribute("class") or "")


def test_a_running_job_can_be_cancelled_from_the_page(
    browser: webdriver.Chrome, model_store: Path, tmp_path: Path
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i in range(600):
            archive.writestr(f"{i:03d}.png", png(32, 32, offset=i % 200))
    upload = tmp_path / "many.zip"
    upload.write_bytes(buffer.getvalue())
    env = service_env(model_store, chunk_size=4, bulk_concurrency=1)  # ~150 small chunks
    with running_server(env, tmp_path / "api.log") as server:
        open_bulk_tab(browser, server.url)
        browser.find_element(By.ID, "bulk-files").send_keys(str(upload))
        browser.find_element(By.ID, "bulk-submit").click()
        wait_for_state(browser, "queued", "running")
        browser.find_element(By.ID, "bulk-cancel").click()
        assert wait_for_state(browser, "cancelled", "succeeded") == "cancelled"
        counts = browser.find_element(By.ID, "bulk-counts").text
        done = int(counts.split(" of ")[0])
        assert done < 600, counts  # no new chunk started after the cancel
        assert "cancelled" in browser.find_element(By.ID, "status").text


def test_a_clip_chosen_on_the_bulk_tab_comes_back_translated_with_its_frames_counted(
    browser: webdriver.Chrome, downloads: Path, model_store: Path, tmp_path: Path
) -> None:
    clip = phone_clip(tmp_path / "walk.mp4")
    with running_server(service_env(model_store), tmp_path / "api.log") as server:
        open_bulk_tab(browser, server.url)
        browser.find_element(By.ID, "bulk-files").send_keys(str(clip))
        assert "1 file chosen" in browser.find_element(By.ID, "bulk-chosen").text
        browser.find_element(By.ID, "bulk-submit").click()
        assert wait_for_state(browser, "partially_failed", "succeeded", "failed") == "succeeded"
        counts = browser.find_element(By.ID, "bulk-counts").text
        assert counts.startswith(f"1 of 1 converted, 0 failed, {len(TIMES_MS)} video frames"), (
            counts
        )
        browser.find_element(By.ID, "bulk-download").click()
        with zipfile.ZipFile(downloaded(downloads)) as results:
            assert sorted(results.namelist()) == ["walk.mp4", "walk.mp4.json"]
            times = [round(t * 1000) for t, _ in decoded(results.read("walk.mp4"))]
            assert times == TIMES_MS
