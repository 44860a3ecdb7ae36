"""The drift pass on tool-integrated responses: whole responses stored, D over the model's own tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("verl")

from verl import DataProto

from spo_helpers.core.drift import ResponseStore
from spo_helpers.verl_glue.drift_pass import drift_and_store

PAD = 0


class ScaledLogProbs:
    """A worker group whose log-prob of token t at position j is -scale * t / 100 - j / 1000 (on real tokens)."""

    world_size = 1

    def __init__(self) -> None:
        self.scale = 1.0
        self.seen: list[torch.Tensor] = []

    def compute_log_prob(self, data: DataProto) -> DataProto:
        responses = data.batch["responses"]
        self.seen.append(responses.clone())
        width = responses.shape[1]
        real = data.batch["attention_mask"][:, -width:].float()
        position = torch.arange(width, dtype=torch.float32)[None, :]
        logp = (-self.scale * responses.float() / 100 - position / 1000) * real
        return DataProto.from_dict(tensors={"old_log_probs": logp})


def batch_of(responses: list[list[int]], model_masks: list[list[int]], width: int = 6) -> DataProto:
    size = len(responses)
    prompts = torch.tensor([[PAD, 7, 8]] * size)
    ids = torch.full((size, width), PAD)
    real = torch.zeros((size, width), dtype=torch.long)
    mask = torch.zeros((size, width), dtype=torch.long)
    for row, (tokens, model) in enumerate(zip(responses, model_masks, strict=True)):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        real[row, : len(tokens)] = 1
        mask[row, : len(model)] = torch.tensor(model)
    attention = torch.cat([torch.tensor([[0, 1, 1]] * size), real], dim=-1)
    return DataProto.from_dict(
        tensors={
            "prompts": prompts,
            "responses": ids,
            "input_ids": torch.cat([prompts, ids], dim=-1),
            "attention_mask": attention,
            "position_ids": torch.clamp(attention.cumsum(-1) - 1, min=0),
            "response_mask": mask,
        }
    )


def test_tool_tokens_are_stored_and_rescored_but_not_averaged():
    worker, store = ScaledLogProbs(), ResponseStore()
    # Two model tokens, two interpreter tokens (mask 0, attention 1), one model token.
    first = batch_of([[11, 12, 40, 41, 13]], [[1, 1, 0, 0, 1]])
    drift = drift_and_store(worker, store, first, ["x"], PAD)
    assert drift.tolist() == [0.0]
    ids, logp = store.get("x")
    assert ids.tolist() == [11, 12, 40, 41, 13]  # the interpreter's tokens are kept in the stored response
    assert np.isnan(logp[2:4]).all() and np.isfinite(logp[[0, 1, 4]]).all()

    worker.scale = 2.0  # the policy moved: every token's log-prob changes by t / 100
    second = batch_of([[21]], [[1]])
    drift = drift_and_store(worker, store, second, ["x"], PAD)
    rebuilt = worker.seen[-1][1]
    assert rebuilt[:5].tolist() == [11, 12, 40, 41, 13]  # scored in the context it was sampled in
    expected = np.mean([11, 12, 13]) / 100  # model tokens only; the interpreter's 40 and 41 would raise it
    assert drift[0] == pytest.approx(expected, rel=1e-5)


def test_single_turn_responses_keep_the_official_drift():
    worker, store = ScaledLogProbs(), ResponseStore()
    drift_and_store(worker, store, batch_of([[11, 12, 13]], [[1, 1, 1]]), ["x"], PAD)
    worker.scale = 3.0
    drift = drift_and_store(worker, store, batch_of([[5]], [[1]]), ["x"], PAD)
    assert drift[0] == pytest.approx(2 * np.mean([11, 12, 13]) / 100, rel=1e-5)
    assert not np.isnan(store.get("x")[1]).any()
