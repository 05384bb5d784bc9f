"""Drive headless Chromium over the DevTools protocol (tornado's websocket client, which
Bokeh already depends on): open a page, wait until a JavaScript expression is truthy,
read values and capture a screenshot.

``--dump-dom --virtual-time-budget`` (tests/test_report_render.py) suits static pages; a
Bokeh server page builds itself over a websocket after load, which virtual time does not
wait for, so the explorer tests and the README screenshot use this instead.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import signal
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--remote-debugging-port=0", "--remote-allow-origins=*"]


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium with one page. Use as a context manager."""

    def __init__(self, width: int = 1600, height: int = 1000, binary: str | None = None):
        self.width, self.height = width, height
        self.binary = binary or chromium_binary()
        if self.binary is None:
            raise FileNotFoundError("Chromium is not installed (apt-get install -y chromium)")
        self._ids = itertools.count(1)

    def __enter__(self) -> "Browser":
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-")
        self.proc = subprocess.Popen([self.binary, *FLAGS, f"--user-data-dir={self._profile.name}",
                                      f"--window-size={self.width},{self.height}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)  # its helpers share its group
        port = None
        deadline = time.time() + 30
        while port is None and time.time() < deadline:
            line = self.proc.stderr.readline()
            match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if match:
                port = int(match.group(1))
            elif not line and self.proc.poll() is not None:
                break
        if port is None:
            self.close()
            raise RuntimeError("Chromium did not start its DevTools endpoint")
        try:
            self._connect(port)
        except Exception:
            self.close()
            raise
        self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                  deviceScaleFactor=1, mobile=False)
        return self

    def _connect(self, port: int) -> None:
        from tornado.websocket import websocket_connect

        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(p for p in pages if p.get("type") == "page")

        async def connect():
            return await websocket_connect(page["webSocketDebuggerUrl"],
                                           max_message_size=256 * 1024 * 1024)

        self.loop = asyncio.new_event_loop()
        self.ws = self.loop.run_until_complete(connect())

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        if getattr(self, "loop", None) is not None:
            self.loop.close()
        # Chromium's helper processes (zygote, crashpad) outlive the browser process and keep
        # writing into the profile, so the whole process group is stopped before removing it.
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            if not self._group_alive():
                break
        self._profile.cleanup()
        self.loop = self.ws = None

    def _group_alive(self, timeout: float = 5.0) -> bool:
        """Whether a process of Chromium's group is still running after ``timeout`` s."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return False
            time.sleep(0.1)
        return True

    async def _call(self, method: str, params: dict) -> dict:
        ident = next(self._ids)
        await self.ws.write_message(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = await self.ws.read_message()
            if message is None:
                raise RuntimeError("Chromium closed the DevTools connection")
            reply = json.loads(message)
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def send(self, method: str, **params) -> dict:
        return self.loop.run_until_complete(asyncio.wait_for(self._call(method, params), 60))

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def open(self, url: str, ready: str, timeout: float = 60.0):
        """Navigate to ``url`` and return the value of ``ready`` once it is truthy."""
        self.send("Page.navigate", url=url)
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.evaluate(ready)
            if value:
                return value
            time.sleep(0.25)
        raise TimeoutError(f"{url}: {ready} not true within {timeout:.0f} s")

    def screenshot(self, path: str | Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path
