"""The command line's rules for every verb: each long flag in both spellings (``--output_dir`` and
``--output-dir``) and Hydra overrides anywhere on the line (``StageParser``). The verl stages' flags themselves
come from their settings (``run_settings``).
"""

from __future__ import annotations

import argparse
import re

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
