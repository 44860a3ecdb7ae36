"""The kit's reward in verl's asynchronous rollout: its keys become batch columns that must not collide.

With ``reward_model.enable=false`` (every preset) verl's agent loop scores each sample as it finishes and
``AgentLoopWorkerBase._postprocess`` turns every key of the reward into a batch column; the trainer then unions
that batch with its own (validation and every training step). A reward key equal to one of the dataset's columns
made that union fail on every GPU run with the async rollout. These tests run verl's own ``_postprocess`` and
``DataProto.union`` on the kit's dataset rows and the kit's reward, and check the dumps still name each line's
data source (``kit_trainer.NamingDataSources``).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("verl")
pytest.importorskip("cachetools")  # verl.experimental.agent_loop imports it

from verl import DataProto
from verl.experimental.agent_loop.agent_loop import AgentLoopWorkerBase, _InternalAgentLoopOutput
from verl.trainer.ppo.ray_trainer import RayPPOTrainer
from verl.utils.dataset.rl_dataset import collate_fn

from spo_helpers.verl_glue.config import RunSpec, build_config
from spo_helpers.verl_glue.kit_trainer import DATA_SOURCE, NamingDataSources
from spo_helpers.verl_glue.reward import compute_score

ROWS = 4


@pytest.fixture(scope="module")
def first_rows(small_world, tmp_path_factory):
    """The first rows of the CPU world as verl's trainer batches them (the kit's dataset class, verl's collate),
    after the trainer took the generation inputs out (``RayPPOTrainer._get_gen_batch`` in async mode)."""
    from verl.trainer.main_ppo import create_rl_dataset
    from verl.utils import hf_tokenizer

    spec = RunSpec(
        method="GRPO",
        output_dir=str(tmp_path_factory.mktemp("runs")),
        model_path=str(small_world.model_dir),
        train_files=[str(small_world.train_file)],
        val_files=[str(small_world.val_file)],
    )
    config = build_config(spec)
    tokenizer = hf_tokenizer(config.actor_rollout_ref.model.path)
    dataset = create_rl_dataset(config.data.train_files, config.data, tokenizer, None, is_train=True)
    batch = DataProto.from_single_dict(collate_fn([dataset[i] for i in range(ROWS)]))
    columns = set(batch.non_tensor_batch)
    RayPPOTrainer._get_gen_batch(SimpleNamespace(async_rollout_mode=True), batch)
    return batch, columns


@pytest.fixture
def trainer_batch(first_rows):
    """A copy of the batch (a union changes the batch it is called on)."""
    return copy.deepcopy(first_rows[0])


def agent_loop_output(row: dict, extra: dict) -> _InternalAgentLoopOutput:
    """One finished sample as verl's agent loop holds it before ``_postprocess`` (tiny padded tensors)."""
    ids = torch.tensor([[1, 2, 3]])
    return _InternalAgentLoopOutput(
        prompt_ids=ids[:, :2],
        response_ids=ids[:, 2:],
        input_ids=ids,
        position_ids=torch.arange(3)[None],
        response_mask=torch.ones(1, 1, dtype=torch.long),
        attention_mask=torch.ones(1, 3, dtype=torch.long),
        reward_score=float(extra["score"]),
        num_turns=2,
        metrics={},
        extra_fields={"reward_extra_info": extra},
    )


def scored_outputs(batch: DataProto) -> DataProto:
    """verl's ``_postprocess`` of the kit's reward on each row (what the agent loop returns to the trainer)."""
    outputs = []
    for i in range(len(batch)):
        row = {key: values[i] for key, values in batch.non_tensor_batch.items()}
        truth = row["reward_model"]["ground_truth"]
        extra = compute_score(row[DATA_SOURCE], f"\\boxed{{{truth}}}", truth, row["extra_info"])
        outputs.append(agent_loop_output(row, extra))
    return AgentLoopWorkerBase._postprocess(None, outputs)


def test_no_reward_key_is_a_dataset_column(trainer_batch, first_rows):
    row = {key: values[0] for key, values in trainer_batch.non_tensor_batch.items()}
    extra = compute_score(row[DATA_SOURCE], "\\boxed{1}", "1", row["extra_info"])
    columns = first_rows[1]  # every column of the dataset's rows
    assert DATA_SOURCE in columns and not set(extra) & columns, sorted(set(extra) & columns)


def test_the_async_rollouts_output_joins_the_trainers_batch(trainer_batch):
    """verl's union of the trainer's batch with the agent loop's output, as ``_validate`` and ``fit`` do it."""
    generated = scored_outputs(trainer_batch)
    joined = trainer_batch.union(generated)
    assert joined.non_tensor_batch["score"].tolist() == [1.0] * ROWS
    assert list(joined.non_tensor_batch[DATA_SOURCE]) == list(trainer_batch.non_tensor_batch[DATA_SOURCE])


def test_a_column_named_twice_is_what_verl_refuses(trainer_batch):
    """The failure the reward's keys avoid: the same column from both sides, with verl's two dtypes."""
    generated = scored_outputs(trainer_batch)
    generated.non_tensor_batch[DATA_SOURCE] = np.array([str(s) for s in trainer_batch.non_tensor_batch[DATA_SOURCE]])
    with pytest.raises(AssertionError, match="`data_source` in tensor_dict1 and tensor_dict2 are not the same"):
        trainer_batch.union(generated)


def test_validation_dumps_still_name_their_data_source(trainer_batch):
    """The validation reward function's extra info carries ``data_source`` (verl dumps every key of it)."""

    def reward_fn(data, return_dict=False):
        scores = torch.zeros(len(data), 1)
        return {"reward_tensor": scores, "reward_extra_info": {"acc": [True] * len(data)}} if return_dict else scores

    named = NamingDataSources(reward_fn)
    result = named(trainer_batch, return_dict=True)
    assert result["reward_extra_info"]["acc"] == [True] * ROWS
    assert result["reward_extra_info"][DATA_SOURCE] == [str(s) for s in trainer_batch.non_tensor_batch[DATA_SOURCE]]
    assert torch.equal(named(trainer_batch), torch.zeros(ROWS, 1))
