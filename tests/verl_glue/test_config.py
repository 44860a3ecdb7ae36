"""The presets compose against verl's shipped Hydra config: every override names a real key."""

import pytest

pytest.importorskip("verl")

from spo_helpers.errors import UserError
from spo_helpers.verl_glue.config import (
    CONFIG_DIR,
    GROUPS,
    RunSpec,
    all_overrides,
    build_config,
    command_line,
    compose,
    finalise,
    largest_divisor_at_most,
    normalise_override,
)

AIME_VAL_FILES = ("Maxwell-Jia/AIME_2024", "yentinglin/aime_2025")


def spec(**kwargs):
    base = {"model_path": "/models/m", "train_files": ["/data/subset_0.parquet"], "exp_name": "x"}
    base.update(kwargs)
    return RunSpec(**base)


@pytest.mark.parametrize("preset", ["official", "paper", "cpu"])
@pytest.mark.parametrize("method", ["GRPO", "SPO", "EVAL"])
def test_every_preset_composes(preset, method):
    config = build_config(spec(method=method, preset=preset, offline_values="/v.json" if method == "SPO" else None))
    assert config.kit.method == method
    assert config.algorithm.adv_estimator == "grpo"
    assert config.actor_rollout_ref.actor.clip_ratio_low == 0.2
    assert config.actor_rollout_ref.actor.clip_ratio_high == 0.28
    assert config.actor_rollout_ref.actor.clip_ratio_c == 10.0
    assert config.actor_rollout_ref.actor.loss_agg_mode == "token-mean"
    assert not config.actor_rollout_ref.actor.use_kl_loss and not config.algorithm.use_kl_in_reward
    assert config.custom_reward_function.path.endswith("spo_helpers/verl_glue/reward.py")
    assert config.data.custom_cls.path.endswith("spo_helpers/verl_glue/dataset.py")
    assert config.trainer.default_local_dir == "runs/spo/x/checkpoints"


def test_official_settings():
    grpo = build_config(spec(method="GRPO", preset="official"))
    spo = build_config(spec(method="SPO", preset="official", offline_values="/v.json"))
    assert (grpo.data.train_batch_size, grpo.actor_rollout_ref.rollout.n) == (128, 8)
    assert grpo.actor_rollout_ref.actor.ppo_mini_batch_size == 16
    assert (spo.data.train_batch_size, spo.actor_rollout_ref.rollout.n) == (1024, 1)
    assert spo.actor_rollout_ref.actor.ppo_mini_batch_size == 128
    assert spo.data.gen_batch_size == 14000
    assert spo.trainer.spo.enable and spo.trainer.spo.offline_values == "/v.json"
    for config in (grpo, spo):
        assert config.data.max_response_length == 8192 and config.data.max_prompt_length == 2048
        assert list(config.data.val_files) == list(AIME_VAL_FILES)
        assert config.actor_rollout_ref.rollout.val_kwargs.n == 16
        assert config.actor_rollout_ref.rollout.val_kwargs.temperature == 0.6
        assert config.actor_rollout_ref.rollout.val_kwargs.top_p == 0.95
        assert config.actor_rollout_ref.rollout.temperature == 1.0
        assert config.actor_rollout_ref.actor.optim.lr == 1e-6
        assert (config.trainer.save_freq, config.trainer.test_freq, config.trainer.total_epochs) == (20, 10, 500)
        assert config.trainer.n_gpus_per_node == 8 and config.trainer.nnodes == 1
        assert config.actor_rollout_ref.rollout.tensor_model_parallel_size == 4
        assert config.actor_rollout_ref.actor.ulysses_sequence_parallel_size == 8
        assert config.actor_rollout_ref.rollout.name == "vllm"
        assert config.custom_reward_function.reward_kwargs.require_think
        assert config.trainer.val_before_train is False  # train.sh: VAL_BEFORE_TRAIN=False
        assert config.data.val_batch_size == 96
        # train.sh: 4x the actor's token budget for the reference only; the old-log-prob pass keeps verl's default
        actor_budget = config.actor_rollout_ref.actor.ppo_max_token_len_per_gpu
        assert actor_budget == 2048 + 8192
        assert config.actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu == actor_budget
        assert config.actor_rollout_ref.ref.log_prob_max_token_len_per_gpu == 4 * actor_budget


