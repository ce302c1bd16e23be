"""Headless Chromium for the page tests (the judge page, the view page): Debian's `chromium`
driven by Playwright through `executable_path` (Playwright never downloads a browser here).
A test is skipped when either is missing on a developer machine; on CI (CI=true) missing is
a failure, because .ci/run installs both."""

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("MARCO_EVAL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Generous waits: these tests check what a page does, not how fast. Beside two one-thread eval runs on a
# 2-core machine, Chromium's start and the server's imports took longer than Playwright's 30 s default.
PATIENCE_MS = 180_000


def need_browser():
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"chromium ({CHROMIUM}; apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("playwright (pip install -e '.[dev]')")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(reason + ": .ci/run should have installed it")
        pytest.skip(reason)


def new_page(browser):
    """A page in its own context (separate localStorage), waiting as long as a loaded machine needs."""
    page = browser.new_page()
    page.set_default_timeout(PATIENCE_MS)
    return page
