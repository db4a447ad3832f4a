"""The browser for end-to-end tests: Debian's Chromium driven by Playwright, never a downloaded one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import BASE_DIR, make_stack  # noqa: F401  (the stack fixture)

SCREENSHOTS = Path(__file__).parent / "screenshots"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = (
        os.environ.get("LLAMAPROXY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if not path:
        pytest.fail("Chromium is not installed: `apt-get install -y chromium` (make test does)")
    return path


@pytest.fixture(scope="session")
def built_dashboard() -> Path:
    index = BASE_DIR / "frontend" / "dist" / "index.html"
    if not index.is_file():
        pytest.fail("the dashboard is not built: run `make frontend` (npm ci && npm run build in frontend/)")
    return index


@pytest.fixture
def browser_page(built_dashboard) -> Iterator:
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        page = context.new_page()
        page.set_default_timeout(20000)
        try:
            yield page
        finally:
            context.close()
            browser.close()
