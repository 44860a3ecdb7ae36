"""The config of the ``ray`` backend on CPU: what it changes, what it leaves alone (no Ray started)."""

from __future__ import annotations

import pytest

pytest.importorskip("verl")

from omegaconf import OmegaConf

from spo_helpers.backends import resolve_backend
from spo_helpers.cli_options import StageParser
from spo_helpers.errors import UserError
from spo_helpers.run_settings import TrainSettings, add_flags
from spo_helpers.verl_glue.config import (
    RunSpec,
    all_overrides,
    build_config,
    command_line,
    compose,
    finalise,
    resolve_pkg_paths,
)
from spo_helpers.verl_glue.ray_cpu import ROLLOUT_NAME, apply_required_settings, is_ray_cpu
from spo_helpers.verl_glue.ray_cpu.settings import KIT_ROLLOUT_SETTINGS, REQUIRED_SETTINGS, SEED_KEY

# Everything the CPU mode changes in the cpu preset: what a CPU cannot run, two ranks, and Ray's CPU count.
CHANGED_FROM_IN_PROCESS = {
    "kit.backend": ("cpu", "ray"),
    "actor_rollout_ref.actor.strategy": ("fsdp", "fsdp2"),
    "actor_rollout_ref.ref.strategy": ("fsdp", "fsdp2"),  # follows the actor's in verl's ref.yaml
    "actor_rollout_ref.model.override_config.attn_implementation": (None, "sdpa"),
    "actor_rollout_ref.rollout.name": ("hf", ROLLOUT_NAME),
    "actor_rollout_ref.rollout.tensor_model_parallel_size": (2, 1),
    SEED_KEY: (None, 0),
    "trainer.n_gpus_per_node": (1, 2),
    "ray_kwargs.ray_init.num_cpus": (None, 3),
    # the same 32-sample mini-batch, split over two ranks: verl needs micro | per-rank mini
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": (32, 16),
}


def spec(**kwargs):
    base = {"model_path": "/models/m", "train_files": ["/data/subset_0.parquet"], "exp_name": "x"}
    return RunSpec(**{**base, **kwargs})


def flat(config) -> dict:
    out = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(config), "")
    return out


@pytest.mark.parametrize("method", ["GRPO", "SPO", "EVAL"])
def test_cpu_mode_changes_only_what_a_cpu_cannot_run(method):
    in_process = flat(build_config(spec(method=method, backend="cpu")))
    on_ray = flat(build_config(spec(method=method, backend="ray", device="cpu")))
    changed = {k: (in_process.get(k), on_ray.get(k)) for k in in_process.keys() | on_ray.keys()}
    changed = {k: v for k, v in changed.items() if v[0] != v[1]}
    assert changed == CHANGED_FROM_IN_PROCESS
    assert on_ray["trainer.device"] == "cpu" and on_ray["actor_rollout_ref.rollout.mode"] == "sync"


@pytest.mark.parametrize("preset", ["official", "paper"])
@pytest.mark.parametrize("method", ["GRPO", "SPO", "EVAL"])
def test_gpu_presets_keep_their_settings(preset, method):
    values = "/v.json" if method == "SPO" else None
    default = build_config(spec(method=method, preset=preset, offline_values=values))
    explicit = build_config(spec(method=method, preset=preset, offline_values=values, device="cuda"))
    on_ray = build_config(spec(method=method, preset=preset, offline_values=values, backend="ray"))
    assert flat(default) == flat(explicit) == flat(on_ray)
    assert not is_ray_cpu(default) and default.trainer.device == "cuda"
    for backend in ("ray", None):  # None: the preset's own backend, ray
        with pytest.raises(UserError, match="--preset cpu"):
            spec(method=method, preset=preset, backend=backend, device="cpu")


def test_unknown_device_is_refused():
    with pytest.raises(UserError, match="device"):
        spec(backend="ray", device="tpu")
    with pytest.raises(UserError, match="device"):
        resolve_backend("ray", None, "tpu")


