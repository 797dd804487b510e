"""A real headless Chromium (Debian's) for the web-page tests, downloads into a folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


@pytest.fixture
def browser(
    chromium: tuple[str, str], tmp_path: Path, downloads: Path
) -> Iterator[webdriver.Chrome]:
    """A headless Chromium for one test (the one way tests get a browser)."""
    binary, driver_path = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):  # fmt: skip
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: webdriver.Chrome, seconds: float = 30) -> WebDriverWait:  # type: ignore[type-arg]
    return WebDriverWait(driver, seconds)


def screenshot(driver: webdriver.Chrome, folder: Path, name: str) -> Path:
    """The page as a PNG in `folder` (the test's temporary one). `make screenshots` sets
    UNPAIRED_SCREENSHOTS_DIR=docs to refresh the pictures in the docs; a plain test run never
    writes into the checkout."""
    target = Path(os.environ.get("UNPAIRED_SCREENSHOTS_DIR") or folder) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(target)), f"no screenshot written to {target}"
    return target
