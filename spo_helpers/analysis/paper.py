"""The paper's reported numbers and benchmark names, in one place."""

from __future__ import annotations

import re

import pandas as pd

# ---------------------------------------------------------------------------------------------- results table
PAPER_BENCHMARKS = ("AIME24", "AIME25", "BeyondAIME", "BRUMO25", "HMMT25")
PAPER_MAJ32 = pd.DataFrame(
    {
        "method": ["GRPO", "SPO"],
        "AIME24": [83.3, 84.0],
        "AIME25": [72.1, 76.5],
        "BeyondAIME": [45.6, 46.9],
        "BRUMO25": [56.7, 64.0],
        "HMMT25": [44.2, 47.5],
        "avg": [60.4, 63.8],
    }
)
"""The paper's Qwen3-8B maj@32 (percent), GRPO vs SPO."""

PAPER_RATIO = 4.35
"""SPO/GRPO rollout throughput ratio in the paper's simulated agentic setting."""

PAPER_ZERO_ADV_BAND = (0.6, 0.8)
"""Share of GRPO samples in zero-advantage groups the paper reports for Qwen3-8B on DAPO-Math."""

_BENCHMARK_ALIASES = {
    "aime24": "AIME24",
    "aime2024": "AIME24",
    "aime25": "AIME25",
    "aime2025": "AIME25",
    "beyondaime": "BeyondAIME",
    "brumo25": "BRUMO25",
    "brumo2025": "BRUMO25",
    "hmmt25": "HMMT25",
    "hmmt2025": "HMMT25",
    "hmmtfeb2025": "HMMT25",
    "hmmtfeb25": "HMMT25",
}


def canonical_benchmark(data_source: str) -> str:
    """The paper's benchmark name for a data source (``math-ai/aime25`` -> ``AIME25``), else the name itself."""
    tail = str(data_source).split("/")[-1]
    return _BENCHMARK_ALIASES.get(re.sub(r"[^a-z0-9]", "", tail.lower()), str(data_source))


def paper_table() -> pd.DataFrame:
    """``PAPER_MAJ32`` in the ``results_table`` layout."""
    out = PAPER_MAJ32.copy()
    out.insert(0, "source", "paper (Qwen3-8B)")
    return out.rename(columns={b: f"{b} maj@32" for b in (*PAPER_BENCHMARKS, "avg")})
