"""Compose verl configs for the kit's runs: presets, the official variables, free overrides.

A run is described by ``RunSpec`` (the official scripts' variables: OUTPUT_DIR,
TRAIN_DATA_DIR / DATA_FILE, MODEL_PATH, EXP_NAME, METHOD, OFFLINE_VALUES,
RESPONSE_LENGTH, N_TRAIN, N_VAL, DEBUG, VAL_BEFORE_TRAIN) plus a preset:

- ``official``: the official recipe's final train.sh / eval.sh (1 node x 8 GPUs,
  vLLM async TP 4, Ulysses SP 8, FSDP offload; GRPO 128x8 / mini 16, SPO 1024x1 /
  mini 128 from a 14000-prompt pool, 8K responses, AIME 24+25 validation n=16);
- ``paper``: the paper's version (GRPO 256x8 vs SPO 2048x1, 16K responses, 2 nodes);
- ``cpu``: the bundled tiny world on the in-process CPU backend.

Everything becomes Hydra overrides on ``kit_trainer.yaml`` (verl's ``ppo_trainer``
plus the SPO keys), composed with verl's own config, so an override naming a key
that does not exist fails before anything runs.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from spo_helpers.errors import UserError

CONFIG_DIR = Path(__file__).parent / "config"
CONFIG_NAME = "kit_trainer"
METHODS = ("GRPO", "SPO", "EVAL")
PRESETS = ("official", "paper", "cpu")
AIME_VAL_FILES = ("Maxwell-Jia/AIME_2024", "yentinglin/aime_2025")
OFFICIAL_POOL = 14000

# Batch shapes (prompts per step, PPO mini-batch in prompts, responses per prompt, candidate pool).
BATCHES = {
    ("official", "GRPO"): (128, 16, 8, None),
    ("official", "SPO"): (1024, 128, 1, OFFICIAL_POOL),
    ("paper", "GRPO"): (256, 32, 8, None),
    ("paper", "SPO"): (2048, 256, 1, OFFICIAL_POOL),
    ("cpu", "GRPO"): (16, 4, 8, None),
    ("cpu", "SPO"): (128, 32, 1, 2400),
    ("official", "EVAL"): (64, 16, 8, None),
    ("paper", "EVAL"): (64, 16, 8, None),
    ("cpu", "EVAL"): (16, 4, 8, None),
}
RESPONSE_LENGTH = {"official": 8192, "paper": 16384, "cpu": 16}
NODES = {"official": 1, "paper": 2, "cpu": 1}


@dataclass
class RunSpec:
    """One training or estimation run, in the official scripts' terms."""

    method: str = "GRPO"
    preset: str = "cpu"
    backend: str | None = None  # default: cpu for the cpu preset, ray otherwise
    output_dir: str = "runs"
    exp_name: str = "run"
    model_path: str = ""
    train_files: list[str] = field(default_factory=list)
    val_files: list[str] = field(default_factory=list)
    offline_values: str | None = None
    response_length: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    debug: bool = False
    val_before_train: bool | None = None
    total_steps: int | None = None
    seed: int = 0
    overrides: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.method = self.method.upper()
        if self.method not in METHODS:
            raise UserError(f"METHOD must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.preset not in PRESETS:
            raise UserError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.backend is None:
            self.backend = "cpu" if self.preset == "cpu" else "ray"
        if self.backend not in ("cpu", "ray"):
            raise UserError(f"backend must be cpu or ray, got {self.backend!r}")
        if self.method == "SPO" and self.n_train not in (None, 1):
            raise UserError(f"METHOD=SPO samples one response per prompt; N_TRAIN={self.n_train} must be 1")
        if self.method == "GRPO" and self.n_train == 1:
            raise UserError(
                "METHOD=GRPO with N_TRAIN=1 has groups of one: verl gives them mean 0 and std 1, so the advantage is "
                "the raw reward (no baseline). Use N_TRAIN>=2, or METHOD=SPO for single-response training"
            )

    @property
    def run_dir(self) -> Path:
        """``$OUTPUT_DIR/spo/$EXP_NAME``, the official layout."""
        return Path(self.output_dir) / "spo" / self.exp_name


def _list(values) -> str:
    return "[" + ",".join(f'"{v}"' for v in values) + "]"


def preset_overrides(spec: RunSpec) -> list[str]:
    """The Hydra overrides a preset and the official variables stand for."""
    prompts, mini, n, pool = BATCHES[(spec.preset, spec.method)]
    if spec.debug:
        prompts, mini, pool = max(prompts // 8, 2), max(mini // 8, 1), (min(pool, 1024) if pool else None)
    n = spec.n_train or n
    response_length = spec.response_length or RESPONSE_LENGTH[spec.preset]
    run = spec.run_dir
    cpu = spec.preset == "cpu"
    n_val = spec.n_val or (4 if cpu else (8 if spec.method == "EVAL" else 16))
    val_files = spec.val_files or (list(spec.train_files) if spec.method == "EVAL" or cpu else list(AIME_VAL_FILES))
    out = [
        f"kit.method={spec.method}",
        f"kit.backend={spec.backend}",
        f"kit.run_dir={run}",
        f"kit.seed={spec.seed}",
        f"data.seed={spec.seed}",
        f"data.train_files={_list(spec.train_files)}",
        f"data.val_files={_list(val_files)}",
        f"data.train_batch_size={prompts}",
        f"data.gen_batch_size={pool or prompts}",
        f"data.max_response_length={response_length}",
        "data.return_raw_chat=True",
        "data.filter_overlong_prompts=True",
        "data.truncation=error",
        "data.custom_cls.path=pkg://spo_helpers.verl_glue.dataset",
        "data.custom_cls.name=KitRLHFDataset",
        "custom_reward_function.path=pkg://spo_helpers.verl_glue.reward",
        "custom_reward_function.name=compute_score",
        f"actor_rollout_ref.model.path={spec.model_path}",
        "algorithm.adv_estimator=grpo",
        "algorithm.use_kl_in_reward=False",
        "algorithm.kl_ctrl.kl_coef=0.0",
        "actor_rollout_ref.actor.use_kl_loss=False",
        "actor_rollout_ref.actor.kl_loss_coef=0.0",
        "actor_rollout_ref.actor.entropy_coeff=0",
        "actor_rollout_ref.actor.clip_ratio_low=0.2",
        "actor_rollout_ref.actor.clip_ratio_high=0.28",
        "actor_rollout_ref.actor.clip_ratio_c=10.0",
        "actor_rollout_ref.actor.loss_agg_mode=token-mean",
        "actor_rollout_ref.actor.ppo_epochs=1",
        "actor_rollout_ref.actor.grad_clip=1.0",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={mini}",
        f"actor_rollout_ref.rollout.n={n}",
        "actor_rollout_ref.rollout.temperature=1.0",
        "actor_rollout_ref.rollout.val_kwargs.temperature=0.6",
        "actor_rollout_ref.rollout.val_kwargs.top_p=0.95",
        "actor_rollout_ref.rollout.val_kwargs.do_sample=True",
        f"actor_rollout_ref.rollout.val_kwargs.n={n_val}",
        "trainer.project_name=spo",
        f"trainer.experiment_name={spec.exp_name}",
        f"trainer.default_local_dir={run / 'checkpoints'}",
        f"trainer.validation_data_dir={run / 'validation_data'}",
        f"trainer.spo.enable={spec.method == 'SPO'}",
        f"trainer.debug={spec.debug}",
    ]
    if spec.offline_values:
        out.append(f"trainer.spo.offline_values={spec.offline_values}")
    if spec.method == "EVAL":
        out += ["trainer.val_only=True", "trainer.val_before_train=True", "trainer.total_epochs=1"]
    elif spec.val_before_train is not None:
        out.append(f"trainer.val_before_train={spec.val_before_train}")
    if spec.total_steps:
        out.append(f"trainer.total_training_steps={spec.total_steps}")
    out += _cpu_overrides(spec, mini * n) if cpu else _gpu_overrides(spec, response_length)
    return out


def _largest_divisor_at_most(value: int, cap: int) -> int:
    return max(d for d in range(1, min(value, cap) + 1) if value % d == 0)


def _cpu_overrides(spec: RunSpec, samples_per_mini_batch: int) -> list[str]:
    """The tiny world on the in-process CPU worker group."""
    run = spec.run_dir
    return [
        "data.max_prompt_length=64",
        "data.val_batch_size=512",
        "data.dataloader_num_workers=0",
        "data.filter_overlong_prompts_workers=1",
        "actor_rollout_ref.model.use_remove_padding=False",
        "actor_rollout_ref.model.enable_gradient_checkpointing=False",
        "actor_rollout_ref.actor.strategy=fsdp",
        "actor_rollout_ref.actor.use_dynamic_bsz=False",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={_largest_divisor_at_most(samples_per_mini_batch, 64)}",
        "actor_rollout_ref.actor.use_torch_compile=False",
        "actor_rollout_ref.actor.fsdp_config.dtype=fp32",
        "actor_rollout_ref.actor.optim.lr=3e-4",
        "actor_rollout_ref.actor.optim.weight_decay=0.0",
        "actor_rollout_ref.rollout.name=hf",
        "actor_rollout_ref.rollout.mode=sync",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=128",
        "actor_rollout_ref.rollout.val_kwargs.top_k=-1",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=128",
        "trainer.device=cpu",
        "trainer.n_gpus_per_node=1",
        "trainer.nnodes=1",
        "trainer.logger=['tensorboard']",
        "trainer.log_val_generations=0",
        "trainer.balance_batch=False",
        "trainer.save_freq=5",
        "trainer.test_freq=5",
        "trainer.total_epochs=1000",
        f"trainer.rollout_data_dir={run / 'rollout_data'}"
        if spec.method != "EVAL"
        else "trainer.rollout_data_dir=null",
    ]


def _gpu_overrides(spec: RunSpec, response_length: int) -> list[str]:
    """verl's Ray workers with FSDP and vLLM, the official recipe's performance settings."""
    prompt_length = 2048
    max_tokens = prompt_length + response_length
    run = spec.run_dir
    return [
        f"data.max_prompt_length={prompt_length}",
        "data.val_batch_size=96",
        "actor_rollout_ref.model.use_remove_padding=True",
        "actor_rollout_ref.model.enable_gradient_checkpointing=True",
        "actor_rollout_ref.actor.optim.lr=1e-6",
        "actor_rollout_ref.actor.use_dynamic_bsz=True",
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={max_tokens}",
        "actor_rollout_ref.actor.ulysses_sequence_parallel_size=8",
        "actor_rollout_ref.actor.fsdp_config.param_offload=True",
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload=True",
        f"actor_rollout_ref.ref.log_prob_max_token_len_per_gpu={4 * max_tokens}",
        f"actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu={4 * max_tokens}",
        "actor_rollout_ref.rollout.name=vllm",
        "actor_rollout_ref.rollout.mode=async",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=4",
        "actor_rollout_ref.rollout.gpu_memory_utilization=0.8",
        "actor_rollout_ref.rollout.val_kwargs.top_k=20",
        # The official eval.sh leaves the agent loop unset while its data names one; set it explicitly.
        "actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent",
        "custom_reward_function.reward_kwargs.require_think=True",
        "trainer.logger=['console','tensorboard']",
        "trainer.n_gpus_per_node=8",
        f"trainer.nnodes={NODES[spec.preset]}",
        "trainer.log_val_generations=20",
        "trainer.save_freq=20",
        "trainer.test_freq=10",
        f"trainer.total_epochs={100 if spec.method == 'EVAL' else 500}",
        f"trainer.rollout_data_dir={run / 'rollout_data'}"
        if spec.method != "EVAL"
        else "trainer.rollout_data_dir=null",
    ]


def normalise_override(text: str, known_plus: tuple[str, ...] = ("data.gen_batch_size",)) -> str:
    """Accept the official ``+data.gen_batch_size=...`` although the kit's config defines the key."""
    for key in known_plus:
        if text.startswith(f"+{key}="):
            return text[1:]
    return text


def all_overrides(spec: RunSpec) -> list[str]:
    return preset_overrides(spec) + [normalise_override(o) for o in spec.overrides]


def compose(overrides: list[str]) -> DictConfig:
    """verl's ``ppo_trainer`` + the kit's keys, with ``overrides``; unknown keys raise ``UserError``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR.resolve()), version_base=None):
            config = hydra_compose(config_name=CONFIG_NAME, overrides=overrides)
    except Exception as err:  # hydra's override and config errors share no base class
        if isinstance(err, OmegaConfBaseException) or type(err).__module__.startswith("hydra"):
            raise UserError(
                f"invalid verl config override: {err} (check the key against the config `--dry-run` prints)"
            ) from None
        raise
    finally:
        GlobalHydra.instance().clear()
    return config


def resolve_pkg_paths(config: DictConfig) -> DictConfig:
    """Turn ``pkg://module`` paths (custom dataset class, reward function) into file paths."""
    import importlib

    for section in (config.data.custom_cls, config.custom_reward_function):
        path = section.get("path")
        if isinstance(path, str) and path.startswith("pkg://"):
            module = importlib.import_module(path[len("pkg://") :])
            section.path = str(Path(module.__file__).resolve())
    return config


def build_config(spec: RunSpec) -> DictConfig:
    config = compose(all_overrides(spec))
    OmegaConf.resolve(config)
    return resolve_pkg_paths(config)


def command_line(spec: RunSpec) -> str:
    """The equivalent command: the kit's Hydra entry point with every override."""
    lines = ["python -m spo_helpers.verl_glue.main", *(shlex.quote(o) for o in all_overrides(spec))]
    return " \\\n    ".join(lines)


def dry_run_text(spec: RunSpec, config: DictConfig) -> str:
    """What ``--dry-run`` prints: the resolved verl config, then the equivalent command."""
    return OmegaConf.to_yaml(config) + "\n# command\n" + command_line(spec) + "\n"