@pytest.mark.parametrize("method", ["GRPO", "SPO", "EVAL"])
def test_printed_command_names_each_key_once(method):
    """The CPU mode's values are overrides after the preset's groups: one value per key in the command."""
    cpu_mode = spec(method=method, backend="ray", device="cpu")
    keys = [o.lstrip("+").split("=", 1)[0] for o in all_overrides(cpu_mode)]
    assert len(keys) == len(set(keys)), keys
    text = command_line(cpu_mode)
    assert "preset=cpu" in text and "kit.backend=ray" in text and "++trainer.device=cpu" in text
    assert all_overrides(spec(method=method, backend="cpu", device="cpu")) == all_overrides(
        spec(method=method, backend="cpu")
    )  # the in-process backend runs on CPU anyway


def test_tiny_world_on_gpu_workers_asks_for_cuda():
    """``--preset cpu --backend ray`` (a GPU smoke run) is not the CPU mode."""
    config = build_config(spec(backend="ray"))
    assert config.trainer.device == "cuda" and not is_ray_cpu(config)


def test_hydra_entry_point_needs_only_the_device():
    """``python -m spo_helpers.verl_glue.main ... kit.backend=ray trainer.device=cpu`` gets the rest at run time."""
    overrides = [o for o in all_overrides(spec(backend="cpu")) if not o.startswith("kit.backend=")]
    config = compose([*overrides, "kit.backend=ray", "trainer.device=cpu", "trainer.n_gpus_per_node=2"])
    OmegaConf.resolve(config)
    config = resolve_pkg_paths(config)
    assert is_ray_cpu(config)
    changed = apply_required_settings(config)
    already = {"trainer.device", "actor_rollout_ref.rollout.mode"}  # the cpu preset's own values
    required = {**REQUIRED_SETTINGS, **KIT_ROLLOUT_SETTINGS}
    assert set(changed) == (required.keys() - already) | {SEED_KEY}
    reference = flat(build_config(spec(backend="ray", device="cpu")))
    for key in required:
        assert OmegaConf.select(config, key) == reference[key], key
    assert apply_required_settings(config) == []


@pytest.mark.parametrize("method", ["grpo", "spo", "eval"])
def test_hydra_app_config_with_only_the_device_is_the_cpu_mode(method):
    """``finalise`` (what the Hydra app and ``build_config`` end with) applies the CPU settings, so the run's
    ``config.yaml`` and identity hold what runs; the micro-batch follows the rank count (preset/cpu.yaml)."""
    base = all_overrides(spec(method=method.upper()))  # preset=cpu method=<method>, no backend named
    config = flat(finalise(compose([*base, "kit.backend=ray", "trainer.device=cpu", "trainer.n_gpus_per_node=2"])))
    reference = flat(build_config(spec(method=method.upper(), backend="ray", device="cpu")))
    differ = {k for k in config.keys() | reference.keys() if config.get(k) != reference.get(k)}
    assert differ == {"ray_kwargs.ray_init.num_cpus"}  # set when Ray starts (launch.prepare): ranks + 1
    one_rank = flat(finalise(compose([*base, "kit.backend=ray"])))  # trainer.device=cpu: the cpu preset's
    assert one_rank["trainer.device"] == "cpu" and one_rank["actor_rollout_ref.rollout.name"] == ROLLOUT_NAME
    assert one_rank["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu"] == 32  # one rank: the whole mini-batch


def test_cli_flags():
    assert resolve_backend("ray", None, "cpu") == ("ray", "cpu")
    assert resolve_backend("ray", "official", "cpu") == ("ray", "official")  # refused by RunSpec, with the fix
    assert resolve_backend("cpu", None, "cpu") == ("cpu", "cpu")
    parser = StageParser()
    add_flags(parser, TrainSettings)
    assert parser.parse_args(["--backend", "ray", "--device", "cpu"]).device == "cpu"
    assert parser.parse_args([]).device is None
