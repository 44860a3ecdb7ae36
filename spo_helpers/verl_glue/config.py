"""Compose verl configs for the kit's runs: config groups, the official variables, free overrides.

The kit's Hydra config lives in ``spo_helpers/verl_glue/config/`` (installed with the package, found
through ``importlib.resources``): ``kit_trainer.yaml`` is verl's ``ppo_trainer`` plus the official recipe's
shared settings and the SPO keys, and a run picks one option of two config groups:

- ``preset``: ``official`` (the official recipe's final train.sh / eval.sh: 1 node x 8 GPUs, vLLM async
  TP 4, Ulysses SP 8, FSDP offload, 8K responses, AIME 24+25 validation n=16), ``paper`` (the paper's
  version: 16K responses, 2 nodes) or ``cpu`` (the bundled tiny world on the in-process CPU backend, or on
  verl's FSDP workers as Ray actors on CPU: ``kit.backend=ray`` with ``trainer.device=cpu``, see ``ray_cpu``);
- ``method``: ``grpo``, ``spo`` or ``eval`` (validation only, for offline value estimation);

and ``preset_method/<preset>_<method>.yaml`` follows from both (batch shapes: GRPO 128x8 / mini 16,
SPO 1024x1 / mini 128 from a 14000-prompt pool, ...). Those files are the one source of every preset's
values: ``python -m spo_helpers.verl_glue.main preset=official method=spo`` and ``spo train --preset
official --method SPO`` compose the same files.

``RunSpec`` holds a run in the official scripts' terms (OUTPUT_DIR, TRAIN_DATA_DIR / DATA_FILE,
MODEL_PATH, EXP_NAME, METHOD, OFFLINE_VALUES, RESPONSE_LENGTH, N_TRAIN, N_VAL, DEBUG, VAL_BEFORE_TRAIN)
plus the backend and its device; ``all_overrides`` turns it into ``preset=… method=… key=value …``, and
``compose`` composes that with verl's own config, so an override naming a key that does not exist fails
before anything runs. The ray backend's CPU mode (``--backend ray --device cpu``) is the ``cpu`` preset with
the keys of ``ray_cpu.settings`` (their one source) replaced: ``device_overrides``.
"""

from __future__ import annotations

import importlib
import shlex
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from spo_helpers.backends import check_choices
from spo_helpers.errors import UserError
from spo_helpers.formats.eval_protocol import protocol, protocol_value
from spo_helpers.formats.layout import RunLayout, estimation_exp_name, training_exp_name
from spo_helpers.verl_glue.agent_loop.settings import agent_loop_file
from spo_helpers.verl_glue.ray_cpu.settings import apply_required_settings, is_ray_cpu, ray_cpu_overrides

CONFIG_NAME = "kit_trainer"
METHODS = ("GRPO", "SPO", "EVAL")
GROUPS = (
    "preset",
    "method",
    "preset_method",
    "agent",
    "preset_agent",
    "regime",
    "regime_method",
    "schedule",
    "debug",
)
TRAIN_METHODS = ("GRPO", "SPO")
"""The methods that train (``EVAL`` is a validation-only run)."""
SCHEDULES = ("sync", "stream", "overprovision")
"""The ``schedule`` config group's options: how rollouts make training steps."""
TOOLS = ("sandbox", "none")
"""``--tools``: tool-integrated reasoning through the sandbox (config option ``agent=tools``) or math only."""
TOOLS_AGENT = {"sandbox": "tools", "none": "none"}
RUN_PARTS = ("checkpoints", "validation_data", "rollout_data", "tensorboard")
"""The run-folder entries the config names (``${spo.run_path:<run_dir>,<part>}``)."""

SMALL_BATCH_DIVISOR = 8
"""``--small_batch``: prompts, mini-batch and pool divided by this (at least 2 prompts and 1 per mini-batch)."""
SMALL_BATCH_MAX_POOL = 1024

