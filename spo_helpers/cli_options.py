"""Command-line options shared by the verl stages (estimate, train), and the flag-spelling rule of every stage.

The official scripts take environment variables (OUTPUT_DIR, MODEL_PATH, EXP_NAME, N_VAL, RESPONSE_LENGTH,
DEBUG, ...); every such variable is also a flag here, and the environment gives the flag's default.
Every long flag is accepted in both spellings, ``--output_dir`` and ``--output-dir`` (``StageParser``).
"""

from __future__ import annotations

import argparse
import os
import re

from spo_helpers.backends import BACKENDS, DEVICES, PRESETS
from spo_helpers.errors import UserError

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off", "")


HYDRA_GROUPS = (
    "preset",
    "method",
    "agent",
    "debug",
    "preset_method",
    "preset_agent",
    "regime",
    "regime_method",
    "schedule",
)
"""The kit's config groups: ``agent=tools`` is an override although its key has no dot."""
_OVERRIDE = re.compile(r"^[+~]{0,2}([A-Za-z_][\w@/-]*)((\.[\w@/-]+)*)=")


def is_override(token: str) -> bool:
    """Whether ``token`` is a Hydra override: ``key.path=value`` (a dotted key), ``+key=...`` / ``~key``, or a config
    group choice (``agent=tools``). ``AIME24=/data/a.parquet`` (a benchmark) is not."""
    if token.startswith(("+", "~")) and not token.startswith("--"):
        return True
    match = _OVERRIDE.match(token)
    return bool(match) and (bool(match.group(2)) or match.group(1) in HYDRA_GROUPS)


class StageHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``spo <verb> --help`` on one screen: the usage line names the positionals only, each option is listed under
    its short and first long spelling (``StageParser`` accepts the other long one too), the description as written."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 34, width: int | None = None):
        super().__init__(prog, indent_increment, max_help_position, width)

    def _format_usage(self, usage, actions, groups, prefix):
        if usage is None:
            positionals = [
                self._format_args(action, self._get_default_metavar_for_positional(action))
                for action in actions
                if not action.option_strings and action.help is not argparse.SUPPRESS
            ]
            usage = " ".join(["%(prog)s", "[options]", *positionals])
        return super()._format_usage(usage, actions, groups, prefix)

    def _format_action_invocation(self, action):
        if not action.option_strings:
            return super()._format_action_invocation(action)
        short = [name for name in action.option_strings if not name.startswith("--")]
        long = [name for name in action.option_strings if name.startswith("--")][:1]
        names = ", ".join(short + long)
        if action.nargs == 0:
            return names
        return f"{names} {self._format_args(action, self._get_default_metavar_for_optional(action))}"


class StageParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that accepts each long option with underscores and with dashes, and Hydra overrides
    anywhere on the line (``parse_stage_args``)."""

    def parse_stage_args(self, argv: list[str]) -> argparse.Namespace:
        """``parse_intermixed_args``, with every Hydra override collected into ``overrides`` in its order, wherever
        it stands: also after an option whose value is optional (``--small_batch``) or a list (``--train_files``),
        which would otherwise take it as their value. An option's one required value is left to it."""
        if not any(a.dest == "overrides" for a in self._actions):
            return self.parse_intermixed_args(argv)
        single = {
            option
            for action in self._actions
            if action.option_strings and action.nargs is None and action.const is None
            for option in action.option_strings
        }
        kept, overrides = [], []
        for index, token in enumerate(argv):
            takes_value = index > 0 and argv[index - 1].split("=", 1)[0] in single and "=" not in argv[index - 1]
            if not takes_value and is_override(token):
                overrides.append(token)
            else:
                kept.append(token)
        args = self.parse_intermixed_args(kept)
        args.overrides = [*overrides, *(args.overrides or [])]
        return args

    def add_argument(self, *names, **kwargs):
        spelled = list(names)
        for name in names:
            if isinstance(name, str) and name.startswith("--"):
                for other in (name.replace("_", "-"), "--" + name[2:].replace("-", "_")):
                    if other not in spelled:
                        spelled.append(other)
        if spelled != list(names) and "dest" not in kwargs and all(n.startswith("-") for n in names):
            kwargs["dest"] = names[0].lstrip("-").replace("-", "_")
        return super().add_argument(*spelled, **kwargs)


def env_bool(name: str, default: bool | None = None) -> bool | None:
    value = os.environ.get(name)
    if value is None:
        return default
    if value.strip().lower() in TRUE:
        return True
    if value.strip().lower() in FALSE:
        return False
    raise UserError(f"environment variable {name}={value!r} is not a boolean (use True or False)")


def env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


def parse_bool(text: str) -> bool:
    if text.strip().lower() in TRUE:
        return True
    if text.strip().lower() in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (use True or False)")


ENV_NOTE = "CAPITALS name the environment variable that sets a flag's default."
"""The line of ``spo <verb> --help`` on the flags of ``add_common_arguments``."""


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output_dir", metavar="DIR", default=os.environ.get("OUTPUT_DIR"), help="OUTPUT_DIR (default: runs/)"
    )
    parser.add_argument(
        "--model_path", metavar="PATH", default=os.environ.get("MODEL_PATH"), help="MODEL_PATH (cpu: the tiny world)"
    )
    parser.add_argument("--exp_name", metavar="NAME", default=os.environ.get("EXP_NAME"), help="EXP_NAME")
    parser.add_argument(
        "--n_val", metavar="N", type=int, default=env_int("N_VAL"), help="N_VAL: samples per validation prompt"
    )
    parser.add_argument(
        "--response_length", metavar="N", type=int, default=env_int("RESPONSE_LENGTH"), help="RESPONSE_LENGTH"
    )
    parser.add_argument(
        "--debug",
        metavar="BOOL",
        type=parse_bool,
        default=env_bool("DEBUG", False),
        help="DEBUG: the official script's debug settings (docs/training.md)",
    )
    parser.add_argument(
        "--small_batch",
        metavar="BOOL",
        type=parse_bool,
        nargs="?",
        const=True,
        default=env_bool("SMALL_BATCH", False),
        help="SMALL_BATCH: quick mode, the preset's batch shape divided by 8",
    )
    parser.add_argument("--backend", choices=BACKENDS, default=None, help="default: ray with a GPU, else cpu")
    parser.add_argument(
        "--device", choices=DEVICES, default=None, help="ray backend: cpu = verl's workers as Ray actors on CPU"
    )
    parser.add_argument("--preset", choices=PRESETS, default=None, help="default from backend")
    parser.add_argument("--seed", metavar="N", type=int, default=env_int("SEED") or 0, help="SEED")
    parser.add_argument(
        "--tools",
        choices=("sandbox", "none"),
        default=os.environ.get("TOOLS") or None,
        help="TOOLS: tool use or math only (default: the preset's)",
    )
    parser.add_argument("--assets", metavar="DIR", default=None, help="the CPU world's cache (default: runs/_assets)")
    parser.add_argument("--dry-run", action="store_true", help="print the verl config and command")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="Hydra overrides passed to verl")
