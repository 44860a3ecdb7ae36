"""A short supervised warm start and a sampling check of per-prompt success rates.

The warm start fits ``chat prompt -> \\boxed{answer}<|im_end|>`` with the loss
on response tokens only, and stops early on purpose: an under-trained policy
solves easy prompts often and hard ones rarely, which leaves RL room to improve
and gives SPO's value tracker a spread of success rates to work with.
In the TIR world some targets are tool traces (``traces.py``): the interpreter's
tokens in them are masked like the prompt, so the loss stays on the model's tokens.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spo_helpers.world.task import reference_response, row_answer, row_content
from spo_helpers.world.tokenizer import chat_text
from spo_helpers.world.traces import encode_trace

IGNORE_INDEX = -100


@dataclass(frozen=True)
class WarmStartConfig:
    """AdamW on response tokens: ``steps`` batches of ``batch_size``, linear warmup then a constant rate."""

    steps: int = 800
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def encode_examples(tokenizer, rows: Sequence[Mapping[str, Any]], targets: Sequence[Sequence[Any]] | None = None):
    """Right-padded ``(input_ids, attention_mask, labels)`` tensors; labels mask the prompt and padding.

    ``targets`` (one list of ``traces.Segment`` per row; default: the boxed answer) give the responses;
    tokens of untrained segments (the interpreter's) are masked like the prompt.
    """
    import torch

    seqs, labels = [], []
    for index, row in enumerate(rows):
        prompt = tokenizer(chat_text(row_content(row)), add_special_tokens=False)["input_ids"]
        if targets is None:
            response = tokenizer(reference_response(row_answer(row)) + tokenizer.eos_token, add_special_tokens=False)
            response = response["input_ids"]
            trained = [True] * len(response)
        else:
            response, trained = encode_trace(tokenizer, targets[index])
        seqs.append(prompt + response)
        labels.append(
            [IGNORE_INDEX] * len(prompt)
            + [t if keep else IGNORE_INDEX for t, keep in zip(response, trained, strict=True)]
        )
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    lab = torch.full((len(seqs), width), IGNORE_INDEX, dtype=torch.long)
    for i, (s, y) in enumerate(zip(seqs, labels, strict=True)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        lab[i, : len(y)] = torch.tensor(y)
    return ids, mask, lab


def default_warm_start(num_train: int, seed: int = 0) -> WarmStartConfig:
    """The kit's warm start: about 18 epochs, clipped to 60..800 steps.

    800 steps on 3000 prompts (about 35 s on 2 cores) leave a mean success of
    0.35-0.55 at temperature 1 (seeds 0-2), easy prompts solved far more often
    than hard ones, and about half the prompts neither always nor never solved.
    Small worlds (a few hundred prompts) get under 100 steps; the model then
    memorises more and the difficulty gradient flattens, but a spread remains.

    The TIR world (half the targets tool traces) uses the same schedule: 800 steps leave tool calls
    clearly better than direct answers; 1200 steps let the model memorise the training answers (direct
    success on the hardest prompts rises from 0.14 to 0.46, validation accuracy falls from 0.44 to 0.32),
    which takes most of the tool's advantage away (docs/tools.md, "The CPU world with tools").
    """
    base = WarmStartConfig(seed=seed)
    steps = int(np.clip(round(18 * num_train / base.batch_size), 60, base.steps))
    return dataclasses.replace(base, steps=steps)


def _lr_factor(step: int, cfg: WarmStartConfig) -> float:
    return min(1.0, (step + 1) / max(1, cfg.warmup_steps))


def warm_start(
    model,
    tokenizer,
    rows: Sequence[Mapping[str, Any]],
    cfg: WarmStartConfig = WarmStartConfig(),
    *,
    progress: bool = True,
    targets: Sequence[Sequence[Any]] | None = None,
) -> list[float]:
    """Train ``model`` in place on the reference responses of ``rows`` (or ``targets``); the loss per step."""
    import torch
    from tqdm.auto import tqdm

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    ids, mask, labels = encode_examples(tokenizer, rows, targets)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    model.train()
    losses: list[float] = []
    order = torch.randperm(len(rows), generator=gen)
    cursor = 0
    bar = tqdm(range(cfg.steps), desc="warm start", disable=not progress, leave=False, mininterval=1.0)
    for _ in bar:
        if cursor + cfg.batch_size > len(order):
            order, cursor = torch.randperm(len(rows), generator=gen), 0
        idx = order[cursor : cursor + cfg.batch_size]
        cursor += cfg.batch_size
        width = int(mask[idx].sum(1).max())
        out = model(input_ids=ids[idx, :width], attention_mask=mask[idx, :width], labels=labels[idx, :width])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(out.loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    bar.close()
    model.eval()
    return losses


def score_response(response: str, ground_truth: str) -> float:
    """verl's DAPO reward with strict box verification: 1.0 or -1.0."""
    from verl.utils.reward_score.math_dapo import compute_score

    return float(compute_score(response, ground_truth, strict_box_verify=True)["score"])


def model_success_rates(
    model,
    tokenizer,
    rows: Sequence[Mapping[str, Any]],
    *,
    n: int = 8,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 16,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """Per-row share of ``n`` sampled responses that score > 0 (an in-memory model and tokenizer)."""
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    model.eval()
    pad = tokenizer.pad_token_id
    rates = np.zeros(len(rows), dtype=np.float64)
    greedy = temperature <= 0
    for start in tqdm(range(0, len(rows), batch_size), desc="sampling", disable=not progress, leave=False):
        chunk = rows[start : start + batch_size]
        prompts = [tokenizer(chat_text(row_content(r)), add_special_tokens=False)["input_ids"] for r in chunk]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding: the response starts right after every prompt
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        sampling = {"top_k": None} if greedy else {"temperature": temperature, "top_p": top_p, "top_k": 0}
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=not greedy,
                num_return_sequences=1 if greedy else n,
                max_new_tokens=max_new_tokens,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=pad,
                **sampling,
            )
        texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        per_row = 1 if greedy else n
        for i, row in enumerate(chunk):
            answer = row_answer(row)
            hits = [score_response(t, answer) > 0 for t in texts[i * per_row : (i + 1) * per_row]]
            rates[start + i] = float(np.mean(hits))
    return rates


def sample_success_rates(
    model_dir: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    n: int = 8,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 16,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """Per-row success rate of ``n`` samples from the model saved in ``model_dir`` (``temperature`` 0: greedy)."""
    import torch

    from spo_helpers.world.model import load_model

    torch.set_num_threads(min(2, torch.get_num_threads()))
    model, tokenizer = load_model(model_dir)
    return model_success_rates(
        model,
        tokenizer,
        rows,
        n=n,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
    )


def spread_summary(rates: np.ndarray, difficulties: Sequence[int] | None = None) -> dict[str, Any]:
    """Mean success, shares of all-fail / all-pass / mixed prompts and the mean per difficulty."""
    r = np.asarray(rates, dtype=np.float64)
    out: dict[str, Any] = {
        "prompts": int(r.size),
        "mean_success": float(r.mean()) if r.size else float("nan"),
        "share_all_fail": float((r == 0).mean()) if r.size else float("nan"),
        "share_all_pass": float((r == 1).mean()) if r.size else float("nan"),
        "share_mixed": float(((r > 0) & (r < 1)).mean()) if r.size else float("nan"),
    }
    if difficulties is not None:
        d = np.asarray(difficulties)
        out["mean_by_difficulty"] = {str(int(k)): round(float(r[d == k].mean()), 4) for k in np.unique(d)}
    return out
