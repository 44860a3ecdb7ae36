"""The offline CPU world: a bundled arithmetic task, an offline tokenizer and a tiny Qwen3 model.

``build_world()`` (``world.build``) makes (or reuses) everything from a seed, without network access;
``world.paths`` says where a world lives and whether it is complete, ``world.summary`` describes one on a
screen; ``spo world`` is the command. Importing this package is cheap: torch, transformers and tokenizers
load only when a world is built or sampled.
"""

from spo_helpers.world.build import build_world
from spo_helpers.world.paths import WorldPaths, default_assets_dir, is_complete, read_manifest
from spo_helpers.world.task import ANSWER_FORMAT, make_task, read_rows, reference_response, write_rows
from spo_helpers.world.warmstart import sample_success_rates

__all__ = [
    "ANSWER_FORMAT",
    "WorldPaths",
    "build_world",
    "default_assets_dir",
    "is_complete",
    "make_task",
    "read_manifest",
    "read_rows",
    "reference_response",
    "sample_success_rates",
    "write_rows",
]
