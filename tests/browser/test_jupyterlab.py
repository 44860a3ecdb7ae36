"""The JupyterLab experience in a real browser: notebook 05 on the reference run, notebook 03 on the demo.

Run with ``make test-browser`` (``pytest -m browser tests/browser``); without ``-m browser`` these cases are
skipped. JupyterLab starts on loopback, Debian's headless Chromium opens copies of the notebooks (as
``spo notebooks`` makes them) and runs all their cells; the test then checks what a person sees: every figure
drawn, every explorer a live widget whose controls redraw its picture, no error and no stray ``None`` in any
cell, and, after saving and reopening with a new kernel, each explorer's last view with the line on getting
the controls back instead of "Error displaying widget". Screenshots and JupyterLab's log go to
``$SPO_BROWSER_OUT`` (default ``runs/browser-test/``) for a person to look at.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif("'browser' not in config.getoption('markexpr')", reason="browser cases: run with -m browser"),
]

selenium = pytest.importorskip("selenium")

from lab_driver import CHROMEDRIVER, CHROMIUM, Chromium, JupyterLab, find  # noqa: E402

from spo_helpers.stages.notebooks import copy_templates, install_lab_settings, lab_settings_path  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[2]
EXPLORER_NOTE = "run this cell again"
EXPLORERS = ("metric-explorer", "value-scrubber", "prompt-inspector")
FIGURES_05 = 10  # figures the reference run supports (09_tool_use is skipped: no tools)

if not (find(CHROMIUM) and find(CHROMEDRIVER)):
    pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)", allow_module_level=True)


@pytest.fixture(scope="module")
def out() -> Path:
    folder = Path(os.environ.get("SPO_BROWSER_OUT", REPOSITORY / "runs" / "browser-test")).resolve()
    assert REPOSITORY in folder.parents, f"SPO_BROWSER_OUT={folder}: JupyterLab serves the repository, choose in it"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def copies(out) -> Path:
    """Fresh copies of the templates inside the repository (they run from it, as a user's copies do)."""
    install_lab_settings()
    assert lab_settings_path().is_file(), "the kit's JupyterLab defaults (saved widget state) are not installed"
    return copy_templates(out / "notebooks", force=True).dest


@pytest.fixture(scope="module")
def demo(out) -> Path:
    """A small demo's stages 01 and 02 (the CPU world's 200-prompt probe, two samples each): what notebook 03
    merges. ``spo pipeline`` skips them when an earlier run left them up to date."""
    from spo_helpers.world.build import build_world

    probe = build_world(None).probe_file  # the CPU world, cached in runs/_assets (make test built it)
    command = [sys.executable, "-m", "spo_helpers", "pipeline", "--runs_dir", str(out), "--name", "demo"]
    command += ["--stages", "01_split", "02_estimate", "--dataset", str(probe), "--num_subsets", "2", "--n_val", "2"]
    done = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return out / "demo"


@pytest.fixture(scope="module")
def lab(out):
    with JupyterLab(REPOSITORY, out) as server:
        yield server


@pytest.fixture(scope="module")
def browser(out):
    with Chromium(out / "screenshots") as chromium:
        yield chromium


def set_parameters(path: Path, **values: str) -> None:
    """Rewrite ``name = ...`` lines of the notebook's parameters cell (values are Python source)."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cell = next(c for c in notebook["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    source = "".join(cell["source"])
    for name, value in values.items():
        source, count = re.subn(rf"(?m)^{name} = .*$", f"{name} = {value}", source)
        assert count == 1, name
    cell["source"] = source.splitlines(keepends=True)
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def relative(path: Path) -> str:
    return path.resolve().relative_to(REPOSITORY).as_posix()


def problems_in(cells: list[dict]) -> list[str]:
    """Errors, tracebacks, widget errors and stray ``None`` outputs, one line each."""
    found = []
    for cell in cells:
        for output in cell["outputs"]:
            text = output["text"]
            where = f"cell {cell['index']} ({cell['source'][:60]!r})"
            if output["widget_error"]:
                found.append(f"{where}: {text[:200]}")
            elif "stderr" in output["mime"] and re.search(r"Traceback|Error\b|Exception", text):
                found.append(f"{where}: {text[:300]}")
            elif text == "None":
                found.append(f"{where}: a stray None")
    return found


def test_notebook_05_on_the_reference_run(copies, out, lab, browser):
    notebook = copies / "05_analysis.ipynb"
    set_parameters(notebook, output_dir=repr(relative(out / "figures")))
    browser.open(lab.url(relative(notebook)))
    cells = browser.run_all()
    browser.screenshot("05-after-run-all")
    assert problems_in(cells) == []

    figures = [w for c in cells for o in c["outputs"] for w in o["images"]]
    assert len(figures) >= FIGURES_05 and all(width > 0 for width in figures), figures
    explorers = [e for c in cells for o in c["outputs"] for e in o["explorers"]]
    assert len(explorers) == 3, "metric explorer, value scrubber, prompt inspector: each one live widget"
    for explorer in explorers:
        assert len(explorer["images"]) == 1 and explorer["images"][0]["width"] > 0  # one figure, drawn
        assert EXPLORER_NOTE in explorer["text"]
    assert "Find 45+35." in explorers[2]["text"] and "row 903" not in explorers[2]["text"]  # prompts by text
    assert "holds no rollout dumps" in explorers[2]["text"]  # the pruned reference run: said, not blank

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    metric, scrubber, inspector = browser.explorers()
    for name, element in zip(EXPLORERS, (metric, scrubber, inspector), strict=True):
        browser.screenshot(f"05-{name}", element)

    before = browser.picture(metric)
    next(b for b in metric.find_elements(By.TAG_NAME, "button") if b.text.strip() == "samples").click()
    browser.wait_redraw(metric, before, "metric explorer redraw after x = samples")
    search = metric.find_element(By.CSS_SELECTOR, "input[type='text']")
    search.send_keys("zero_adv")
    browser.wait(lambda: "of 172 metrics listed" in metric.text and "172 of 172" not in metric.text, 30, "filter")
    browser.screenshot("05-metric-explorer-moved", metric)

    before = browser.picture(scrubber)
    handle = scrubber.find_element(By.CSS_SELECTOR, ".noUi-handle")
    handle.click()
    handle.send_keys(Keys.HOME)
    browser.wait_redraw(scrubber, before, "value scrubber redraw at the first step")
    browser.screenshot("05-value-scrubber-moved", scrubber)

    before = browser.picture(inspector)
    Select(inspector.find_element(By.TAG_NAME, "select")).select_by_index(3)
    browser.wait_redraw(inspector, before, "prompt inspector redraw for another prompt")
    browser.screenshot("05-prompt-inspector-moved", inspector)
    assert problems_in(browser.cells()) == []

    browser.save()
    saved = json.loads(notebook.read_text(encoding="utf-8"))
    assert saved["metadata"].get("widgets"), "JupyterLab saved no widget state (the kit's default is missing)"
    browser.close_and_shut_down()

    browser.open(lab.url(relative(notebook)))  # reopened: a new kernel, nothing run
    reopened = browser.wait(
        lambda: (c := browser.cells()) and sum(len(o["explorers"]) for x in c for o in x["outputs"]) == 3 and c,
        120,
        "explorers restored from the saved notebook",
    )
    browser.screenshot("05-reopened")
    assert problems_in(reopened) == []  # no "Error displaying widget: model not found"
    for explorer in (e for c in reopened for o in c["outputs"] for e in o["explorers"]):
        assert EXPLORER_NOTE in explorer["text"]  # the last view, and how to get the controls back
    restored = browser.wait(
        lambda: all(
            e["images"] and e["images"][0]["width"] > 0
            for c in browser.cells()
            for o in c["outputs"]
            for e in o["explorers"]
        ),
        30,
        "restored pictures",
    )
    assert restored
    for name, element in zip(EXPLORERS, browser.explorers(), strict=True):
        browser.screenshot(f"05-reopened-{name}", element)
    browser.close_and_shut_down()


def test_notebook_03_on_the_demo(copies, demo, lab, browser):
    notebook = copies / "03_merge.ipynb"
    set_parameters(
        notebook,
        input_dir=repr(relative(demo / "spo")),
        output_file=repr(relative(demo / "offline_values.json")),
        dataset_dir=repr(relative(demo / "splits")),
    )
    browser.open(lab.url(relative(notebook)))
    cells = browser.run_all(timeout=300)
    browser.screenshot("03-after-run-all")
    assert problems_in(cells) == []
    figures = [w for c in cells for o in c["outputs"] for w in o["images"]]
    assert len(figures) == 1 and figures[0] > 0  # the offline value distribution
    for cell in browser.driver.find_elements("css selector", ".jp-Notebook .jp-Cell.jp-CodeCell"):
        if cell.find_elements("css selector", ".jp-OutputArea-output img"):
            browser.screenshot("03-value-distributions", cell)
    browser.close_and_shut_down()