def test_paper_settings_follow_the_first_release():
    """recipe/spo/run_spo.sh of the paper's first code release (verl commit 6cdab42)."""
    grpo = build_config(spec(method="GRPO", preset="paper"))
    spo = build_config(spec(method="SPO", preset="paper", offline_values="/v.json"))
    assert (grpo.data.train_batch_size, grpo.actor_rollout_ref.rollout.n, grpo.trainer.nnodes) == (256, 8, 2)
    assert grpo.actor_rollout_ref.actor.ppo_mini_batch_size == 32
    assert (spo.data.train_batch_size, spo.actor_rollout_ref.rollout.n) == (2048, 1)
    assert (spo.actor_rollout_ref.actor.ppo_mini_batch_size, spo.data.gen_batch_size) == (256, 14000)
    for config in (grpo, spo):
        assert config.data.max_response_length == 16384 and config.data.max_prompt_length == 2048
        assert (config.trainer.test_freq, config.trainer.save_freq, config.trainer.total_epochs) == (20, 20, 500)
        assert config.data.val_batch_size is None  # unset in run_spo.sh: one batch of all validation prompts
        assert list(config.data.val_files) == ["yentinglin/aime_2025", "Maxwell-Jia/AIME_2024"]
        assert config.trainer.val_before_train is False
        assert not config.custom_reward_function.reward_kwargs.require_think  # no </think> rule there
        assert (
            config.actor_rollout_ref.rollout.val_kwargs.n == 16
            and config.actor_rollout_ref.rollout.val_kwargs.top_k == 20
        )
        assert config.trainer.spo.rho.clip_lower == 0.875 and config.actor_rollout_ref.actor.optim.lr == 1e-6
    estimate = build_config(spec(method="EVAL", preset="paper"))
    assert estimate.data.val_batch_size == 96  # no estimation script in the first release: eval.sh's batches


def test_estimate_settings_match_eval_sh():
    config = build_config(spec(method="EVAL", preset="official"))
    assert config.trainer.val_only and config.trainer.val_before_train
    assert list(config.data.val_files) == ["/data/subset_0.parquet"]
    assert config.actor_rollout_ref.rollout.val_kwargs.n == 8
    assert config.trainer.validation_data_dir == "runs/spo/x/validation_data"
    # eval.sh runs with tools but leaves the agent loop unset; the kit names its tool loop (docs/tools.md)
    assert config.actor_rollout_ref.rollout.agent.default_agent_loop == "spo_tool_agent"
    math_only = build_config(spec(method="EVAL", preset="official", tools="none"))
    assert math_only.actor_rollout_ref.rollout.agent.default_agent_loop == "single_turn_agent"


def test_official_variables_override_presets():
    config = build_config(spec(method="GRPO", preset="official", response_length=4096, n_train=4, n_val=32))
    assert config.data.max_response_length == 4096
    assert config.actor_rollout_ref.rollout.n == 4
    assert config.actor_rollout_ref.rollout.val_kwargs.n == 32


def test_free_overrides_pass_through_and_unknown_keys_fail():
    config = build_config(spec(overrides=["trainer.save_freq=7", "+data.gen_batch_size=32"]))
    assert config.trainer.save_freq == 7 and config.data.gen_batch_size == 32
    with pytest.raises(UserError, match="no_such_key"):
        compose(all_overrides(spec(overrides=["trainer.no_such_key=1"])))


