"""CPU throughput of the tiny world: generation and one training step, in response tokens per second.

(a) Generation. The kit's ``CPURollout`` samples a batch of ``--batch`` training prompts
(left-padded, one ``generate()`` call with a KV cache, ``--new_tokens`` new tokens at
temperature 1, as in the CPU preset), repeated ``--gen_repeats`` times. The baseline is
the naive loop: the same model in the same process calls ``generate()`` once per prompt
with the same sampling settings. Tokens are response tokens up to and including EOS,
counted with verl's ``get_response_mask`` on both sides (rows that stop early still take
their slot in the batch, so the batched figure is a fair, not a padded, count).

(b) Training. ``spo_helpers.stages.train.train`` runs ``--steps`` steps of GRPO (16 prompts x 8)
and of SPO (128 prompts x 1, offline values ``none``) on the CPU preset, i.e. the same 128
samples per step, with validation and checkpoints off. Per-phase seconds come from each
run's ``metrics.jsonl`` (``timing_s/*``), averaged over the steps after the first
``--warmup``; tokens/s is response tokens per step over ``timing_s/step``. SPO pays an
extra log-prob pass after the update (``timing_s/spo_rho``: this step's responses, plus
the stored responses of revisited prompts, for the drift D), so its step is slower; the
figure is the SPO / GRPO step-time ratio.

    python bench/bench_throughput.py [--batch 128] [--new_tokens 16] [--steps 20] [--part gen train]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from results_line import emit

PHASES = ("gen", "old_log_prob", "update_actor", "spo_rho")


# ---------------------------------------------------------------- (a) generation
def prompt_batch(tokenizer, rows, width: int):
    """Left-padded prompt ids and mask, as verl's data loader hands them to the rollout."""
    import torch

    from spo_helpers.world.task import row_content
    from spo_helpers.world.tokenizer import chat_text

    encoded = [tokenizer(chat_text(row_content(r)), add_special_tokens=False)["input_ids"] for r in rows]
    width = max(width, *(len(p) for p in encoded))
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, p in enumerate(encoded):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    return encoded, ids, mask


def bench_generation(world, batch: int, new_tokens: int, repeats: int, naive_prompts: int) -> None:
    import torch
    from omegaconf import OmegaConf
    from verl import DataProto
    from verl.utils.torch_functional import get_response_mask

    from spo_helpers.verl_glue.cpu_backend import CPURollout
    from spo_helpers.world.model import load_model
    from spo_helpers.world.task import read_rows

    model, tokenizer = load_model(world.model_dir)
    generation = model.generation_config
    eos = generation.eos_token_id if generation.eos_token_id is not None else tokenizer.eos_token_id
    eos_ids = list(eos) if isinstance(eos, list | tuple) else [int(eos)]
    pad = generation.pad_token_id if generation.pad_token_id is not None else tokenizer.pad_token_id
    rows = read_rows(world.train_file)[:batch]
    encoded, ids, mask = prompt_batch(tokenizer, rows, width=64)
    config = OmegaConf.create(
        {
            "response_length": new_tokens,
            "temperature": 1.0,
            "top_p": 1.0,
            "top_k": -1,
            "do_sample": True,
            "val_kwargs": {"temperature": 0.6, "top_p": 0.95, "top_k": -1, "do_sample": True},
        }
    )
    rollout = CPURollout(model, config, eos_ids, pad, seed=0)

    def batched(n_rows: int) -> int:
        data = DataProto.from_dict(tensors={"input_ids": ids[:n_rows], "attention_mask": mask[:n_rows]})
        out = rollout.generate_sequences(data)
        return int(out.batch["attention_mask"][:, ids.shape[1] :].sum())

    def one_at_a_time(prompts) -> int:
        tokens = 0
        with torch.no_grad():
            for p in prompts:
                prompt = torch.tensor([p])
                out = model.generate(
                    input_ids=prompt,
                    attention_mask=torch.ones_like(prompt),
                    max_new_tokens=new_tokens,
                    eos_token_id=eos_ids,
                    pad_token_id=pad,
                    use_cache=True,
                    do_sample=True,
                    temperature=1.0,
                    top_p=1.0,
                    top_k=0,
                )
                tokens += int(get_response_mask(out[:, prompt.shape[1] :], eos_token=eos_ids).sum())
        return tokens

    batched(min(8, batch))  # warm-up
    one_at_a_time(encoded[:2])
    torch.manual_seed(0)
    start = time.perf_counter()
    kit_tokens = sum(batched(batch) for _ in range(repeats))
    kit_s = time.perf_counter() - start
    start = time.perf_counter()
    naive_tokens = one_at_a_time(encoded[:naive_prompts])
    naive_s = time.perf_counter() - start
    kit_rate, naive_rate = kit_tokens / kit_s, naive_tokens / naive_s

    print(f"\n(a) generation: {batch} prompts, <= {new_tokens} new tokens, temperature 1.0")
    header = f"{'':<34} {'prompts':>8} {'tokens':>8} {'seconds':>8} {'tokens/s':>10}"
    print(header)
    print("-" * len(header))
    rows = [
        ("naive, one prompt per generate()", naive_prompts, naive_tokens, naive_s, naive_rate),
        (f"CPURollout, batch {batch} (x{repeats})", batch * repeats, kit_tokens, kit_s, kit_rate),
    ]
    for label, prompts, tokens, seconds, rate in rows:
        print(f"{label:<34} {prompts:>8} {tokens:>8} {seconds:>8.2f} {rate:>10,.0f}")
    print(f"ratio: {kit_rate / naive_rate:.1f}x")
    emit(
        f"generation, CPURollout batch {batch} vs one prompt at a time",
        round(kit_rate),
        "tokens/s",
        round(naive_rate),
        round(kit_rate / naive_rate, 2),
    )


