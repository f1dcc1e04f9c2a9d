"""Headless Chromium from Debian (``chromium`` and ``chromium-driver``, which scripts/test installs) driven
with Selenium, for the tests of the web app and the console. Tests that need it are skipped, saying why,
only where Chromium is not installed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

WAIT_SECONDS = 30


def _find(*names: str) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


def chromium() -> webdriver.Chrome:
    """A new headless browser; skips the test when Chromium or its driver is missing."""
    browser, driver = _find("chromium", "chromium-browser"), _find("chromedriver")
    if browser is None or driver is None:
        pytest.skip("Chromium is not installed: scripts/test installs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument("--window-size=1200,850")
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def wait(browser: webdriver.Chrome, check: Callable[[webdriver.Chrome], object], what: str) -> object:
    """Waits for ``check`` to give something true (stale elements are retried), failing with ``what``."""
    return WebDriverWait(browser, WAIT_SECONDS, ignored_exceptions=(StaleElementReferenceException,)).until(
        check, message=f"timed out waiting for {what}"
    )


def css(browser: webdriver.Chrome, selector: str) -> WebElement:
    """The first element matching ``selector`` that is shown, once there is one."""
    found = wait(
        browser, lambda b: [e for e in b.find_elements(By.CSS_SELECTOR, selector) if e.is_displayed()], selector
    )
    assert isinstance(found, list)
    element: WebElement = found[0]
    return element


def texts(browser: webdriver.Chrome, selector: str) -> list[str]:
    """The shown text of every element matching ``selector``, read in one step inside the page: the app
    re-renders its lists (replacing their nodes), so elements found first and read one by one afterwards
    can be gone by the time they are read (a stale element reference)."""
    return attributes(browser, selector, "innerText")


def attributes(browser: webdriver.Chrome, selector: str, name: str) -> list[str]:
    """Property ``name`` (``innerText``, ``dataset.conversation``, ...) of every element matching ``selector``,
    read in one step inside the page (see :func:`texts`)."""
    found = browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => String(arguments[1].split('.')"
        ".reduce((v, k) => (v == null ? v : v[k]), e) ?? ''))",
        selector,
        name,
    )
    assert isinstance(found, list)
    return [str(value) for value in found]


def wait_text(browser: webdriver.Chrome, selector: str, text: str) -> None:
    """Waits until an element matching ``selector`` shows ``text``."""
    wait(browser, lambda b: any(text in t for t in texts(b, selector)), f"{text!r} in {selector}")


def login(browser: webdriver.Chrome, base: str, page: str, user: str, password: str) -> None:
    browser.get(f"{base}/{page}/")
    type_into(browser, "#username", user)
    type_into(browser, "#password", password)
    css(browser, "#login-form button[type=submit]").click()


def screenshot(browser: webdriver.Chrome, name: str) -> None:
    """With SWITCHBOARD_SCREENSHOTS=DIR, saves the page as DIR/NAME.png (how docs/ got its pictures)."""
    folder = os.environ.get("SWITCHBOARD_SCREENSHOTS")
    if folder:
        browser.save_screenshot(str(Path(folder) / f"{name}.png"))


def act(browser: webdriver.Chrome, selector: str, action: Callable[[WebElement], object], what: str) -> None:
    """Does ``action`` to the first shown element matching ``selector``, finding it again (and trying again)
    when the page re-rendered it between the find and the action (a stale element is not acted upon)."""

    def done(b: webdriver.Chrome) -> bool:
        shown = [e for e in b.find_elements(By.CSS_SELECTOR, selector) if e.is_displayed()]
        if shown:
            action(shown[0])
        return bool(shown)

    wait(browser, done, f"{what} {selector}")


def click(browser: webdriver.Chrome, selector: str) -> None:
    """Clicks the shown element matching ``selector`` (see :func:`act`)."""
    act(browser, selector, lambda e: e.click(), "a click on")


def type_into(browser: webdriver.Chrome, selector: str, keys: str) -> None:
    """Types ``keys`` into the shown element matching ``selector`` (see :func:`act`)."""
    act(browser, selector, lambda e: e.send_keys(keys), "typing into")


def text(browser: webdriver.Chrome, selector: str) -> str:
    """The text of the first shown element matching ``selector``, once there is one (see :func:`act`)."""
    read: list[str] = []
    act(browser, selector, lambda e: read.append(e.text), "the text of")
    return read[-1]
