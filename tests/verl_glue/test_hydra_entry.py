"""``python -m spo_helpers.verl_glue.main`` is a Hydra app: --help, --cfg job, -m sweeps, hydra.run.dir.

Every case stays on a path that does not train (``--help``, ``--cfg job``, ``kit.dry_run=true``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("verl")

import yaml
from omegaconf import OmegaConf

from spo_helpers.verl_glue.config import RunSpec, all_overrides, build_config

ENTRY = [sys.executable, "-m", "spo_helpers.verl_glue.main"]
DATA = ["actor_rollout_ref.model.path=/models/m", "data.train_files=[/data/subset_0.parquet]"]


def hydra_app(*args: str, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, HYDRA_FULL_ERROR="1")
    done = subprocess.run([*ENTRY, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def test_help_lists_the_config_groups(tmp_path):
    out = hydra_app("--help", cwd=tmp_path).stdout
    assert "preset: cpu, official, paper" in out
    assert "method: eval, grpo, spo" in out
    assert "--cfg job" in out
    assert not any(tmp_path.iterdir())  # --help writes nothing


def test_cfg_job_composes_one_option_of_each_group(tmp_path):
    out = hydra_app("preset=cpu", "method=spo", "--cfg", "job", cwd=tmp_path).stdout
    config = yaml.safe_load(out)
    assert config["kit"]["preset"] == "cpu" and config["kit"]["backend"] == "cpu"  # preset/cpu.yaml
    assert config["data"]["max_response_length"] == 16 and config["trainer"]["device"] == "cpu"
    assert config["kit"]["method"] == "SPO" and config["trainer"]["spo"]["enable"] is True  # method/spo.yaml
    assert config["data"]["train_batch_size"] == 128 and config["data"]["gen_batch_size"] == 2400  # cpu_spo.yaml
    assert config["actor_rollout_ref"]["rollout"]["n"] == 1
    assert config["actor_rollout_ref"]["actor"]["clip_ratio_high"] == 0.28  # kit_trainer.yaml
    assert config["kit"]["run_dir"].startswith("${spo.run_dir:")  # unresolved, as Hydra prints it
    assert "hydra" not in config
    assert not any(tmp_path.iterdir())


def test_dry_run_matches_the_config_spo_train_builds(tmp_path):
    """The Hydra app with ``spo train``'s overrides resolves to the same config: one source of the presets."""
    spec = RunSpec(
        method="SPO",
        preset="official",
        model_path="/models/m",
        train_files=["/data/subset_0.parquet"],
        offline_values="/v.json",
        output_dir=str(tmp_path / "out"),
        exp_name="x",
    )
    record = tmp_path / "record"
    out = hydra_app(*all_overrides(spec), "kit.dry_run=true", f"hydra.run.dir={record}", cwd=tmp_path).stdout
    printed = yaml.safe_load(out)
    expected = OmegaConf.to_container(build_config(spec))
    printed["kit"].pop("dry_run")
    expected["kit"].pop("dry_run")
    assert printed == expected
    assert (record / ".hydra" / "overrides.yaml").is_file()  # hydra.run.dir moved Hydra's record
    assert not (tmp_path / "out").exists()  # a dry run writes no run folder


def test_multirun_sweeps_each_job_into_its_own_folder(tmp_path):
    sweep = tmp_path / "sweep"
    done = hydra_app(
        "-m", "preset=cpu", "method=grpo,spo", "kit.dry_run=true", *DATA, f"hydra.sweep.dir={sweep}", cwd=tmp_path
    )
    methods = [line.split(":")[1].strip() for line in done.stdout.splitlines() if line.startswith("  method:")]
    assert methods == ["GRPO", "SPO"]  # kit.method of each job, in order
    for number in (0, 1):
        assert (sweep / str(number) / ".hydra" / "overrides.yaml").is_file()
        # no run folder named in the sweep: each job's run folder is its sweep folder
        assert f"run_dir: {sweep / str(number)}" in done.stdout
        assert f"default_local_dir: {sweep / str(number) / 'checkpoints'}" in done.stdout


@pytest.mark.parametrize("preset", ["official", "paper"])
def test_workers_on_cpu_with_a_gpu_preset_are_refused_as_spo_train_refuses_them(preset, tmp_path):
    """``trainer.device=cpu`` with a GPU preset: the one line ``RunSpec`` (``spo train --device cpu``) gives."""
    from spo_helpers.verl_glue.config import device_refusal

    env = dict(os.environ, HYDRA_FULL_ERROR="1")
    done = subprocess.run(
        [*ENTRY, f"preset={preset}", "method=grpo", "trainer.device=cpu", *DATA],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-4000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1] == f"python -m spo_helpers.verl_glue.main: error: {device_refusal(preset, 'ray', 'cpu')}"
    assert "Traceback" not in done.stderr
    run_dir = tmp_path / "runs" / "spo" / f"grpo_{preset}"  # Hydra's own record only: the run never started
    assert not (run_dir / "config.yaml").exists() and not (run_dir / "checkpoints").exists()
