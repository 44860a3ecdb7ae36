"""Per-step SPO bookkeeping: the official dict-based semantics vs the vectorised tracker.

One step = compute priorities, pick ``batch`` prompts from a candidate pool ∝ weight
without replacement, and update α, β (and visit counts) of the picked prompts. The
official recipe rebuilds its p̂ and weight dicts over every prompt each step and keys
each candidate by its chat prompt's stripped user content; the reference below
re-implements that from its description. Ours reads α, β only at the pool's rows
(prompt rows come from the data loader, no text is touched) and updates the batch
rows in place. Prompts are ~400 characters, like DAPO-Math's.

    python bench/bench_core.py [--prompts 17000 1000000] [--batch 1024] [--pool 14000]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections import defaultdict

import numpy as np

from spo_helpers.core.sampler import PrioritizedSampler, SamplerConfig
from spo_helpers.core.tracker import TrackerConfig, ValueTracker

EPS = 0.05
SUFFIX = "The answer format must be: \\boxed{'The final answer goes here.'}"
FILLER = "Let x, y be positive integers such that the expression below holds; find the smallest value. " * 3


def prompt_text(i: int) -> str:
    return f'Problem {i}. {FILLER}\n\nRemember to put your answer on its own line after "Answer:".\n\n{SUFFIX}'


class OfficialBookkeeping:
    """Dicts keyed by prompt text, rebuilt each step, as in the official trainer."""

    def __init__(self, values: dict[str, list[int]], pool: int, seed: int) -> None:
        n_init = 1 / (1 - 0.875)
        self.keys = list(values)
        self.chats = [[{"role": "user", "content": k + "\n"}] for k in self.keys]
        self.alpha = {k: n_init * (sum(v) + 0.5) / 9 for k, v in values.items()}
        self.beta = {k: n_init * (8 - sum(v) + 0.5) / 9 for k, v in values.items()}
        self.sampled = defaultdict(int)
        self.pool = pool
        self.rng = np.random.default_rng(seed)
        self.perm, self.cursor = np.empty(0, dtype=np.int64), 0
        np.random.seed(seed)  # noqa: NPY002 - the official trainer draws from the global RNG

    def step(self, batch: int, rewards: np.ndarray, drift: np.ndarray) -> list[str]:
        phat = {k: self.alpha[k] / (self.alpha[k] + self.beta[k]) for k in self.keys}
        weight = {k: (phat[k] * (1.0 - phat[k])) ** 0.5 + EPS for k in self.keys}
        if self.cursor + self.pool > len(self.perm):  # the data loader's shuffled epoch, as ours
            self.perm, self.cursor = self.rng.permutation(len(self.keys)), 0
        rows = self.perm[self.cursor : self.cursor + self.pool]
        self.cursor += self.pool
        candidates = [self.chats[i][0]["content"].strip() for i in rows]
        w = np.asarray([float(weight.get(p, 0.0)) for p in candidates], dtype=np.float64)
        probs = w / w.sum()
        picked = np.random.choice(len(candidates), size=batch, replace=batch > len(candidates), p=probs)  # noqa: NPY002
        prompts = [candidates[j] for j in picked.tolist()]
        rho = np.clip(np.power(2.0, -drift / 0.06), 0.875, 0.96)
        alpha = rho * np.array([self.alpha[p] for p in prompts]) + rewards
        beta = rho * np.array([self.beta[p] for p in prompts]) + (1 - rewards)
        for i, p in enumerate(prompts):
            self.alpha[p] = alpha[i].item()
            self.beta[p] = beta[i].item()
            self.sampled[p] += 1
        return prompts


class VectorisedBookkeeping:
    def __init__(self, values: dict[str, list[int]], pool: int | None, batch: int, seed: int) -> None:
        self.tracker = ValueTracker.from_offline_values(values, TrackerConfig(), seed=seed)
        self.sampler = PrioritizedSampler(len(self.tracker), SamplerConfig(batch_size=batch, pool_size=pool, seed=seed))

    def step(self, batch: int, rewards: np.ndarray, drift: np.ndarray) -> list[str]:
        rows = self.sampler.sample(self.tracker)
        prompts = self.tracker.keys_at(rows)
        self.tracker.update(prompts, rewards, drift=drift)
        return prompts


def time_steps(book, batch: int, steps: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    inputs = [(rng.integers(0, 2, batch).astype(np.float64), rng.exponential(0.02, batch)) for _ in range(steps + 1)]
    book.step(batch, *inputs[0])  # warm-up
    start = time.perf_counter()
    for rewards, drift in inputs[1:]:
        book.step(batch, rewards, drift)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, nargs="+", default=[17_000, 1_000_000])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--pool", type=int, default=14_000)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}")
    print(f"batch {args.batch}, candidate pool {args.pool}, mean of {args.steps} steps after one warm-up\n")
    header = (
        f"{'prompts':>10} {'official (ms)':>14} {'ours, pool (ms)':>16} {'ratio':>8} {'ours, all prompts (ms)':>23}"
    )
    print(header)
    print("-" * len(header))
    for n in args.prompts:
        rng = np.random.default_rng(args.seed)
        values = {prompt_text(i): rng.integers(0, 2, 8).tolist() for i in range(n)}
        pool = min(args.pool, n)
        official = time_steps(OfficialBookkeeping(values, pool, args.seed), args.batch, args.steps, args.seed)
        ours = time_steps(VectorisedBookkeeping(values, pool, args.batch, args.seed), args.batch, args.steps, args.seed)
        whole = time_steps(
            VectorisedBookkeeping(values, None, args.batch, args.seed), args.batch, args.steps, args.seed
        )
        print(f"{n:>10} {official * 1e3:>14.1f} {ours * 1e3:>16.2f} {official / ours:>7.1f}x {whole * 1e3:>23.2f}")


if __name__ == "__main__":
    main()
