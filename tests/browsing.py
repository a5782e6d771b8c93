"""Driving headless Chromium for the browser tests: Debian's Chromium through Playwright, the network
blocked, each page checked the same way (no horizontal scroll, no broken image, no console error, no
request outside the page).

Needs Playwright (``pip install playwright``) and Debian's Chromium (``apt-get install chromium``);
Playwright never downloads a browser of its own here. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
HOSTILE = "<img src=x onerror=alert(1)>.jpg"


def _unavailable() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: pip install playwright (never run `playwright install` here)"
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"Chromium is not at {CHROMIUM}: apt-get install chromium"
    return None


def launched_browser() -> Iterator[Any]:
    """Headless Chromium for the session (the ``browser`` fixture in conftest.py, shared by every page test)."""
    reason = _unavailable()
    if reason is not None:
        pytest.fail(f"{reason}; or set FCLENS_SKIP_BROWSER=1 to skip the browser tests", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        launched.close()


class Visit:
    """One page opened from disk, with every outside request blocked and recorded, and every error kept."""

    def __init__(self, browser: Any, path: Path, width: int = 1400) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 1000})
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("request", self._request)
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("dialog", self._dialog)
        self.page.goto(path.as_uri(), wait_until="load")

    def _route(self, route: Any) -> None:
        if self._record(route.request.url):
            route.abort()
        else:
            route.continue_()

    def _request(self, request: Any) -> None:
        self._record(request.url)

    def _record(self, url: str) -> bool:
        """Note ``url`` if it leaves the page's own file and data: URIs; True if it does."""
        leaves = not url.startswith(("file:", "data:"))
        if leaves and url not in self.outside:
            self.outside.append(url)
        return leaves

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def check_clean(self) -> None:
        """No request left the page, nothing went wrong, no injected script ran, every picture decoded."""
        widths = self.page.evaluate(
            """() => Promise.all(Array.from(document.images).filter((i) => i.getAttribute("src"))
                 .map((i) => i.decode().then(() => i.naturalWidth, () => 0)))"""
        )
        assert widths and min(widths) > 0, f"{widths.count(0)} of {len(widths)} images did not decode"
        assert self.outside == [], f"the page tried to reach {self.outside}"
        assert self.errors == [], self.errors
        assert self.dialogs == [], f"a script ran: {self.dialogs}"

    def broken_images(self) -> list[str]:
        """The start of the source of every picture that fails to decode (empty: all show)."""
        return self.page.evaluate(
            """() => Promise.all(Array.from(document.images).filter((i) => i.getAttribute("src"))
                 .map((i) => i.decode().then(() => (i.naturalWidth > 0 ? null : i.src), () => i.src)))
                 .then((found) => found.filter((src) => src !== null).map((src) => src.slice(0, 60)))"""
        )

    def overflow(self) -> int:
        """How many CSS pixels the page is wider than its window (0: it fits, no horizontal scrolling)."""
        return int(self.page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth"))

    def screenshot(self, name: str, full_page: bool = False) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / name), full_page=full_page)

    def close(self) -> None:
        self.context.close()
