"""Drives Debian's noVNC in headless Chromium (selenium + Debian's chromedriver), for tests
that check a VNC server the way a person's browser sees it.

Typical use, from a trio test (selenium blocks, so each call goes to a thread)::

    require_browser()
    with NoVNC.start(tmp_path) as browser:
        await trio.to_thread.run_sync(browser.open, novnc_url(port, password="SECRET"))
        await trio.to_thread.run_sync(browser.wait_connected)
        pixels = await trio.to_thread.run_sync(browser.canvas_pixels)
        await trio.to_thread.run_sync(browser.type, "ls\\n")

It works against any server that serves noVNC's files and a WebSocket on one port
(`vzfs.vnc.websocket.serve_websocket`, or websockify --web).
"""

from __future__ import annotations

import base64
import os
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
import pytest

T = TypeVar("T")

CHROMIUM = os.environ.get("VZFS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("VZFS_CHROMEDRIVER", "/usr/bin/chromedriver")
NOVNC_ROOT = Path("/usr/share/novnc")
TIMEOUT = 30.0

# Reads noVNC's visible canvas as base64 RGBA; String.fromCharCode in slices because
# one call with a megabyte of arguments overflows the JS stack.
_READ_CANVAS = """
const c = document.querySelector('#noVNC_container canvas');
if (!c || !c.width || !c.height) { return null; }
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let s = '';
for (let i = 0; i < d.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, d.subarray(i, i + 0x8000));
}
return [c.width, c.height, btoa(s)];
"""


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} is missing (Debian package {package})"
    if not (NOVNC_ROOT / "vnc.html").is_file():
        return f"{NOVNC_ROOT}/vnc.html is missing (Debian package novnc)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def require_browser() -> None:
    """Skip when something is missing — except in CI, which installs everything: fail."""
    reason = browser_missing()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must install it (see bootstrap)")
    pytest.skip(reason)


def novnc_url(port: int, *, host: str = "127.0.0.1", password: str | None = None,
              ws_port: int | None = None, path: str = "websockify", autoconnect: bool = True,
              **settings: str) -> str:
    """The vnc.html URL for noVNC 1.3's settings (app/ui.js initSetting and getConfigVar):
    host, port and path name the WebSocket (ws://host:port/path); password answers VNC
    auth; others (quality, compression, resize, shared, view_only, logging…) pass through."""
    query = {"autoconnect": "1" if autoconnect else "0", "host": host,
             "port": str(ws_port or port), "path": path, **settings}
    if password is not None:
        query["password"] = password
    return f"http://{host}:{port}/vnc.html?{urllib.parse.urlencode(query)}"


