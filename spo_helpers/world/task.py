"""A bundled integer-arithmetic task in the DAPO / verl row schema.

Problems chain 1 to 3 of ``+ - *`` over operands of 1 to 3 digits, with the
usual precedence (``*`` first). Difficulty is ``(ops - 1) + (digits - 1)`` in
0..4, where ``digits`` is the widest operand. The operand right of a ``*`` has
one digit and answers stay within ±9999, so products remain small.

The mix (``SHAPE_WEIGHTS``) leans on one-digit operands: a tiny model learns
those partly in a short warm start, while wide operands (multi-digit answers)
stay rarely solved, which gives a spread of per-prompt success rates.

Rows follow the schema of the DAPO-Math data the official recipe trains on::

    {"data_source": "spo_arith",
     "prompt": [{"role": "user", "content": problem + ANSWER_FORMAT}],
     "ability": "MATH",
     "reward_model": {"ground_truth": "69", "style": "rule"},
     "extra_info": {"index": i, "split": "train", "difficulty": 2, "prompt_key": ...}}

The reference response is ``\\boxed{69}``; verl's ``math_dapo.compute_score``
with ``strict_box_verify=True`` scores it 1.0.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spo_helpers.formats.atomic import atomic_open
from spo_helpers.formats.keys import ANSWER_FORMAT_SUFFIX as ANSWER_FORMAT

DATA_SOURCE = "spo_arith"
LEVELS = 5
# (operators, widest operand in digits) -> share of the task.
SHAPE_WEIGHTS: dict[tuple[int, int], float] = {
    (1, 1): 0.22,
    (2, 1): 0.22,
    (3, 1): 0.18,
    (1, 2): 0.12,
    (2, 2): 0.08,
    (3, 2): 0.04,
    (1, 3): 0.06,
    (2, 3): 0.05,
    (3, 3): 0.03,
}
PHRASINGS = ("Compute {}.", "What is {}?", "Calculate {}.", "Evaluate {}.", "Find {}.")
OPS = ("+", "-", "*")
MAX_ABS_ANSWER = 9999


@dataclass(frozen=True)
class Problem:
    """One arithmetic problem: its expression, the question text and the integer answer."""

    expression: str
    text: str
    answer: int
    difficulty: int


def evaluate(operands: Sequence[int], ops: Sequence[str]) -> int:
    """Value of ``operands[0] ops[0] operands[1] ...`` with ``*`` binding tighter than ``+``/``-``."""
    if len(operands) != len(ops) + 1:
        raise ValueError("need one more operand than operators")
    terms = [operands[0]]
    signs = [1]
    for op, value in zip(ops, operands[1:], strict=True):
        if op == "*":
            terms[-1] *= value
        elif op in ("+", "-"):
            terms.append(value)
            signs.append(1 if op == "+" else -1)
        else:
            raise ValueError(f"unknown operator {op!r}")
    return int(sum(s * t for s, t in zip(signs, terms, strict=True)))


def _operand(rng: np.random.Generator, digits: int) -> int:
    if digits == 1:
        return int(rng.integers(0, 10))
    return int(rng.integers(10 ** (digits - 1), 10**digits))


def difficulty_of(n_ops: int, width: int) -> int:
    """Difficulty 0..4 from the number of operators (1..3) and the widest operand (1..3 digits)."""
    return (n_ops - 1) + (width - 1)


def random_problem(rng: np.random.Generator, n_ops: int, width: int) -> Problem:
    """Draw one problem with ``n_ops`` operators whose widest operand has ``width`` digits."""
    if not (1 <= n_ops <= 3 and 1 <= width <= 3):
        raise ValueError(f"need 1..3 operators and 1..3 digits, got {n_ops} and {width}")
    while True:
        ops = [OPS[int(rng.integers(len(OPS)))] for _ in range(n_ops)]
        widths = [int(rng.integers(1, width + 1)) for _ in range(n_ops + 1)]
        widths[int(rng.integers(n_ops + 1))] = width
        for i, op in enumerate(ops):
            if op == "*":
                widths[i + 1] = 1
        if max(widths) != width:
            continue
        operands = [_operand(rng, w) for w in widths]
        answer = evaluate(operands, ops)
        if abs(answer) <= MAX_ABS_ANSWER:
            break
    expression = str(operands[0]) + "".join(op + str(v) for op, v in zip(ops, operands[1:], strict=True))
    text = PHRASINGS[int(rng.integers(len(PHRASINGS)))].format(expression)
    return Problem(expression, text, answer, difficulty_of(n_ops, width))


def _fresh_problem(rng: np.random.Generator, shapes: list[tuple[int, int]], seen: set[str]) -> Problem:
    """A problem whose text is not in ``seen``, of the first shape that still has unused problems."""
    for n_ops, width in shapes:
        for _ in range(200):
            problem = random_problem(rng, n_ops, width)
            if problem.text not in seen:
                return problem
    raise ValueError("ran out of distinct problems; ask for fewer")


def reference_response(answer: int | str) -> str:
    """The warm-start target: the boxed answer alone."""
    return "\\boxed{" + str(answer) + "}"


def make_row(problem: Problem, index: int, split: str) -> dict[str, Any]:
    content = problem.text + ANSWER_FORMAT
    return {
        "data_source": DATA_SOURCE,
        "prompt": [{"role": "user", "content": content}],
        "ability": "MATH",
        "reward_model": {"ground_truth": str(problem.answer), "style": "rule"},
        "extra_info": {"index": index, "split": split, "difficulty": problem.difficulty, "prompt_key": content.strip()},
    }


def make_task(num_train: int = 3000, num_val: int = 200, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Train and validation rows, deterministic in ``seed``; every prompt key is unique across both."""
    if num_train < 0 or num_val < 0:
        raise ValueError("num_train and num_val must be >= 0")
    rng = np.random.default_rng([seed, 0x5B0])
    shapes = list(SHAPE_WEIGHTS)
    weights = np.asarray([SHAPE_WEIGHTS[s] for s in shapes], dtype=np.float64)
    picks = rng.choice(len(shapes), size=num_train + num_val, p=weights / weights.sum())
    seen: set[str] = set()
    problems: list[Problem] = []
    for pick in picks:
        problem = _fresh_problem(rng, shapes[int(pick) :] + shapes[: int(pick)], seen)
        seen.add(problem.text)
        problems.append(problem)
    train = [make_row(p, i, "train") for i, p in enumerate(problems[:num_train])]
    val = [make_row(p, i, "val") for i, p in enumerate(problems[num_train:])]
    return train, val


def row_answer(row: Mapping[str, Any]) -> str:
    return str(row["reward_model"]["ground_truth"])


def row_content(row: Mapping[str, Any]) -> str:
    return str(row["prompt"][0]["content"])


def write_rows(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write rows as parquet, atomically (readable by ``datasets`` and verl's ``RLHFDataset``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([dict(r) for r in rows])
    with atomic_open(path, "wb") as handle:
        pq.write_table(table, handle)
    return Path(path)


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()
