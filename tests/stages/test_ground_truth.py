"""``spo ground-truth`` on a hand-made run folder of the small world: checkpoint weights are the ones sampled."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from spo_helpers.errors import UserError
from spo_helpers.formats.checkpoints import COMPLETE_MARKER, file_digests
from spo_helpers.formats.keys import row_key
from spo_helpers.formats.layout import RunLayout


def _run_folder(tmp_path, world):
    torch = pytest.importorskip("torch")
    from spo_helpers.world.model import load_model
    from spo_helpers.world.task import read_rows

    rows = read_rows(world.train_file)
    root = tmp_path / "spo" / "grpo_cpu"
    layout = RunLayout(root)
    root.mkdir(parents=True)
    config = {
        "actor_rollout_ref": {
            "model": {"path": str(world.model_dir)},
            "rollout": {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "multi_turn": {"enable": False}},
        },
        "data": {"max_response_length": 16, "train_files": [str(world.train_file)]},
        "kit": {"method": "GRPO"},
    }
    layout.config.write_text(yaml.safe_dump({"config": config}), encoding="utf-8")
    keys = [row_key(r) for r in rows]
    pd.DataFrame({"row": np.arange(len(keys)), "prompt_key": keys}).to_parquet(layout.prompts)
    with open(layout.steps, "w", encoding="utf-8") as handle:
        for step, picked in ((1, [0, 1, 2]), (3, [3, 4])):
            data = {"row": picked, "reward": [1.0] * len(picked), "p_hat": [0.5] * len(picked)}
            data["advantage"], data["group"] = [0.0] * len(picked), list(range(len(picked)))
            handle.write(json.dumps({"step": step, "data": data}) + "\n")
    model, _ = load_model(world.model_dir)
    state = {k: torch.zeros_like(v) if "lm_head" in k or "embed" in k else v for k, v in model.state_dict().items()}
    actor = layout.checkpoints / "global_step_2" / "actor"
    actor.mkdir(parents=True)
    torch.save({"model": state}, actor / "cpu_worker.pt")
    step_dir = actor.parent
    marker = {"global_step": 2, "files": file_digests(step_dir)}  # as the trainer completes a checkpoint
    (step_dir / COMPLETE_MARKER).write_text(json.dumps(marker), encoding="utf-8")
    return root


def test_samples_each_checkpoints_next_step(tmp_path, small_world, capsys):
    from spo_helpers.analysis.baseline_error import load_ground_truth
    from spo_helpers.stages.ground_truth import measure_run

    root = _run_folder(tmp_path, small_world)
    frame = measure_run(root, n=4, progress=False)
    assert sorted(frame["step"].unique()) == [1, 3]  # the initial model for step 1, global_step_2 for step 3
    assert frame.groupby("checkpoint")["row"].apply(list).to_dict() == {0: [0, 1, 2], 2: [3, 4]}
    assert np.allclose(frame["true_p"], frame["successes"] / 4)
    # the checkpoint's zeroed embeddings and head are what is sampled: it never answers
    assert (frame.loc[frame["checkpoint"] == 2, "true_p"] == 0).all()
    assert load_ground_truth(root).equals(frame)
    again = measure_run(root, n=4, progress=False)  # already measured: kept as it is
    assert again.equals(frame)

    probe = measure_run(root, n=2, prompts="probe", steps=[0], progress=False)  # the world's fixed probe
    on_probe = probe[probe["prompts"] == "probe"]
    assert len(on_probe) == len(pd.read_parquet(small_world.probe_file)) and set(on_probe["checkpoint"]) == {0}
    assert probe[probe["prompts"] == "steps"].reset_index(drop=True).equals(frame)  # the other set stays

    from spo_helpers.cli import main

    assert main(["ground-truth", str(root), "--n", "4"]) == 0  # measured already: the command only reports
    assert "2 checkpoints" in capsys.readouterr().out


def test_a_damaged_or_absent_checkpoint_is_refused(tmp_path, small_world):
    """As ``spo train`` and ``spo evaluate``: a checkpoint whose bytes changed is not measured, and a checkpoint the
    run does not have is named."""
    from spo_helpers.stages.ground_truth import measure_run

    root = _run_folder(tmp_path, small_world)
    weights = RunLayout(root).checkpoints / "global_step_2" / "actor" / "cpu_worker.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"global_step_2: actor/cpu_worker.pt: its bytes changed .*SHA-256"):
        measure_run(root, n=2, progress=False)
    with pytest.raises(UserError, match=r"no complete checkpoint of step 99 \(this run has 0, 2"):
        measure_run(root, n=2, steps=[99], progress=False)
    assert measure_run(root, n=2, steps=[0], progress=False)["checkpoint"].unique().tolist() == [0]