def test_normalise_override():
    assert normalise_override("+data.gen_batch_size=14000") == "data.gen_batch_size=14000"
    assert normalise_override("+trainer.x=1") == "+trainer.x=1"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "SPO", "n_train": 8}, "N_TRAIN"),
        ({"method": "GRPO", "n_train": 1}, "groups of one"),
        ({"method": "PPO"}, "METHOD"),
        ({"preset": "huge"}, "preset"),
        ({"backend": "slurm"}, "backend"),
    ],
)
def test_bad_specs_fail_before_compute(kwargs, match):
    with pytest.raises(UserError, match=match):
        spec(**kwargs)


def test_command_line_names_the_groups_and_the_variables():
    text = command_line(spec(method="SPO", preset="official", offline_values="/v.json", n_val=4))
    assert text.startswith("python -m spo_helpers.verl_glue.main")
    assert "preset=official" in text and "method=spo" in text
    assert "trainer.spo.offline_values=/v.json" in text and "actor_rollout_ref.rollout.val_kwargs.n=4" in text
    assert "data.gen_batch_size" not in text  # the preset's value comes from preset_method/official_spo.yaml


def test_groups_ship_one_file_per_option():
    for group, options in zip(GROUPS[:2], (("cpu", "official", "paper"), ("grpo", "spo", "eval")), strict=True):
        assert {p.stem for p in (CONFIG_DIR / group).glob("*.yaml")} == set(options)
    combos = {p.stem for p in (CONFIG_DIR / "preset_method").glob("*.yaml")}
    assert combos == {f"{p}_{m}" for p in ("cpu", "official", "paper") for m in ("grpo", "spo", "eval")}


def test_small_batch_divides_the_batch_shape():
    spo = build_config(spec(method="SPO", preset="official", small_batch=True, offline_values="/v.json"))
    assert (spo.data.train_batch_size, spo.actor_rollout_ref.actor.ppo_mini_batch_size) == (128, 16)
    assert spo.data.gen_batch_size == 1024 and not spo.trainer.debug
    grpo = build_config(spec(method="GRPO", preset="cpu", small_batch=True))
    assert (grpo.data.train_batch_size, grpo.actor_rollout_ref.actor.ppo_mini_batch_size) == (2, 1)
    assert grpo.data.gen_batch_size == 2 and grpo.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu == 8


def shape(config):
    return (
        config.data.train_batch_size,
        config.actor_rollout_ref.actor.ppo_mini_batch_size,
        config.actor_rollout_ref.rollout.n,
        config.data.gen_batch_size,
        config.data.max_response_length,
        config.data.val_batch_size,
    )


@pytest.mark.parametrize("method", ["GRPO", "SPO"])
def test_debug_means_what_the_official_scripts_mean(method):
    values = "/v.json" if method == "SPO" else None
    # train.sh: DEBUG only reaches trainer.debug (Ray's legacy debugger); the batch shape stays the preset's
    plain = build_config(spec(method=method, preset="official", offline_values=values))
    debug = build_config(spec(method=method, preset="official", offline_values=values, debug=True))
    assert debug.trainer.debug and not plain.trainer.debug and shape(debug) == shape(plain)
    cpu = build_config(spec(method=method, preset="cpu", debug=True))
    assert cpu.trainer.debug and shape(cpu) == shape(build_config(spec(method=method, preset="cpu")))
    # the paper's run_spo.sh: 8 prompts x 1 response, mini-batch 8, pool 8, 1024-token responses, either method
    paper = build_config(spec(method=method, preset="paper", offline_values=values, debug=True))
    assert paper.trainer.debug and shape(paper) == (8, 8, 1, 8, 1024, None)
    assert paper.actor_rollout_ref.actor.ppo_max_token_len_per_gpu == 2048 + 1024
    # the official variables still win over the debug shape
    longer = build_config(spec(method=method, preset="paper", offline_values=values, debug=True, response_length=2048))
    assert longer.data.max_response_length == 2048


