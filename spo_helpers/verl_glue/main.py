"""Hydra entry point: ``python -m spo_helpers.verl_glue.main key=value ...``.

The command ``spo train --dry-run`` prints. It composes the kit's config (verl's
``ppo_trainer`` plus the SPO keys) with the overrides and runs it.
"""

from __future__ import annotations

import sys

from omegaconf import OmegaConf

from spo_helpers.verl_glue.config import compose, resolve_pkg_paths
from spo_helpers.verl_glue.runner import run_training, write_run_config


def main(argv: list[str] | None = None) -> int:
    config = compose(list(sys.argv[1:] if argv is None else argv))
    OmegaConf.resolve(config)
    config = resolve_pkg_paths(config)
    write_run_config(config)
    run_training(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
