"""``spo evaluate`` end to end on the CPU world: the base model and a training checkpoint of a short GRPO run."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

pytest.importorskip("verl")

from spo_helpers.stages.evaluate import evaluate


def test_evaluate_base_model_and_checkpoint(small_world, tmp_path, train_small):
    benchmarks = [f"held_out={small_world.val_file}"]
    base = evaluate(
        model_path=str(small_world.model_dir), benchmarks=benchmarks, n=4, output_dir=str(tmp_path), resamples=200
    )
    table = pd.read_csv(base["run_dir"] / "evaluation.csv")
    assert set(table["benchmark"]) - {"avg"} == {"held_out"}  # named as the command line named it
    assert {"maj", "pass"} <= set(table["metric"]) and set(table["k"].dropna().astype(int)) >= {1, 2, 3, 4}
    rows = table[(table["benchmark"] == "held_out") & (table["metric"] == "pass")].sort_values("k")
    assert (rows["low"] <= rows["value"]).all() and (rows["value"] <= rows["high"]).all()
    assert rows["value"].is_monotonic_increasing  # unbiased pass@k grows with k

    fast_learning = ["trainer.save_freq=2", "trainer.test_freq=0", "actor_rollout_ref.actor.optim.lr=1e-2"]
    run = train_small("GRPO", small_world, tmp_path, "grpo", 2, settings=fast_learning)
    checkpoint = run.run_dir / "checkpoints" / "global_step_2"
    tuned = evaluate(
        model_path=str(small_world.model_dir),
        checkpoint=str(checkpoint),
        benchmarks=benchmarks,
        n=4,
        output_dir=str(tmp_path),
        resamples=200,
    )
    assert tuned["run_dir"].name == "evaluation_grpo_cpu"
    scores, before = tuned["scores"], base["scores"]
    assert set(scores["method"]) == {"GRPO"} and set(before["method"]) == {"BASE"}
    # The checkpoint's weights were used: after two steps at a large learning rate the samples differ.
    dumps = sorted((tuned["run_dir"] / "validation_data").glob("*.jsonl"))
    base_dumps = sorted((base["run_dir"] / "validation_data").glob("*.jsonl"))
    assert dumps and base_dumps and dumps[-1].read_text() != base_dumps[-1].read_text()
    weights = torch.load(checkpoint / "actor" / "cpu_worker.pt", weights_only=False)["model"]
    assert weights  # a complete checkpoint of the run
