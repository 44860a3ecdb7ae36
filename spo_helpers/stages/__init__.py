"""The ``spo`` verbs, one module each: ``spo ground-truth`` is ``stages/ground_truth.py``.

Each module provides ``add_arguments(parser)``, ``run(args) -> int`` and ``USAGE`` (the examples of
``spo <verb> --help``, in plain text) for the command line, and a Python function of the same work for
notebooks and scripts. ``VERBS`` holds each verb's one-line help, so ``spo --help``
lists them without importing any of them.
"""

from __future__ import annotations

VERBS: dict[str, str] = {
    "world": "build the offline CPU world: task data, tokenizer, tiny model (--tools: TIR)",
    "split": "01: split a training set into subsets for offline estimation",
    "estimate": "02: offline value estimation (verl validation dumps)",
    "merge": "03: merge validation dumps into an offline-values file",
    "train": "04: GRPO or SPO training through verl",
    "evaluate": "maj@k and pass@k on the benchmarks, with intervals (a model or checkpoint)",
    "ground-truth": "true success rates of a CPU run's training prompts under its checkpoints (many samples each)",
    "figures": "05: regenerate the analysis figures of one or more runs",
    "simulate": "agentic long-tail throughput simulation, GRPO vs SPO",
    "pipeline": "run 01 -> 05 as papermill notebooks into runs/<name>/",
    "notebooks": "copies of the notebooks to explore in JupyterLab (runs/notebooks)",
    "sandbox": "a local Sandbox Fusion server (POST /run_code) for tool use; check: its isolation",
    "reference": "prune a finished pipeline folder to the analysis inputs of a committed reference run",
}


def stage_module(verb: str) -> str:
    """The module of ``spo <verb>``."""
    return f"{__name__}.{verb.replace('-', '_')}"
