"""The drift pass of an SPO step: D(x) for every revisited prompt, then this step's responses stored.

    D(x) = (1/|y|) Σ_t | log π_now(y_t | ·) - log π_then(y_t | ·) |

y is the response sampled at x's previous visit, π_then the policy right after that visit's update (its
log-probs were stored then), π_now the policy after this step's update. One ``compute_log_prob`` call scores
this step's responses (stored for the next visit) and the rebuilt (prompt, previous response) sequences.

With tools, a response mixes tokens the policy sampled (``response_mask`` 1) and interpreter output
(``response_mask`` 0, attention 1). The store keeps every real token, so the rebuilt sequence is the one
that was sampled, and NaN as the log-prob of interpreter tokens: D averages over the model's tokens only
(docs/tools.md, "Which tokens the drift D averages over"). Single-turn responses have no such tokens.
"""

from __future__ import annotations

import numpy as np
import torch
from verl import DataProto
from verl.protocol import pad_dataproto_to_divisor

from spo_helpers.core.drift import ResponseStore, mean_abs_logprob_change


def previous_responses(
    store: ResponseStore, batch: DataProto, keys: list[str], pad: int
) -> tuple[DataProto | None, list[int], list]:
    """Rebuild (prompt, stored previous response) sequences for revisited prompts."""
    from verl.utils.model import compute_position_id_with_mask

    revisit = [i for i, k in enumerate(keys) if k in store]
    if not revisit:
        return None, [], []
    prompts = batch.batch["prompts"][revisit]
    prompt_len = prompts.shape[1]
    prompt_mask = batch.batch["attention_mask"][revisit, :prompt_len]
    width = batch.batch["responses"].shape[1]
    responses = torch.full((len(revisit), width), pad, dtype=prompts.dtype)
    response_mask = torch.zeros((len(revisit), width), dtype=prompt_mask.dtype)
    stored = []
    for j, i in enumerate(revisit):
        ids, logp = store.get(keys[i])
        length = min(ids.size, width)
        responses[j, :length] = torch.from_numpy(ids[:length].astype(np.int64))
        response_mask[j, :length] = 1  # every stored token is real: attention and scoring cover all of them
        stored.append(logp[:length])
    mask = torch.cat([prompt_mask, response_mask], dim=-1)
    data = DataProto.from_dict(
        tensors={
            "prompts": prompts,
            "responses": responses,
            "input_ids": torch.cat([prompts, responses], dim=-1),
            "attention_mask": mask,
            "position_ids": compute_position_id_with_mask(mask),
            "response_mask": response_mask,
        }
    )
    return data, revisit, stored


def drift_and_store(worker_group, store: ResponseStore, batch: DataProto, keys: list[str], pad: int) -> np.ndarray:
    """After the update: D for revisited prompts, then store this step's responses and log-probs."""
    select = ["prompts", "responses", "input_ids", "attention_mask", "position_ids", "response_mask"]
    current = DataProto.from_dict(tensors={k: batch.batch[k] for k in select})
    previous, revisit, stored = previous_responses(store, batch, keys, pad)
    combined = current if previous is None else DataProto.concat([current, previous])
    # Ray worker groups split a batch evenly across data-parallel ranks: pad, then drop the padding.
    padded, _ = pad_dataproto_to_divisor(combined, worker_group.world_size)
    log_probs = worker_group.compute_log_prob(padded).batch["old_log_probs"].float()
    log_probs = log_probs[: len(combined)]
    size = len(batch)
    drift = np.zeros(size, dtype=np.float64)
    if previous is not None:
        now = log_probs[size:].numpy()
        then = np.zeros_like(now)
        counted = np.zeros_like(now)
        for j, lp in enumerate(stored):
            then[j, : lp.size] = np.nan_to_num(lp, nan=0.0)
            counted[j, : lp.size] = ~np.isnan(lp)  # the model's own tokens of the stored response
        drift[revisit] = mean_abs_logprob_change(now, then, counted)
    for i, key in enumerate(keys):
        ids, logp = stored_response(batch, i, log_probs[i])
        store.put(key, ids, logp)
    return drift


def stored_response(batch: DataProto, row: int, log_probs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Row ``row``'s real response tokens and their log-probs, NaN where the interpreter wrote the token."""
    width = batch.batch["responses"].shape[1]
    real = batch.batch["attention_mask"][row, -width:].bool()
    model = batch.batch["response_mask"][row].bool()
    logp = torch.where(model, log_probs, torch.full_like(log_probs, float("nan")))
    return batch.batch["responses"][row][real].numpy(), logp[real].numpy()
