"""Does the rollout generate with the trained weights? A run's greedy validation outputs against Hugging Face
``generate()`` on its checkpoint of the same step.

verl's rollout engines (vLLM on GPU nodes, and on CPU through vLLM's CPU build) hold their own copy of the model,
loaded from the FSDP actor before each generation (the hybrid engine's weight sync). If that sync silently failed,
training would go on sampling from stale or random weights (vLLM starts from dummy weights). This check reads a
validation dump written by greedy decoding (``actor_rollout_ref.rollout.val_kwargs``: ``temperature=0``, ``n=1``,
``do_sample=False``), merges the checkpoint of that step into a Hugging Face folder with verl's own model merger
(``python -m verl.model_merger merge --backend fsdp``), decodes the same prompts greedily with ``generate()`` and
compares the texts. Equal outputs for every prompt: the rollout generated with the weights the actor saved. The
initial model (``actor_rollout_ref.model.path``) decodes the same prompts too: on the prompts where training
changed the greedy answer, the rollout must side with the checkpoint, so a rollout stuck on the initial weights
fails even where most answers did not change.

A bf16 rollout (vLLM's default) can differ from a float32 ``generate()`` by rounding on a few prompts;
``--min_share`` sets the share that must agree (default: all; ``actor_rollout_ref.rollout.dtype=float32`` makes the
rollout decode as ``generate()`` does).

For runs without tools only: a tool run's responses hold interpreter output that ``generate()`` does not produce.

    python -m spo_helpers.verl_glue.rollout_check RUN_DIR [--step N] [--limit 64] [--min_share 1.0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from spo_helpers.errors import USER_ERRORS, UserError, report_error
from spo_helpers.formats.checkpoints import ACTOR_DIR
from spo_helpers.formats.checkpoints import step_dir as checkpoint_step_dir
from spo_helpers.formats.layout import RunLayout
from spo_helpers.formats.run_config import read_run_config


@dataclass(frozen=True)
class Agreement:
    """How the rollout's greedy answers compare with ``generate()`` on the checkpoint and on the initial model.

    ``moved``: prompts whose greedy answer training changed (checkpoint != initial model); ``moved_like_checkpoint``
    and ``moved_like_initial``: on those, how often the rollout answered as each.
    """

    step: int
    matched: int
    compared: int
    moved: int
    moved_like_checkpoint: int
    moved_like_initial: int
    differences: list[dict[str, str]] = field(default_factory=list)

    def passes(self, min_share: float = 1.0) -> bool:
        """At least ``min_share`` of the answers as the checkpoint's, and on the changed ones more often the
        checkpoint's than the initial model's."""
        enough = self.compared > 0 and self.matched >= min_share * self.compared
        return enough and (self.moved == 0 or self.moved_like_checkpoint > self.moved_like_initial)

    def summary(self) -> str:
        return (
            f"greedy rollout = HF generate() on the step-{self.step} checkpoint for {self.matched}/{self.compared} "
            f"prompts; training changed {self.moved} of the answers, of which the rollout gave "
            f"{self.moved_like_checkpoint} as the checkpoint and {self.moved_like_initial} as the initial model"
        )


def merge_actor(step_dir: Path, target: Path) -> Path:
    """The checkpoint's FSDP actor as a Hugging Face folder (verl's model merger)."""
    from verl.model_merger.base_model_merger import ModelMergerConfig
    from verl.model_merger.fsdp_model_merger import FSDPModelMerger

    actor = step_dir / ACTOR_DIR
    if not (actor / "huggingface").is_dir():
        raise UserError(f"{actor}: not a verl FSDP checkpoint (no huggingface/ folder)")
    config = ModelMergerConfig(
        operation="merge",
        backend="fsdp",
        local_dir=str(actor),
        target_dir=str(target),
        hf_model_config_path=str(actor / "huggingface"),
    )
    merger = FSDPModelMerger(config)
    merger.merge_and_save()
    merger.cleanup()
    return target


def prompt_ids_by_text(config, tokenizer) -> dict[str, list[int]]:
    """The run's validation prompts as token ids (verl's dataset, as the trainer builds it), keyed by the text
    verl's validation dump writes for them (decoded without special tokens)."""
    from verl.trainer.main_ppo import create_rl_dataset

    dataset = create_rl_dataset(config.data.val_files, config.data, tokenizer, None, is_train=False)
    out = {}
    for index in range(len(dataset)):
        item = dataset[index]
        ids = item["input_ids"][item["attention_mask"].bool()].tolist()
        out.setdefault(tokenizer.decode(ids, skip_special_tokens=True), ids)
    return out


