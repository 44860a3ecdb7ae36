"""maj@k / pass@k per benchmark with bootstrap intervals, the paired comparison and the paper's layout."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spo_helpers.analysis.evaluation import (
    evaluation_scores,
    evaluation_table,
    paired_comparison,
    paper_layout,
    readable_layout,
)
from spo_helpers.analysis.passk import pass_at_k


def _validation(method: str, p: float, seed: int = 0, problems: int = 12, n: int = 8) -> pd.DataFrame:
    rng = np.random.default_rng([seed, int(p * 100)])
    rows = []
    for source in ("aime_2024", "math-ai/aime25"):
        for i in range(problems):
            rate = min(1.0, p * (i % 4) / 2)
            for s in range(n):
                ok = rng.random() < rate
                rows.append((f"{method}{seed}", method, seed, 0, f"{source}-{i}", source, s, float(ok), float(ok)))
    cols = ["run", "method", "seed", "step", "prompt_key", "data_source", "sample", "score", "correct"]
    frame = pd.DataFrame(rows, columns=cols)
    frame["pred"] = np.where(frame["correct"] > 0, "42", "7")
    frame["prompt_key"] = frame["prompt_key"].str.replace("math-ai/", "")
    return frame


def test_every_k_with_an_interval_per_benchmark_and_on_average():
    scores = evaluation_scores(_validation("SPO", 0.5))
    assert set(scores["benchmark"]) == {"AIME24", "AIME25"} and sorted(scores["k"].unique()) == list(range(1, 9))
    table = evaluation_table(scores, resamples=300)
    assert set(table["benchmark"]) == {"AIME24", "AIME25", "avg"}
    assert ((table["low"] <= table["value"] + 1e-12) & (table["value"] <= table["high"] + 1e-12)).all()
    one = scores[(scores["benchmark"] == "AIME24") & (scores["metric"] == "pass") & (scores["k"] == 4)]
    expected = np.mean([pass_at_k(int(r.n), int(r.correct), 4) for r in one.itertuples()])
    got = table.query("benchmark == 'AIME24' and metric == 'pass' and k == 4")["value"].item()
    assert np.isclose(got, expected)
    avg = table.query("benchmark == 'avg' and metric == 'maj' and k == 8")["value"].item()
    parts = table.query("benchmark != 'avg' and metric == 'maj' and k == 8")["value"].mean()
    assert np.isclose(avg, parts)
    # pass@k never decreases in k
    curve = table.query("benchmark == 'avg' and metric == 'pass'").sort_values("k")["value"].to_numpy()
    assert (np.diff(curve) >= -1e-12).all()


def test_seeds_widen_nothing_they_do_not_vary_and_the_pairing_is_on_problems():
    frames = [_validation("SPO", 0.6, s) for s in (0, 1)] + [_validation("GRPO", 0.4, s) for s in (0, 1)]
    scores = evaluation_scores(pd.concat(frames, ignore_index=True))
    table = evaluation_table(scores, resamples=300)
    assert table.query("benchmark == 'AIME24'")["seeds"].eq(2).all()
    paired = paired_comparison(scores, resamples=300)
    row = paired.query("benchmark == 'avg' and metric == 'avg' and k == 8")
    spo = table.query("method == 'SPO' and benchmark == 'avg' and metric == 'avg' and k == 8")["value"].item()
    grpo = table.query("method == 'GRPO' and benchmark == 'avg' and metric == 'avg' and k == 8")["value"].item()
    assert np.isclose(row["value"].item(), spo - grpo) and row["low"].item() < row["value"].item() < row["high"].item()


def test_paper_rows_only_with_the_papers_protocol():
    table = evaluation_table(evaluation_scores(_validation("SPO", 0.5)), resamples=100)
    other = paper_layout(table, same_protocol=(False, "not the paper's protocol: n=8 (paper: 32)"))
    assert list(other["source"]) == ["this kit"] and "n=8" in other["protocol"].item()
    assert {"AIME24 maj@8", "AIME24 maj@8 low", "AIME24 maj@8 high", "avg maj@8"} <= set(other.columns)
    wide = table.assign(k=table["k"].replace(8, 32))
    same = paper_layout(wide, same_protocol=(True, "the paper's protocol"))
    assert list(same["source"]) == ["this kit", "paper (Qwen3-8B)", "paper (Qwen3-8B)"]
    text = readable_layout(other.drop(columns=["protocol"]))
    assert "[" in text["avg maj@8"].item() and "AIME24 maj@8 low" not in text.columns