@pytest.mark.parametrize("preset", ["official", "paper", "cpu"])
def test_debug_of_the_estimation_is_eval_sh(preset):
    config = build_config(spec(method="EVAL", preset=preset, debug=True))
    assert config.trainer.debug and (config.data.train_batch_size, config.data.val_batch_size) == (16, 16)
    assert "+debug=eval_sh" in command_line(spec(method="EVAL", preset=preset, debug=True))


def test_debug_starts_ray_with_its_legacy_debugger():
    from spo_helpers.verl_glue.runner import add_ray_debug_env

    config = build_config(spec(method="GRPO", preset="official", debug=True))
    assert add_ray_debug_env(config)
    assert config.ray_kwargs.ray_init.runtime_env.env_vars.RAY_DEBUG == "legacy"
    assert not add_ray_debug_env(build_config(spec(method="GRPO", preset="official")))


def test_val_before_train_is_off_except_on_the_cpu_preset_and_in_estimation():
    assert not build_config(spec(method="GRPO", preset="official")).trainer.val_before_train
    assert build_config(spec(method="GRPO", preset="cpu")).trainer.val_before_train
    assert build_config(spec(method="EVAL", preset="official")).trainer.val_before_train
    assert build_config(spec(method="GRPO", preset="official", val_before_train=True)).trainer.val_before_train


def test_workers_on_cpu_refuse_the_gpu_presets_with_one_message():
    from spo_helpers.verl_glue.config import device_refusal

    expected = device_refusal("official", "ray", "cpu")
    assert expected and "--preset cpu" in expected and "official preset needs GPU nodes" in expected
    with pytest.raises(UserError) as refused:
        spec(method="GRPO", preset="official", backend="ray", device="cpu")
    assert str(refused.value) == expected
    from spo_helpers.verl_glue.config import finalise

    config = compose([*all_overrides(spec(method="GRPO", preset="official")), "trainer.device=cpu"])
    with pytest.raises(UserError) as refused:
        finalise(config)
    assert str(refused.value) == expected


def test_run_paths_follow_the_layout():
    config = build_config(spec(output_dir="/out", exp_name="e"))
    assert config.kit.run_dir == "/out/spo/e"
    assert config.trainer.validation_data_dir == "/out/spo/e/validation_data"
    assert config.trainer.rollout_data_dir == "/out/spo/e/rollout_data"
    estimate = build_config(spec(method="EVAL"))
    assert estimate.trainer.rollout_data_dir is None


def test_cpu_micro_batch_divides_the_mini_batch():
    assert largest_divisor_at_most(32, 64) == 32
    assert largest_divisor_at_most(96, 64) == 48
    config = build_config(spec(method="GRPO", preset="cpu", n_train=3))
    assert config.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu == 12  # 4 prompts x 3 responses


@pytest.mark.parametrize("preset", ["official", "paper"])
@pytest.mark.parametrize("method", ["GRPO", "SPO", "EVAL"])
def test_gpu_presets_pass_verls_own_checks(preset, method):
    """The Ray backend's worker mapping and verl's ``validate_config`` for the GPU presets (no Ray started)."""
    from verl.trainer.ppo.utils import Role, need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from spo_helpers.verl_glue.runner import _role_mapping

    config = build_config(spec(method=method, preset=preset, offline_values="/v.json" if method == "SPO" else None))
    mapping, pools, worker_group_cls = _role_mapping(config)
    assert Role.ActorRollout in mapping and Role.RefPolicy not in mapping
    assert worker_group_cls.__name__ == "RayWorkerGroup"
    assert pools.resource_pool_spec["global_pool"] == [8] * config.trainer.nnodes
    validate_config(config=config, use_reference_policy=need_reference_policy(mapping), use_critic=need_critic(config))


