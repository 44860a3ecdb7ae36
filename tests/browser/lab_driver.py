"""A small driver for the browser test: JupyterLab on loopback and a headless Chromium through selenium.

    with JupyterLab(root, out) as lab, Chromium(out / "screenshots") as browser:
        browser.open(lab.url("runs/x/notebooks/05_analysis.ipynb"))
        browser.run_all()
        cells = browser.cells()  # what a person sees, cell by cell

Chromium and its driver are Debian's (``chromium``, ``chromium-driver``; ``.ci/run`` installs them when missing).
JupyterLab runs with its own settings, workspaces and runtime folders (every cell attached to the page, no news
or update checks), with ``window.jupyterapp`` exposed so the test runs JupyterLab's own commands (run all,
save, close) and reads the page as a person sees it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = ("chromedriver", "chromium-driver")
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def find(names: tuple[str, ...]) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JupyterLab:
    """``jupyter lab`` serving ``root`` on 127.0.0.1 with a random token; its log in ``out/jupyterlab.log``."""

    def __init__(self, root: Path, out: Path, env: dict[str, str] | None = None) -> None:
        self.root, self.out = Path(root), Path(out)
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.env = dict(env if env is not None else os.environ)
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> JupyterLab:
        home = self.out / "jupyter"
        settings = home / "lab-settings"
        for name, values in LAB_SETTINGS.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        self.env.update(
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
            JUPYTER_RUNTIME_DIR=str(home / "runtime"),
            JUPYTER_CONFIG_DIR=str(home / "config"),
            JUPYTER_DATA_DIR=str(home / "data"),
        )
        self.env.pop("SPO_HEADLESS", None)  # a person's JupyterLab: live widgets
        command = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--ServerApp.port_retries=0",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.extension_manager=readonly",  # no extension look-ups on the network
        ]
        if os.geteuid() == 0:  # CI containers run as root
            command.append("--allow-root")
        self.log = (self.out / "jupyterlab.log").open("w")
        self.process = subprocess.Popen(
            command, cwd=self.root, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited ({self.process.returncode}); see {self.out / 'jupyterlab.log'}")
            try:
                with urllib.request.urlopen(f"{self.base}/api/status?token={self.token}", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"jupyter lab did not answer within {timeout:.0f} s; see {self.out / 'jupyterlab.log'}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """The page that opens ``path`` (relative to the root) with a fresh workspace."""
        return f"{self.base}/lab/tree/{path}?token={self.token}&reset"

    def __exit__(self, *_: Any) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


# The page as a person sees it: per code cell, its prompt and outputs (kind, text, pictures, explorers).
CELLS_JS = """
const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell.jp-CodeCell')];
return cells.map((cell, index) => {
  const prompt = (cell.querySelector('.jp-InputArea-prompt') || {}).innerText || '';
  const outputs = [...cell.querySelectorAll('.jp-OutputArea-child > .jp-OutputArea-output')].map(out => ({
    mime: out.getAttribute('data-mime-type') || '',
    text: (out.innerText || '').trim().slice(0, 2000),
    images: [...out.querySelectorAll('img')].filter(img => !img.closest('.spo-explorer'))
      .map(img => img.naturalWidth),
    explorers: [...out.querySelectorAll('.spo-explorer')].map(ex => ({
      images: [...ex.querySelectorAll('img')].map(img => ({width: img.naturalWidth, src: img.src})),
      text: (ex.innerText || '').slice(0, 20000),
    })),
    widget_error: (out.innerText || '').includes('Error displaying widget'),
  }));
  return {index, prompt: prompt.trim(), source: cell.querySelector('.jp-InputArea-editor').innerText.slice(0, 200),
          outputs};
});
"""


class Chromium:
    """Debian's headless Chromium driven by selenium; ``shots`` receives the screenshots."""

    def __init__(self, shots: Path, width: int = 1500, height: int = 1100) -> None:
        self.shots = Path(shots)
        self.size = (width, height)

    def __enter__(self) -> Chromium:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = find(CHROMIUM) or "chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
            options.add_argument(flag)
        options.add_argument(f"--window-size={self.size[0]},{self.size[1]}")
        service = Service(executable_path=find(CHROMEDRIVER) or "chromedriver")
        self.driver = webdriver.Chrome(service=service, options=options)
        self.driver.set_script_timeout(900)
        self.shots.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *_: Any) -> None:
        self.driver.quit()

    # ------------------------------------------------------------------ JupyterLab
    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def command(self, name: str, args: dict | None = None) -> Any:
        """Run one of JupyterLab's commands and wait for it (``notebook:run-all-cells``, ``docmanager:save``)."""
        return self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "window.jupyterapp.commands.execute(arguments[0], arguments[1] || {})"
            ".then(r => done({ok: true, value: String(r)}), e => done({ok: false, value: String(e)}));",
            name,
            args,
        )

    def wait(self, check, timeout: float, what: str, every: float = 0.5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(every)
        self.screenshot(f"timeout-{what.replace(' ', '-')}")
        raise TimeoutError(f"{what}: not within {timeout:.0f} s")

    def open(self, url: str, timeout: float = 120.0) -> None:
        """Open a notebook and wait until its kernel is ready."""
        self.driver.get(url)
        self.wait(lambda: self.js("return !!(window.jupyterapp && window.jupyterapp.shell)"), timeout, "JupyterLab")
        ready = (
            "const app = window.jupyterapp; const panel = app.shell.currentWidget;"
            "if (!panel || !panel.sessionContext) return false;"
            "const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;"
            "return !!(panel.context.isReady && kernel && kernel.status === 'idle' "
            "&& document.querySelector('.jp-Notebook .jp-Cell'));"
        )
        self.wait(lambda: self.js(ready), timeout, "notebook and kernel")

    def kernel_status(self) -> str:
        return self.js(
            "const panel = window.jupyterapp.shell.currentWidget;"
            "const kernel = panel && panel.sessionContext.session && panel.sessionContext.session.kernel;"
            "return kernel ? kernel.status : 'none';"
        )

    def run_all(self, timeout: float = 600.0) -> list[dict]:
        """Run All Cells (JupyterLab's command), then wait until every code cell ran and the kernel is idle."""
        result = self.command("notebook:run-all-cells")
        assert result["ok"], result

        def finished():
            cells = self.cells()
            done = all(c["prompt"] and "*" not in c["prompt"] and c["prompt"] != "[ ]:" for c in cells)
            return cells if done and self.kernel_status() == "idle" else None

        return self.wait(finished, timeout, "run all cells", every=1.0)

    def cells(self) -> list[dict]:
        return self.js(CELLS_JS)

    def save(self) -> None:
        result = self.command("docmanager:save")
        assert result["ok"], result
        self.wait(lambda: self.js("return !window.jupyterapp.shell.currentWidget.context.model.dirty"), 60, "save")

    def close_and_shut_down(self) -> None:
        """Close every document and shut down every kernel (the notebook's next opening gets a new one)."""
        self.command("application:close-all")
        self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "window.jupyterapp.serviceManager.sessions.shutdownAll().then(() => done(true), e => done(String(e)));"
        )

    # ------------------------------------------------------------------ elements and pictures
    def explorers(self):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output .spo-explorer")

    def picture(self, explorer) -> str:
        """The ``src`` of the explorer's picture (a new one for each redraw)."""
        from selenium.webdriver.common.by import By

        return explorer.find_elements(By.CSS_SELECTOR, "img")[0].get_attribute("src")

    def wait_redraw(self, explorer, before: str, what: str, timeout: float = 60.0) -> str:
        return self.wait(lambda: (src := self.picture(explorer)) != before and src, timeout, what)

    def screenshot(self, name: str, element=None) -> Path:
        path = self.shots / f"{name}.png"
        if element is not None:
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", element)
            time.sleep(0.3)
            element.screenshot(str(path))
        else:
            self.driver.save_screenshot(str(path))
        return path
