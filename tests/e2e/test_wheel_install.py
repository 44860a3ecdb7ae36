"""The built wheel works outside the checkout: console script, Hydra config and notebook templates.

The wheel is built from a copy of the sources (``pip wheel --no-deps --no-build-isolation``, nothing
downloaded), installed with ``pip install --target`` and run from a folder outside the checkout with only
the install on ``PYTHONPATH``; the dependencies come from the test environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("verl")

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "spo_helpers", "notebooks", "jupyter")
NOTEBOOKS = ("01_split", "02_estimate", "03_merge", "04_train", "05_analysis")
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The folder the wheel was installed into (``pip install --target``)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    dist = base / "dist"
    run([*PIP, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(dist), str(source)])
    (wheel,) = dist.glob("spo_helpers-*.whl")
    target = base / "site"
    run([*PIP, "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)])
    return target


@pytest.fixture
def outside(tmp_path) -> Path:
    """A working folder outside the checkout."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    assert ROOT not in folder.parents
    return folder


def run_installed(installed: Path, cwd: Path, *command: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SPO_NOTEBOOKS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(installed)
    return run(list(command), cwd=cwd, env=env)


def test_wheel_installs_the_kits_jupyterlab_defaults(installed):
    import json
    import zipfile

    (wheel,) = (installed.parent / "dist").glob("spo_helpers-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith("overrides.d/spo-helpers.json")]
        assert "/data/share/jupyter/lab/settings/" in name  # into the environment's JupyterLab settings
        assert json.loads(archive.read(name)) == json.loads((ROOT / "jupyter" / "spo-helpers.json").read_text())


def test_wheel_has_every_module_of_every_package(installed):
    packages = {p.parent for p in (ROOT / "spo_helpers").rglob("__init__.py") if "__pycache__" not in p.parts}
    missing = [
        str(module.relative_to(ROOT))
        for package in packages
        for module in package.glob("*.py")
        if not (installed / module.relative_to(ROOT)).is_file()
    ]
    assert not missing, f"not in the wheel (add the package to [tool.setuptools] packages): {missing}"


def test_package_files_resolve_from_the_install(installed, outside):
    script = (
        "import spo_helpers; from spo_helpers.formats.notebook_templates import notebooks_dir; "
        "from spo_helpers.verl_glue.config import CONFIG_DIR; "
        "print(spo_helpers.__file__); print(notebooks_dir()); print(CONFIG_DIR)"
    )
    package, notebooks, config = map(
        Path, run_installed(installed, outside, sys.executable, "-c", script).stdout.split()
    )
    for path in (package, notebooks, config):
        assert installed in path.parents, f"{path} is not in the install"
    assert all((notebooks / f"{name}.ipynb").is_file() for name in NOTEBOOKS)
    assert (config / "kit_trainer.yaml").is_file()
    for group, options in (("preset", ("cpu", "official", "paper")), ("method", ("grpo", "spo", "eval"))):
        assert all((config / group / f"{option}.yaml").is_file() for option in options)


def test_commands_from_the_install(installed, outside, small_world):
    spo = str(installed / "bin" / "spo")
    assert "pipeline" in run_installed(installed, outside, spo, "--help").stdout
    assert "--kernel" in run_installed(installed, outside, spo, "pipeline", "--help").stdout
    assert "train" in run_installed(installed, outside, sys.executable, "-m", "spo_helpers", "--help").stdout
    dry = run_installed(
        installed, outside, spo, "train", "--dry-run", "--method", "SPO", "--offline_values", "none",
        "--model_path", str(small_world.model_dir), "--train_files", str(small_world.train_file),
        "--val_files", str(small_world.val_file),
    ).stdout  # fmt: skip
    assert "python -m spo_helpers.verl_glue.main" in dry and "preset=cpu" in dry and "method=spo" in dry
    assert f"path: {installed / 'spo_helpers' / 'verl_glue' / 'reward.py'}" in dry  # the installed reward
    assert not any(outside.iterdir())  # a dry run writes nothing