def test_tensorboard_dir_keeps_the_users_choice(monkeypatch, tmp_path):
    """verl's tensorboard backend writes to $TENSORBOARD_DIR: the user's when set, else the run's folder."""
    import os

    from spo_helpers.formats.layout import RunLayout
    from spo_helpers.verl_glue.runner import tensorboard_dir

    layout = RunLayout(tmp_path / "run")
    monkeypatch.delenv("TENSORBOARD_DIR", raising=False)
    with tensorboard_dir(layout) as folder:
        assert folder == layout.tensorboard and os.environ["TENSORBOARD_DIR"] == str(layout.tensorboard)
    assert "TENSORBOARD_DIR" not in os.environ  # the next run in this process gets its own folder
    monkeypatch.setenv("TENSORBOARD_DIR", str(tmp_path / "mine"))
    with tensorboard_dir(layout) as folder:
        assert folder == tmp_path / "mine" and os.environ["TENSORBOARD_DIR"] == str(tmp_path / "mine")
    assert os.environ["TENSORBOARD_DIR"] == str(tmp_path / "mine")


def test_the_paper_regime_of_the_cpu_world():
    """regime=paper: a small pool, tens of visits per prompt, a learning rate whose drift stays in rho's clip
    range, and the same 32 samples per step for both methods; a CPU-world setting only."""
    base = ["preset=cpu", "regime=paper", "actor_rollout_ref.model.path=/m", "data.train_files=[/d/probe.parquet]"]
    spo = finalise(compose([*base, "method=spo"]))
    grpo = finalise(compose([*base, "method=grpo"]))
    assert spo.kit.regime == grpo.kit.regime == "paper"
    assert spo.actor_rollout_ref.actor.optim.lr == grpo.actor_rollout_ref.actor.optim.lr == 3e-5
    assert (spo.data.train_batch_size, spo.data.gen_batch_size, spo.actor_rollout_ref.rollout.n) == (32, 200, 1)
    assert (grpo.data.train_batch_size, grpo.actor_rollout_ref.rollout.n) == (4, 8)
    assert spo.trainer.total_training_steps == grpo.trainer.total_training_steps == 150
    plain = finalise(compose(["preset=cpu", "method=spo", "actor_rollout_ref.model.path=/m", "data.train_files=[/d]"]))
    assert plain.kit.regime == "none" and plain.actor_rollout_ref.actor.optim.lr == 3e-4
    with pytest.raises(UserError, match="regime=paper is a setting of the CPU world"):
        finalise(compose(["preset=official", "method=spo", "regime=paper", "actor_rollout_ref.model.path=/m"]))


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (["preset=cpu", "method=spo", "agent=tools", "schedule=stream"], None),
        (["preset=cpu", "method=grpo", "agent=tools", "schedule=overprovision"], None),
        (["preset=cpu", "method=spo", "schedule=stream"], "tools"),
        (["preset=cpu", "method=eval", "agent=tools", "schedule=stream"], "method=spo or grpo"),
        (["preset=official", "method=spo", "agent=none", "schedule=stream"], "tools"),
        (["preset=official", "method=spo", "schedule=stream"], None),  # the official preset runs tools
        (["preset=official", "method=spo", "agent=tools", "schedule=stream"], None),
        (["preset=official", "method=grpo", "agent=tools", "schedule=overprovision"], None),
        (
            ["preset=official", "method=spo", "agent=tools", "schedule=stream", "actor_rollout_ref.rollout.mode=sync"],
            "actor_rollout_ref.rollout.mode=async",
        ),
        (["preset=official", "method=spo"], None),
    ],
)
def test_streamed_schedules_run_where_the_engine_runs(overrides, refused):
    from spo_helpers.verl_glue.config import schedule_refusal

    config = compose(overrides)
    assert {p.stem for p in (CONFIG_DIR / "schedule").glob("*.yaml")} == {"sync", "stream", "overprovision"}
    message = schedule_refusal(config)
    if "schedule=stream" in overrides or "schedule=overprovision" in overrides:  # the PPO ratio needs them
        assert config.actor_rollout_ref.rollout.calculate_log_probs is True
    if refused is None:
        assert message is None
    else:
        assert refused in message and "schedule=sync" in message