DEBUG_OPTIONS = ("train_sh", "eval_sh", "run_spo_sh")
"""``DEBUG=True`` as the official scripts mean it, one ``config/debug/`` option each (``debug_option``)."""


def config_dir() -> Path:
    """The kit's Hydra config folder, from the installed package (editable or wheel)."""
    return Path(str(files("spo_helpers.verl_glue") / "config"))


CONFIG_DIR = config_dir()


# --- resolvers: the config's run paths and arithmetic -------------------------------------------------


def _run_dir(output_dir: str, exp_name: str) -> str:
    return str(RunLayout.of(output_dir, exp_name).root)


def _run_path(run_dir: str, part: str) -> str:
    if part not in RUN_PARTS:
        raise ValueError(f"spo.run_path: unknown run-folder entry {part!r}; one of {', '.join(RUN_PARTS)}")
    return str(getattr(RunLayout(Path(run_dir)), part))


def _exp_name(method: str, preset: str) -> str:
    return estimation_exp_name(None) if str(method).upper() == "EVAL" else training_exp_name(method, preset)


def largest_divisor_at_most(value: int, cap: int) -> int:
    """The largest divisor of ``value`` that is at most ``cap``."""
    return max(d for d in range(1, min(int(value), int(cap)) + 1) if int(value) % d == 0)


