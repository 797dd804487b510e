"""The web page in a real headless Chromium (Debian's), against a live `unpaired serve`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.select import Select

from tests.service.api.browser import screenshot, wait
from tests.service.api.conftest import png
from tests.service.servers import running_server, service_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
]


def sha256_in_browser(driver: webdriver.Chrome, selector: str) -> str:
    """The sha256 of the bytes an <img> shows, computed by the page's own fetch + WebCrypto."""
    script = """
        const done = arguments[arguments.length - 1];
        fetch(document.querySelector(arguments[0]).src)
          .then((r) => r.arrayBuffer())
          .then((b) => crypto.subtle.digest("SHA-256", b))
          .then((d) => [...new Uint8Array(d)].map((x) => x.toString(16).padStart(2, "0")))
          .then((hex) => done(hex.join("")));
    """
    return str(driver.execute_async_script(script, selector))


def statuses(driver: webdriver.Chrome) -> set[str | None]:
    return {
        c.get_attribute("data-status") for c in driver.find_elements(By.CSS_SELECTOR, ".result")
    }


def test_upload_translate_and_see_the_result(
    browser: webdriver.Chrome, model_store: Path, tmp_path: Path
) -> None:
    photo = tmp_path / "astronaut.png"
    photo.write_bytes(png(192, 256))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with running_server(service_env(model_store), tmp_path / "api.log") as server:
        expected = httpx.post(
            f"{server.url}/v1/models/tiny/translate?direction=AtoB&format=png",
            content=photo.read_bytes(),
            headers={"content-type": "image/png"},
        ).content
        browser.get(server.url + "/")
        wait(browser).until(lambda d: d.find_element(By.ID, "model").is_enabled())
        directions = Select(browser.find_element(By.ID, "direction"))
        assert [o.text for o in directions.options] == ["day → night (AtoB)", "night → day (BtoA)"]
        assert Select(browser.find_element(By.ID, "model")).first_selected_option.text == (
            "tiny (day ↔ night)"
        )
        directions.select_by_value("AtoB")
        browser.find_element(By.ID, "files").send_keys(f"{photo}\n{broken}")

        wait(browser).until(
            lambda d: (
                {
                    c.get_attribute("data-status")
                    for c in d.find_elements(By.CSS_SELECTOR, ".result")
                }
                == {"done", "error"}
            )
        )
        cards = {
            c.find_element(By.CSS_SELECTOR, ".name").text: c
            for c in browser.find_elements(By.CSS_SELECTOR, ".result")
        }
        good, bad = cards["astronaut.png"], cards["broken.png"]
        assert good.get_attribute("data-status") == "done"
        width = browser.execute_script(
            "return document.querySelector('.result[data-status=done] .output').naturalWidth"
        )
        assert width == 256  # the translation keeps the input's size
        digest = sha256_in_browser(browser, ".result[data-status=done] .output")
        assert digest == hashlib.sha256(expected).hexdigest()  # the very bytes the API answers
        link = good.find_element(By.CSS_SELECTOR, ".download")
        assert link.get_attribute("download") == "astronaut.png"
        assert "batch of" in good.find_element(By.CSS_SELECTOR, ".meta").text
        assert bad.get_attribute("data-status") == "error"
        message = bad.find_element(By.CSS_SELECTOR, ".error").text
        assert message.startswith("broken.png: not a readable image")
        screenshot(browser, tmp_path, "web-page.png")


def test_the_page_asks_for_the_api_key_when_the_server_needs_one(
    browser: webdriver.Chrome, model_store: Path, tmp_path: Path
) -> None:
    env = service_env(model_store, api_keys="secret-key")
    with running_server(env, tmp_path / "api.log") as server:
        browser.get(server.url + "/")
        status = browser.find_element(By.ID, "status")
        wait(browser).until(
            expected_conditions.text_to_be_present_in_element((By.ID, "status"), "API key")
        )
        assert "needs an API key" in status.text
        key = browser.find_element(By.ID, "api-key")
        key.send_keys("secret-key")
        key.send_keys("\t")  # leaving the field saves the key and lists the models again
        wait(browser).until(lambda d: d.find_element(By.ID, "model").is_enabled())
        assert "ready" in status.text
        assert (
            browser.execute_script("return localStorage.getItem('unpaired.apiKey')") == "secret-key"
        )


def test_the_page_opens_on_the_default_model_and_translates_an_example_photo_at_full_size(
    browser: webdriver.Chrome, model_store: Path, tmp_path: Path
) -> None:
    """A newcomer's first look: the real model the server names (UNPAIRED_DEFAULT_MODEL, not
    the first in the list), one click on a real photo, input and output at their own size."""
    from tests.conftest import edited_copy

    edited_copy(model_store / "tiny", model_store / "vintage", domains={"A": "modern", "B": "old"})
    env = service_env(model_store, default_model="vintage")
    with running_server(env, tmp_path / "api.log") as server:
        listed = httpx.get(f"{server.url}/examples").json()["examples"]
        chelsea = next(e for e in listed if e["name"] == "chelsea")
        photo = httpx.get(server.url + chelsea["url"]).content
        expected = httpx.post(
            f"{server.url}/v1/models/vintage/translate?direction=AtoB&format=png",
            content=photo,
            headers={"content-type": "image/png"},
        ).content
        browser.get(server.url + "/")
        wait(browser).until(lambda d: d.find_element(By.ID, "model").is_enabled())
        model = Select(browser.find_element(By.ID, "model")).first_selected_option
        assert model.text == "vintage (modern ↔ old)"
        examples = browser.find_elements(By.CSS_SELECTOR, "#examples button.example")
        assert "chelsea" in [b.get_attribute("data-name") for b in examples]
        assert browser.find_element(By.ID, "examples").is_displayed()
        browser.find_element(By.CSS_SELECTOR, "button.example[data-name=chelsea]").click()
        wait(browser).until(lambda d: statuses(d) == {"done"})
        card = browser.find_element(By.CSS_SELECTOR, ".result")
        assert card.find_element(By.CSS_SELECTOR, ".name").text == "chelsea.png"
        digest = sha256_in_browser(browser, ".result .output")
        assert digest == hashlib.sha256(expected).hexdigest()
        sizes = browser.execute_script(
            "return [...document.querySelectorAll('.result img')]"
            ".map((i) => [i.naturalWidth, i.clientWidth])"
        )
        assert sizes == [[451, 451], [451, 451]]  # full size: not scaled down to fit
        screenshot(browser, tmp_path, "web-page-example.png")
