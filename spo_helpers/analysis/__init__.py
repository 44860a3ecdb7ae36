"""Analysis of runs, one module per question; this namespace gathers their public functions for notebooks.

    from spo_helpers import analysis as A
    runs = A.find_runs("runs/demo"); metrics = A.load_runs(runs)

- ``runs``: which runs exist and what defines them;
- ``scalars``: a run folder's logged scalars as read from disk (``metrics.jsonl``, TensorBoard);
- ``metrics``: how the logged metrics evolved (steps, samples, tokens);
- ``passk``: per-prompt avg@n, pass@k and maj@k;
- ``validation``: how accurate each run is (dumps, tables, learning curves);
- ``steps``: per-sample logs, prompts, tracker snapshots, offline values;
- ``baselines``: zero-advantage shares, advantage spread, calibration, ρ and D;
- ``curriculum``: which prompts each method trained on;
- ``paper``: the paper's numbers;
- ``throughput`` / ``throughput_sweep``: the rollout throughput simulation;
- ``run_data``: the runs' frames behind the figures, each loaded once;
- ``plots``, ``figure_set`` and ``explorers``: figures and widgets (matplotlib is imported only there).
"""

from spo_helpers.analysis.baselines import (
    ZERO_ATOL,
    advantage_values,
    advantage_variance,
    centred_advantages,
    reliability,
    rho_drift,
    rho_drift_summary,
    step_windows,
    zero_advantage_share,
)
from spo_helpers.analysis.curriculum import curriculum, difficulty_bins, visits_per_prompt
from spo_helpers.analysis.metrics import load_metrics, load_runs, metric_series, x_axes
from spo_helpers.analysis.paper import (
    PAPER_BENCHMARKS,
    PAPER_MAJ32,
    PAPER_RATIO,
    PAPER_ZERO_ADV_BAND,
    canonical_benchmark,
    paper_table,
)
from spo_helpers.analysis.passk import answer_of, avg_at_k, default_ks, maj_at_k, pass_at_k
from spo_helpers.analysis.runs import (
    RUN_COLUMNS,
    RunInfo,
    as_runs,
    by_run,
    collect,
    find_runs,
    is_run_folder,
    load_config,
    method_from_name,
    run_path,
    tag_run,
)
from spo_helpers.analysis.scalars import logged_scalars, tensorboard_scalars
from spo_helpers.analysis.steps import (
    find_offline_values,
    load_offline_values,
    load_prompts,
    load_steps,
    load_tracker_snapshots,
    offline_value_frame,
)
from spo_helpers.analysis.validation import (
    learning_curves,
    load_validation,
    logger,
    prompt_scores,
    read_validation_dump,
    results_table,
    val_metrics_from_logs,
    validation_summary,
    validation_table,
)
from spo_helpers.errors import MissingData
from spo_helpers.formats.run_config import config_value

__all__ = [
    "PAPER_BENCHMARKS",
    "PAPER_MAJ32",
    "PAPER_RATIO",
    "PAPER_ZERO_ADV_BAND",
    "RUN_COLUMNS",
    "ZERO_ATOL",
    "MissingData",
    "RunInfo",
    "advantage_values",
    "advantage_variance",
    "answer_of",
    "as_runs",
    "avg_at_k",
    "by_run",
    "canonical_benchmark",
    "centred_advantages",
    "collect",
    "config_value",
    "curriculum",
    "default_ks",
    "difficulty_bins",
    "find_offline_values",
    "find_runs",
    "is_run_folder",
    "learning_curves",
    "load_config",
    "load_metrics",
    "load_offline_values",
    "load_prompts",
    "load_runs",
    "load_steps",
    "load_tracker_snapshots",
    "load_validation",
    "logged_scalars",
    "logger",
    "maj_at_k",
    "method_from_name",
    "metric_series",
    "offline_value_frame",
    "paper_table",
    "pass_at_k",
    "prompt_scores",
    "read_validation_dump",
    "reliability",
    "results_table",
    "rho_drift",
    "rho_drift_summary",
    "run_path",
    "step_windows",
    "tag_run",
    "tensorboard_scalars",
    "val_metrics_from_logs",
    "validation_summary",
    "validation_table",
    "visits_per_prompt",
    "x_axes",
    "zero_advantage_share",
]