def _micro_batch(mini_batch: int, n: int, cap: int, ranks: int = 1) -> int:
    """Micro-batch for a PPO mini-batch of ``mini_batch`` prompts x ``n`` responses split over ``ranks``
    data-parallel ranks: it must divide each rank's share (verl's check)."""
    return largest_divisor_at_most(int(mini_batch) * int(n) // int(ranks), cap)


def _eval_value(preset: str, field: str):
    """``${spo.eval:<preset>,<field>}``: the evaluation protocol's sampling settings (formats/eval_protocol.py)."""
    return protocol_value(preset, field)


def _eval_n(preset: str, method: str) -> int:
    """``${spo.eval_n:<preset>,<method>}``: samples per prompt, the estimate n for method EVAL, else validate n."""
    return protocol(preset).n("estimate" if str(method).upper() == "EVAL" else "validate")


RESOLVERS = {
    "spo.eval": _eval_value,
    "spo.eval_n": _eval_n,
    "spo.run_dir": _run_dir,
    "spo.run_path": _run_path,
    "spo.exp_name": _exp_name,
    "spo.micro_batch": _micro_batch,
    "spo.add": lambda a, b: a + b,
    "spo.mul": lambda a, b: a * b,
    "spo.agent_loop_file": agent_loop_file,
}


def register_resolvers() -> None:
    """Register the ``${spo.*:...}`` resolvers the kit's YAML uses (idempotent)."""
    for name, function in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


register_resolvers()


# --- the official variables -------------------------------------------------------------------------


@dataclass
class RunSpec:
    """One training or estimation run, in the official scripts' terms.

    ``None`` (or empty) leaves a value to the chosen preset and method.
    """

    method: str = "GRPO"
    preset: str = "cpu"
    backend: str | None = None  # default: the preset's (cpu for the cpu preset, ray otherwise)
    device: str | None = None  # ray backend: cuda (default) or cpu (its CPU mode: verl's workers on CPU, cpu preset)
    output_dir: str = "runs"
    exp_name: str = "run"
    model_path: str = ""
    train_files: list[str] = field(default_factory=list)
    val_files: list[str] = field(default_factory=list)
    offline_values: str | None = None
    response_length: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    debug: bool = False  # DEBUG: what the official script of the preset and method does with it (debug_option)
    small_batch: bool = False  # the kit's quick mode: the preset's batch shape divided by 8
    val_before_train: bool | None = None
    total_steps: int | None = None
    seed: int = 0
    tools: str | None = None  # sandbox | none; default: the preset's (official, paper: sandbox; cpu: none)
    overrides: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.method = self.method.upper()
        if self.tools is not None and self.tools not in TOOLS:
            raise UserError(f"--tools must be one of {', '.join(TOOLS)}, got {self.tools!r}")
        if self.method not in METHODS:
            raise UserError(f"METHOD must be one of {', '.join(METHODS)}, got {self.method!r}")
        check_choices(self.backend, self.preset, self.device)
        refusal = device_refusal(self.preset, self.backend or ("cpu" if self.preset == "cpu" else "ray"), self.device)
        if refusal:
            raise UserError(refusal)
        if self.method == "SPO" and self.n_train not in (None, 1):
            raise UserError(f"METHOD=SPO samples one response per prompt; N_TRAIN={self.n_train} must be 1")
        if self.method == "GRPO" and self.n_train == 1:
            raise UserError(
                "METHOD=GRPO with N_TRAIN=1 has groups of one: verl gives them mean 0 and std 1, so the advantage is "
                "the raw reward (no baseline). Use N_TRAIN>=2, or METHOD=SPO for single-response training"
            )

    @property
    def uses_tools(self) -> bool:
        """Whether the run is tool-integrated: ``tools``, else the preset's default."""
        return tools_on(self.tools, self.preset)

    @property
    def ray_cpu(self) -> bool:
        """The ray backend's CPU mode: verl's Ray workers on CPU (``--backend ray --device cpu``)."""
        return self.backend == "ray" and self.device == "cpu"

    @property
    def layout(self) -> RunLayout:
        """``$OUTPUT_DIR/spo/$EXP_NAME``, the official layout."""
        return RunLayout.of(self.output_dir, self.exp_name)

    @property
    def run_dir(self) -> Path:
        return self.layout.root


def device_refusal(preset: str, backend: str, device: str | None) -> str | None:
    """Why workers on CPU cannot run ``preset`` (None when they can): one message for ``spo`` and the Hydra app.

    The ray backend's CPU mode (``--device cpu``, ``trainer.device=cpu``) runs the ``cpu`` preset's tiny world;
    the GPU presets' models, lengths and parallelism need GPU nodes.
    """
    if device == "cpu" and preset != "cpu" and backend == "ray":
        return (
            f"--device cpu (trainer.device=cpu) runs verl's workers on the tiny world (--preset cpu); the {preset} "
            "preset needs GPU nodes"
        )
    return None


def _list(values) -> str:
    return "[" + ",".join(f'"{v}"' for v in values) + "]"


def group_overrides(spec: RunSpec) -> list[str]:
    """The config-group choices: ``preset=<preset> method=<method>``, ``agent=<...>`` when tools are chosen, and
    ``+debug=<option>`` with DEBUG=True."""
    out = [f"preset={spec.preset}", f"method={spec.method.lower()}"]
    if spec.tools is not None:
        out.append(f"agent={TOOLS_AGENT[spec.tools]}")
    if spec.debug:
        out.append(f"+debug={debug_option(spec.preset, spec.method)}")
    return out


def group_file(group: str, option: str) -> Path:
    """``config/<group>/<option>.yaml``."""
    return CONFIG_DIR / group / f"{option}.yaml"


def tools_on(tools: str | None, preset: str) -> bool:
    """Whether a run is tool-integrated: ``tools`` (``sandbox`` | ``none``), else the preset's default."""
    return (tools or preset_default_tools(preset)) == "sandbox"


def preset_default_tools(preset: str) -> str:
    """``sandbox`` or ``none``: the ``/agent`` option in the preset's defaults list (or the preset it extends)."""
    defaults = OmegaConf.load(group_file("preset", preset)).get("defaults") or []
    for entry in defaults:
        if isinstance(entry, str) and entry != "_self_":
            return preset_default_tools(entry)
        if hasattr(entry, "get") and entry.get("/agent") is not None:
            agent = str(entry.get("/agent"))
            return next(tool for tool, option in TOOLS_AGENT.items() if option == agent)
    return "none"


def debug_option(preset: str, method: str) -> str:
    """The ``config/debug/`` option DEBUG=True selects: what the official script behind the preset does with it.

    - ``eval_sh`` (estimation, every preset): eval.sh's 16 prompts per batch and validation batch of 16;
    - ``run_spo_sh`` (paper preset, training): the paper's first release (run_spo.sh): 8 prompts x 1 response,
      mini-batch 8, candidate pool 8, 1024-token responses, for either method;
    - ``train_sh`` (otherwise): train.sh only passes ``trainer.debug=True`` on (Ray's legacy debugger).
    """
    if method.upper() == "EVAL":
        return "eval_sh"
    if preset == "paper":
        return "run_spo_sh"
    return "train_sh"


def small_batch_overrides(spec: RunSpec) -> list[str]:
    """``--small_batch``: the preset's batch shape divided by 8 (prompts >= 2, mini-batch >= 1, pool <= 1024)."""
    shape = OmegaConf.load(group_file("preset_method", f"{spec.preset}_{spec.method.lower()}"))
    prompts = max(int(shape.data.train_batch_size) // SMALL_BATCH_DIVISOR, 2)
    mini = max(int(shape.actor_rollout_ref.actor.ppo_mini_batch_size) // SMALL_BATCH_DIVISOR, 1)
    out = [f"data.train_batch_size={prompts}", f"actor_rollout_ref.actor.ppo_mini_batch_size={mini}"]
    pool = shape.data.get("gen_batch_size")
    if pool:
        out.append(f"data.gen_batch_size={min(int(pool), SMALL_BATCH_MAX_POOL)}")
    return out


def variable_overrides(spec: RunSpec) -> list[str]:
    """The Hydra overrides the official variables stand for; unset ones leave the groups' values."""
    out = [
        f"kit.output_dir={spec.output_dir}",
        f"trainer.experiment_name={spec.exp_name}",
        f"kit.seed={spec.seed}",
        f"actor_rollout_ref.model.path={spec.model_path}",
        f"data.train_files={_list(spec.train_files)}",
    ]
    if spec.backend is not None:
        out.append(f"kit.backend={spec.backend}")
    if spec.val_files:
        out.append(f"data.val_files={_list(spec.val_files)}")
    if spec.offline_values:
        out.append(f"trainer.spo.offline_values={spec.offline_values}")
    if spec.response_length:
        out.append(f"data.max_response_length={spec.response_length}")
    if spec.small_batch:
        out += small_batch_overrides(spec)
    if spec.n_train:
        out.append(f"actor_rollout_ref.rollout.n={spec.n_train}")
    if spec.n_val:
        out.append(f"actor_rollout_ref.rollout.val_kwargs.n={spec.n_val}")
    if spec.val_before_train is not None and spec.method != "EVAL":
        out.append(f"trainer.val_before_train={spec.val_before_train}")
    if spec.total_steps:
        out.append(f"trainer.total_training_steps={spec.total_steps}")
    return out


def device_overrides(spec: RunSpec) -> list[str]:
    """Where the workers run, when it is not the preset's own choice.

    The ray backend's CPU mode: the keys a CPU cannot run otherwise, two ranks and Ray's CPU count
    (``ray_cpu.settings``, their one source; they replace the preset's values for the same keys). The ``cpu``
    preset on the ray backend otherwise is the tiny world on GPU workers (a smoke run): ``trainer.device=cuda``,
    since ``trainer.device=cpu`` with ``kit.backend=ray`` is what selects the CPU mode.
    """
    if spec.ray_cpu:
        return ray_cpu_overrides()
    if spec.backend == "ray" and spec.preset == "cpu":
        return ["trainer.device=cuda"]
    return []


def normalise_override(text: str, known_plus: tuple[str, ...] = ("data.gen_batch_size",)) -> str:
    """Accept the official ``+data.gen_batch_size=...`` although the kit's config defines the key."""
    for key in known_plus:
        if text.startswith(f"+{key}="):
            return text[1:]
    return text


def all_overrides(spec: RunSpec) -> list[str]:
    """Group choices, the official variables, the device, then the free overrides (later ones win)."""
    free = [normalise_override(o) for o in spec.overrides]
    return group_overrides(spec) + variable_overrides(spec) + device_overrides(spec) + free


# --- composition ------------------------------------------------------------------------------------


def compose(overrides: list[str]) -> DictConfig:
    """verl's ``ppo_trainer`` + the kit's groups and keys, with ``overrides``; unknown keys raise ``UserError``."""
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
    for section in (config.data.custom_cls, config.custom_reward_function):
        path = section.get("path")
        if isinstance(path, str) and path.startswith("pkg://"):
            module = importlib.import_module(path[len("pkg://") :])
            section.path = str(Path(module.__file__).resolve())
    return config


def schedule_refusal(config: DictConfig) -> str | None:
    """Why ``kit.schedule`` cannot run with this config, or None. The streamed and over-provisioned schedules run
    a tool agent loop for SPO and GRPO: the CPU backend's (``verl_glue/agent_loop/stream_engine.py``) or, on the
    ray backend in async rollout mode, verl's agent-loop workers with their vLLM servers
    (``verl_glue/agent_loop/agent_loop_stream.py``); elsewhere a run keeps the synchronous loop."""
    policy = str(config.kit.get("schedule", {}).get("policy", "sync"))
    if policy == "sync":
        return None
    if policy not in SCHEDULES:
        return f"kit.schedule.policy={policy} is not a schedule: choose schedule={', '.join(SCHEDULES)}"
    where = []
    if str(config.kit.method) not in TRAIN_METHODS:
        where.append(f"method=spo or grpo (this run: {str(config.kit.method).lower()})")
    mode = str(config.actor_rollout_ref.rollout.get("mode", "sync"))
    if str(config.kit.backend) == "ray" and mode != "async":
        where.append(f"verl's agent-loop rollout, actor_rollout_ref.rollout.mode=async (this run: {mode})")
    if not config.actor_rollout_ref.rollout.multi_turn.get("enable", False):
        where.append("tools (--tools sandbox or agent=tools)")
    if where:
        return f"schedule={policy} needs " + ", ".join(where) + "; use schedule=sync (the default) otherwise"
    return None


def finalise(config: DictConfig) -> DictConfig:
    """Resolve every interpolation in place and turn ``pkg://`` paths into files: what the trainer gets.

    A config in the ray backend's CPU mode (``kit.backend=ray``, ``trainer.device=cpu``) first gets the keys a
    CPU cannot run otherwise (``ray_cpu.settings.apply_required_settings``; before resolving, so values that
    follow them, such as the reference policy's strategy, follow), so ``trainer.device=cpu`` alone on the
    Hydra app is enough and the run's ``config.yaml`` and identity hold what runs.
    """
    if config.kit.get("regime", "none") != "none" and config.kit.preset != "cpu":
        raise UserError(
            f"regime={config.kit.regime} is a setting of the CPU world (preset=cpu); the {config.kit.preset} preset "
            "has its own schedule"
        )
    refusal = schedule_refusal(config)
    if refusal:
        raise UserError(refusal)
    if is_ray_cpu(config):
        refusal = device_refusal(str(config.kit.preset), "ray", "cpu")
        if refusal:
            raise UserError(refusal)
        apply_required_settings(config)
    OmegaConf.resolve(config)
    return resolve_pkg_paths(config)


def build_config(spec: RunSpec) -> DictConfig:
    """The resolved verl config of ``spec``."""
    return finalise(compose(all_overrides(spec)))


def command_line(spec: RunSpec) -> str:
    """The equivalent command: the kit's Hydra entry point with the group choices and every override."""
    lines = ["python -m spo_helpers.verl_glue.main", *(shlex.quote(o) for o in all_overrides(spec))]
    return " \\\n    ".join(lines)


def dry_run_text(spec: RunSpec, config: DictConfig) -> str:
    """What ``--dry-run`` prints: the resolved verl config, then the equivalent command."""
    return OmegaConf.to_yaml(config) + "\n# command\n" + command_line(spec) + "\n"