# ---------------------------------------------------------------- (b) training
def step_figures(run_dir: Path, warmup: int) -> dict[str, float]:
    from spo_helpers.core.metric_names import RESPONSE_TOKENS_TOTAL, TIMING_PREFIX, TIMING_STEP
    from spo_helpers.formats.steplog import read_step_log

    records = [r for r in read_step_log(run_dir / "metrics.jsonl") if TIMING_STEP in r["data"]]
    records.sort(key=lambda r: r["step"])
    totals = [float(r["data"].get(RESPONSE_TOKENS_TOTAL, np.nan)) for r in records]
    per_step = np.diff([0.0, *totals])
    kept = [(r["data"], tokens) for r, tokens in zip(records, per_step, strict=True) if r["step"] > warmup]
    if not kept:
        raise SystemExit(f"{run_dir}: no step after the {warmup} warm-up step(s); raise --steps")
    out = {"steps": float(len(kept))}
    out["step"] = float(np.mean([d[TIMING_STEP] for d, _ in kept]))
    for phase in PHASES:
        out[phase] = float(np.mean([d.get(f"{TIMING_PREFIX}{phase}", 0.0) for d, _ in kept]))
    out["other"] = out["step"] - sum(out[p] for p in PHASES)
    out["tokens"] = float(np.mean([t for _, t in kept]))
    out["tokens/s"] = out["tokens"] / out["step"]
    first = [d["spo/first_sampled_ratio"] for d, _ in kept if "spo/first_sampled_ratio" in d]
    out["revisited"] = 1.0 - float(np.mean(first)) if first else float("nan")
    return out


def bench_training(world, steps: int, warmup: int, output: Path) -> None:
    from spo_helpers.stages.train import train

    runs = {}
    overrides = ["trainer.test_freq=-1", "trainer.save_freq=-1"]
    for method in ("GRPO", "SPO"):
        summary = train(
            method,
            output_dir=str(output),
            exp_name=f"throughput_{method.lower()}",
            model_path=str(world.model_dir),
            train_files=[str(world.train_file)],
            val_files=[str(p) for p in world.validation_files],
            offline_values="none" if method == "SPO" else None,
            total_steps=steps,
            val_before_train=False,
            overrides=overrides,
            fresh=True,
        )
        runs[method] = step_figures(summary.run_dir, warmup)

    grpo, spo = runs["GRPO"], runs["SPO"]
    print(f"\n(b) training: 128 samples per step, mean of {int(grpo['steps'])} steps after {warmup} warm-up")
    header = f"{'seconds per step':<22} {'GRPO 16x8':>10} {'SPO 128x1':>10}"
    print(header)
    print("-" * len(header))
    for key in ("gen", "old_log_prob", "update_actor", "spo_rho", "other", "step"):
        print(f"{key:<22} {grpo[key]:>10.3f} {spo[key]:>10.3f}")
    print(f"{'response tokens/step':<22} {grpo['tokens']:>10.0f} {spo['tokens']:>10.0f}")
    print(f"{'tokens/s':<22} {grpo['tokens/s']:>10,.0f} {spo['tokens/s']:>10,.0f}")
    print(f"SPO prompts revisited per step: {spo['revisited']:.1%} (their stored responses join the drift pass)")
    print(f"step time SPO / GRPO: {spo['step'] / grpo['step']:.2f}x")
    emit(
        "training step, SPO 128x1 vs GRPO 16x8 (step time)",
        round(spo["step"], 3),
        "s/step",
        round(grpo["step"], 3),
        round(spo["step"] / grpo["step"], 2),
    )
    emit(
        "training, SPO vs GRPO (response tokens/s)",
        round(spo["tokens/s"]),
        "tokens/s",
        round(grpo["tokens/s"]),
        round(spo["tokens/s"] / grpo["tokens/s"], 2),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", nargs="+", choices=("gen", "train"), default=["gen", "train"])
    parser.add_argument("--batch", type=int, default=128, help="prompts per generate() call")
    parser.add_argument("--new_tokens", type=int, default=16)
    parser.add_argument("--gen_repeats", type=int, default=5, help="batched calls timed")
    parser.add_argument("--naive_prompts", type=int, default=None, help="prompts for the naive loop (default: batch)")
    parser.add_argument("--steps", type=int, default=20, help="training steps per method")
    parser.add_argument("--warmup", type=int, default=1, help="first steps left out of the means")
    parser.add_argument("--output", default=None, help="folder for the training runs (default: a temporary one)")
    parser.add_argument("--assets", default=None)
    parser.add_argument("--quick", action="store_true", help="32 naive prompts, 2 batched calls, 3 training steps")
    args = parser.parse_args()
    if args.quick:
        args.gen_repeats, args.naive_prompts, args.steps = 2, 32, 3
    naive_prompts = min(args.naive_prompts or args.batch, args.batch)

    from spo_helpers.world.build import build_world

    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    world = build_world(args.assets)
    if "gen" in args.part:
        bench_generation(world, args.batch, args.new_tokens, args.gen_repeats, naive_prompts)
    if "train" in args.part:
        if args.output:
            bench_training(world, args.steps, args.warmup, Path(args.output))
        else:
            with tempfile.TemporaryDirectory(prefix="bench_throughput_") as tmp:
                bench_training(world, args.steps, args.warmup, Path(tmp))


if __name__ == "__main__":
    main()
