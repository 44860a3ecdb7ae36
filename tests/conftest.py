"""Shared fixtures: a small CPU world built once per test session, short training runs on it, and polling.

Helpers that tests call are plain functions here, handed out by fixtures of the same name (a conftest is not a
module to import from)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from spo_helpers import cpu_threads

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
cpu_threads.apply_unless_gpu()  # the kit's thread policy for the test process, before anything loads torch


# ---------------------------------------------------------------------------------------------- polling
def wait_until(predicate: Callable[[], Any], timeout: float, what: str | Callable[[], str], every: float = 0.05):
    """Poll ``predicate`` until it returns something true, and return that. Fails the test when ``timeout``
    seconds pass first, saying what it waited for: ``what`` (a function is called then, for the state at that
    time)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:g} s waiting for {what() if callable(what) else what}")
        time.sleep(every)
    return value


@pytest.fixture(scope="session", name="wait_until")
def wait_until_fixture():
    """``wait_until``: polling with a deadline instead of a sleep that hopes."""
    return wait_until


def wait_for_checkpoint_of(proc, checkpoints, step, log_path, timeout=300.0):
    """Poll until step ``step``'s checkpoint in ``checkpoints`` is complete (its marker written) while ``proc``
    trains; returns the time it was seen. Fails with the log's tail if the process ends first or time runs out."""
    from spo_helpers.formats.checkpoints import COMPLETE_MARKER

    marker = checkpoints / f"global_step_{step}" / COMPLETE_MARKER

    def written():
        if marker.is_file():
            return True
        if proc.poll() is not None:
            pytest.fail(f"training exited ({proc.returncode}) before step {step}:\n{log_path.read_text()[-3000:]}")
        return False

    try:
        wait_until(written, timeout, f"the checkpoint of step {step}", every=0.02)
    except pytest.fail.Exception:
        if proc.poll() is None:
            proc.kill()
        raise
    return time.monotonic()


@pytest.fixture
def wait_for_checkpoint():
    """``wait_for_checkpoint_of``: the polling the kill-and-resume tests share."""
    return wait_for_checkpoint_of


def wait_for_free_cpus(ray, expected: float, timeout: float = 120.0) -> None:
    """Until Ray has ``expected`` CPUs free again: a killed job's actors and placement groups are gone."""
    wait_until(
        lambda: ray.available_resources().get("CPU", 0) >= expected,
        timeout,
        lambda: f"{expected:g} free CPUs in Ray (now: {ray.available_resources()})",
        every=0.2,
    )


@pytest.fixture(scope="session", name="wait_for_free_cpus")
def wait_for_free_cpus_fixture():
    """``wait_for_free_cpus``: the Ray tests' wait before a resumed run asks for the cluster's CPUs."""
    return wait_for_free_cpus


# ---------------------------------------------------------------------------------------------- the worlds
@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """A few hundred training prompts, a tokenizer and a warm-started tiny model (about a minute)."""
    pytest.importorskip("verl")
    from spo_helpers.world.build import build_world

    return build_world(tmp_path_factory.mktemp("assets"), seed=0, num_train=300, num_val=40, progress=False)


@pytest.fixture(scope="session")
def small_tool_world(tmp_path_factory):
    """The same small world's tool-use variant: warm start with tool traces (about a minute)."""
    pytest.importorskip("verl")
    from spo_helpers.world.build import build_world

    assets = tmp_path_factory.mktemp("tool_assets")
    return build_world(assets, seed=0, num_train=300, num_val=40, progress=False, tools=True)


@pytest.fixture(scope="session")
def small_world_values(small_world, tmp_path_factory):
    """``small_world_values(seed)``: the path of an offline-values file for every training prompt of the small
    world, 4 scores each, 0 or 1 drawn with ``seed`` (written once per seed)."""
    import numpy as np

    from spo_helpers.formats.offline_values import write_offline_values
    from spo_helpers.world.task import read_rows

    written: dict[int, str] = {}

    def values_file(seed: int = 0) -> str:
        if seed not in written:
            rng = np.random.default_rng(seed)
            rows = read_rows(small_world.train_file)
            values = {r["extra_info"]["prompt_key"]: rng.integers(0, 2, size=4).astype(float).tolist() for r in rows}
            path = tmp_path_factory.mktemp(f"values_{seed}") / "offline_values.json"
            written[seed] = str(write_offline_values(values, path))
        return written[seed]

    return values_file


# ---------------------------------------------------------------------------------------------- short runs
SHORT = ("actor_rollout_ref.rollout.val_kwargs.n=2", "trainer.save_freq=2", "trainer.test_freq=2")
"""The overrides of a short run unless a test names its own: 2 validation samples, a checkpoint and a
validation every 2 steps."""
SPO_POOL = "data.gen_batch_size=200"
"""SPO's candidate pool on the small worlds (300 training prompts): successive steps' pools overlap."""


def small_run_kwargs(method, world, out, name, steps, *extra, settings=SHORT, **train_kwargs) -> dict[str, Any]:
    """``train(method, ...)``'s arguments (``RunSpec(method=method, ...)`` takes the same ones) for a short run
    of ``method`` on ``world``: its model and files, ``steps`` steps, the overrides ``settings`` then ``extra``
    (SPO's add ``SPO_POOL``) and any other of ``train``'s arguments as given (``offline_values`` is None unless
    given)."""
    return {
        "output_dir": str(out),
        "exp_name": name,
        "model_path": str(world.model_dir),
        "train_files": [str(world.train_file)],
        "val_files": [str(world.val_file)],
        "offline_values": None,
        "total_steps": steps,
        "overrides": [*settings, *extra, *([SPO_POOL] if method == "SPO" else [])],
        **train_kwargs,
    }


def train_small(method, world, out, name, steps, *extra, **kwargs):
    """``train`` a short run (``small_run_kwargs``); returns its summary."""
    from spo_helpers.stages.train import train

    return train(method, **small_run_kwargs(method, world, out, name, steps, *extra, **kwargs))


@pytest.fixture(scope="session", name="small_run_kwargs")
def small_run_kwargs_fixture():
    """``small_run_kwargs``: a short run's arguments, for ``train`` or ``RunSpec`` (a run in a subprocess)."""
    return small_run_kwargs


@pytest.fixture(scope="session", name="train_small")
def train_small_fixture():
    """``train_small``: a short training run on a small world, in this process."""
    return train_small


VOLATILE = ("timing_s/", "timing_per_token_ms/", "perf/", "tool/sandbox_latency/")
"""Metric-name prefixes of wall-clock measurements: they differ between two runs of the same computation."""


def stable_metrics(run_dir, volatile=VOLATILE) -> list[tuple[int, dict[str, Any]]]:
    """A run's logged metrics, (step, values) in the order logged, without names starting with ``volatile``."""
    from spo_helpers.formats.layout import RunLayout
    from spo_helpers.formats.steplog import read_step_log

    return [
        (r["step"], {k: v for k, v in r["data"].items() if not k.startswith(volatile)})
        for r in read_step_log(RunLayout(run_dir).metrics)
    ]


@pytest.fixture(scope="session", name="stable_metrics")
def stable_metrics_fixture():
    """``stable_metrics``: what two runs of the same computation must log alike."""
    return stable_metrics