def greedy_agreement(run_dir: str | Path, step: int | None = None, limit: int = 64) -> Agreement:
    """Compare the first ``limit`` lines of the step's validation dump with ``generate()`` on its checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    layout = RunLayout(Path(run_dir))
    config = OmegaConf.create(read_run_config(layout.root, required=True))
    val = config.actor_rollout_ref.rollout.val_kwargs
    if float(val.temperature) != 0.0 or int(val.n) != 1:
        raise UserError(
            f"{layout.config}: validation samples at temperature {val.temperature} with n={val.n}; the check needs "
            "greedy validation (actor_rollout_ref.rollout.val_kwargs.temperature=0 val_kwargs.n=1 "
            "val_kwargs.do_sample=false)"
        )
    if step is None:
        dumps = sorted(layout.validation_data.glob("*.jsonl"), key=lambda p: int(p.stem))
        if not dumps:
            raise UserError(f"{layout.validation_data}: no validation dump")
        step = int(dumps[-1].stem)
    dump = layout.validation_data / f"{step}.jsonl"
    step_dir = checkpoint_step_dir(layout.checkpoints, step)
    if not dump.is_file() or not step_dir.is_dir():
        raise UserError(f"{layout.root}: step {step} needs both {dump.name} and checkpoints/{step_dir.name}")
    lines = [json.loads(line) for line in dump.read_text(encoding="utf-8").splitlines() if line.strip()][:limit]
    with tempfile.TemporaryDirectory(prefix="rollout_check_") as scratch:
        merged = merge_actor(step_dir, Path(scratch) / "hf")
        tokenizer = AutoTokenizer.from_pretrained(merged)
        trained = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    initial = AutoModelForCausalLM.from_pretrained(config.actor_rollout_ref.model.path, dtype=torch.float32).eval()
    prompts = prompt_ids_by_text(config, tokenizer)
    generation = trained.generation_config
    eos = generation.eos_token_id if generation.eos_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos

    def greedy(model, ids: list[int]) -> str:
        with torch.no_grad():
            out = model.generate(
                input_ids=torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False,
                max_new_tokens=int(config.data.max_response_length),
                eos_token_id=eos,
                pad_token_id=pad,
            )
        return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)

    matched = moved = like_checkpoint = like_initial = 0
    differences = []
    for line in lines:
        ids = prompts.get(line["input"])
        if ids is None:
            raise UserError(f"{dump}: a prompt that is not in the run's validation files: {line['input'][:80]!r}")
        text, before = greedy(trained, ids), greedy(initial, ids)
        matched += text == line["output"]
        if text != before:
            moved += 1
            like_checkpoint += line["output"] == text
            like_initial += line["output"] == before
        if text != line["output"] and len(differences) < 3:
            differences.append({"prompt": line["input"], "rollout": line["output"], "generate": text})
    return Agreement(step, matched, len(lines), moved, like_checkpoint, like_initial, differences)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spo_helpers.verl_glue.rollout_check", description=__doc__)
    parser.add_argument("run_dir", help="a run folder with greedy validation dumps and verl FSDP checkpoints")
    parser.add_argument("--step", type=int, default=None, help="the step to check (default: the last dump)")
    parser.add_argument("--limit", type=int, default=64, help="prompts compared (default 64)")
    parser.add_argument(
        "--min_share", type=float, default=1.0, help="share of answers that must equal the checkpoint's (default 1)"
    )
    args = parser.parse_args(argv)
    try:
        result = greedy_agreement(args.run_dir, args.step, args.limit)
    except USER_ERRORS as err:
        return report_error("rollout_check", err)
    print(result.summary())
    for diff in result.differences:
        print(f"  differs: {diff['prompt'][-60:]!r}: rollout {diff['rollout']!r}, generate {diff['generate']!r}")
    return 0 if result.passes(args.min_share) else 1


if __name__ == "__main__":
    sys.exit(main())
