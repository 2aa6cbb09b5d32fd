"""A real headless Chromium for the page tests: Debian's ``chromium`` and ``chromedriver``.

    driver = start_chromium()          # skips the test when the browser is not installed
    driver.get(path.as_uri())
    severe = console_errors(driver)

Selenium is pointed at the system ``chromedriver`` (``Service(executable_path=...)``), so it
never tries to download a driver; with no browser, no driver or no selenium the test is
skipped, saying what to install (``apt-get install chromium chromium-driver``).
"""
from __future__ import annotations

import os
import shutil
from typing import List

import pytest

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
INSTALL = "apt-get install chromium chromium-driver, and selenium in the venv"


def _first(env: str, candidates, name: str):
    found = os.environ.get(env) or next((p for p in candidates if os.path.exists(p)), None) or shutil.which(name)
    return found if found and os.path.exists(found) else None


#: Set by `make test` (which installs chromium, chromedriver and selenium first): there a missing
#: browser is a failure, not a skip.
STRICT = os.environ.get("ATTNLAB_STRICT_TESTS") == "1"


def unavailable(reason: str) -> None:
    """Skip a browser test where the browser cannot be had; fail it where `make test` promised one."""
    if STRICT:
        pytest.fail(f"{reason}; `make test` installs it (ATTNLAB_STRICT_TESTS=1)")
    pytest.skip(reason)


def start_chromium(width: int = 1400, height: int = 1000):
    """A headless Chromium WebDriver with browser console logging on; skips the test if it cannot start."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable(f"selenium is not installed ({INSTALL})")
    binary = _first("ATTNLAB_CHROMIUM", CHROMIUM, "chromium")
    driver_path = _first("ATTNLAB_CHROMEDRIVER", CHROMEDRIVER, "chromedriver")
    if binary is None or driver_path is None:
        unavailable(f"no {'chromium' if binary is None else 'chromedriver'} found ({INSTALL})")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    except Exception as e:  # a browser that is installed but cannot start is an environment problem
        unavailable(f"headless chromium did not start: {type(e).__name__}: {' '.join(str(e).split())[:200]}")


def console_errors(driver) -> List[str]:
    """The SEVERE entries of the browser console since the last call (uncaught errors, CSP violations)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