class NoVNC:
    """One headless Chromium showing noVNC's vnc.html."""

    def __init__(self, driver: Any, user_data: tempfile.TemporaryDirectory[str]) -> None:
        self.driver = driver
        self._user_data = user_data

    @classmethod
    def start(cls, window: tuple[int, int] = (1280, 1024)) -> NoVNC:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        user_data = tempfile.TemporaryDirectory(prefix="vzfs-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new",
                    "--no-sandbox",              # Chromium's sandbox refuses to run as root
                    "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                    "--disable-extensions", "--disable-background-networking",
                    f"--user-data-dir={user_data.name}",
                    f"--window-size={window[0]},{window[1]}"):
            options.add_argument(arg)
        try:
            driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        except BaseException:
            user_data.cleanup()
            raise
        return cls(driver, user_data)

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            self._user_data.cleanup()

    def __enter__(self) -> NoVNC:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------ page state

    def open(self, url: str) -> None:
        self.driver.get(url)

    def wait(self, condition: Callable[[], T | None], what: str, timeout: float = TIMEOUT) -> T:
        """Poll ``condition`` until it returns something truthy; fail naming ``what`` and
        what noVNC's status line says."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; noVNC state "
                                     f"{self.state()!r}, status {self.status()!r}")
            time.sleep(0.05)

    def state(self) -> str:
        """noVNC's visual state: connecting, connected, disconnecting, reconnecting —
        the ``noVNC_<state>`` class ui.js (updateVisualState) keeps on <html> — or
        disconnected, which ui.js marks by having none of them."""
        classes = self.driver.execute_script("return document.documentElement.className") or ""
        for state in ("connecting", "connected", "disconnecting", "reconnecting"):
            if f"noVNC_{state}" in classes.split():
                return state
        return "disconnected"

    def status(self) -> tuple[str, str]:
        """noVNC's status line: (text, kind) with kind normal, error, warn or ''."""
        text, classes = self.driver.execute_script(
            "const s = document.getElementById('noVNC_status');"
            "return s ? [s.textContent, s.className] : ['', ''];")
        kind = next((c.removeprefix("noVNC_status_") for c in classes.split()
                     if c.startswith("noVNC_status_")), "")
        return text, kind

    def wait_connected(self, timeout: float = TIMEOUT) -> None:
        self.wait(lambda: self.state() == "connected", "noVNC to connect", timeout)

    def wait_failed(self, timeout: float = TIMEOUT) -> tuple[str, str]:
        """Wait until noVNC gave up and shows an error; its status line."""
        def failed() -> tuple[str, str] | None:
            text, kind = self.status()
            return (text, kind) if kind == "error" and self.state() == "disconnected" else None
        return self.wait(failed, "noVNC to report a failure", timeout)

    # ------------------------------------------------------------ the remote screen

    def canvas(self) -> Any:
        from selenium.webdriver.common.by import By
        return self.driver.find_element(By.CSS_SELECTOR, "#noVNC_container canvas")

    def canvas_visible(self) -> bool:
        return bool(self.canvas().is_displayed())

    def canvas_size(self) -> tuple[int, int]:
        """The canvas's own size in pixels (noVNC sizes it to the framebuffer)."""
        width, height = self.driver.execute_script(
            "const c = document.querySelector('#noVNC_container canvas');"
            "return [c.width, c.height];")
        return int(width), int(height)

    def canvas_pixels(self) -> np.ndarray:
        """What noVNC drew: an (H, W, 3) uint8 RGB array of the visible canvas."""
        result = self.driver.execute_script(_READ_CANVAS)
        if result is None:
            return np.zeros((0, 0, 3), dtype=np.uint8)
        width, height, data = result
        rgba = np.frombuffer(base64.b64decode(data), dtype=np.uint8).reshape(height, width, 4)
        return rgba[..., :3].copy()

    def wait_pixels(self, expected: np.ndarray, timeout: float = TIMEOUT) -> np.ndarray:
        """Wait until the canvas equals ``expected`` (H×W×3 RGB); the last read."""
        last = [np.zeros((0, 0, 3), dtype=np.uint8)]

        def equal() -> bool:
            last[0] = self.canvas_pixels()
            return bool(np.array_equal(last[0], expected))
        try:
            self.wait(equal, "the canvas to show the framebuffer", timeout)
        except AssertionError as exc:
            got = last[0]
            if got.shape == expected.shape:
                diff = np.argwhere((got != expected).any(axis=2))
                raise AssertionError(f"{exc}; {len(diff)} pixels differ, first at (y, x) "
                                     f"{tuple(diff[0])}") from None
            raise AssertionError(f"{exc}; canvas {got.shape}, expected {expected.shape}") from None
        return last[0]

    # ------------------------------------------------------------ the keyboard

    def type(self, text: str) -> None:
        """Type into the page as a person would: key events to the focused element,
        which after connecting is noVNC's canvas. Selenium's Keys (ENTER…) work too."""
        from selenium.webdriver.common.action_chains import ActionChains
        ActionChains(self.driver).send_keys(text).perform()

    def chord(self, modifier: str, key: str) -> None:
        """Press ``key`` with ``modifier`` held (e.g. Keys.CONTROL, "c")."""
        from selenium.webdriver.common.action_chains import ActionChains
        ActionChains(self.driver).key_down(modifier).send_keys(key).key_up(modifier).perform()

    def focus_canvas(self) -> None:
        self.driver.execute_script(
            "document.querySelector('#noVNC_container canvas').focus();")

