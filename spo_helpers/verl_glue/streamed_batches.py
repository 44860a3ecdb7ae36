"""Training batches from streamed rollouts (``schedule=stream`` or ``overprovision``, with tools).

``StreamedBatches`` sits between a trainer (``SPOTrainer``: units of one sample; ``GRPOTrainer``: groups of
``rollout.n``) and a streaming engine: the CPU backend's (``agent_loop/stream_engine.py``: the in-process model)
or, with ``--backend ray`` and ``rollout.mode=async``, the one on verl's agent-loop workers and their vLLM servers
(``agent_loop/agent_loop_stream.py``). It keeps the engine's prompt queue filled from the trainer's prompt source
(SPO: its prioritised sampler; GRPO: ``PromptCycle``), turns each closed step into the batch the trainer's
synchronous path would have built (the same tensors, a ``uid`` per group, plus ``rollout_log_probs``: the
behaviour log-probs), and reports what the schedule did as ``stream/*`` metrics. What streaming changes in SPO's
update is in docs/algorithm.md (streamed rollouts).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from verl import DataProto

from spo_helpers.core.metric_names import STREAM_DROPPED_TOTAL, STREAM_SLOT_UTILISATION
from spo_helpers.core.streaming import ScheduleConfig, StreamScheduler
from spo_helpers.errors import UserError

QUEUE_DRAWS = 8  # SPO: sampler draws at most per refill (prompts already in use are skipped)
STALENESS_COLUMN = "spo_staleness"  # the batch's non-tensor column of each streamed sample's staleness


class PromptCycle:
    """Prompts in a seeded random order, a new permutation per pass (GRPO's prompt source when streaming):
    pass ``e`` visits rows ``permutation(seed, e)``; ``state_dict`` / ``load_state_dict`` resume it exactly."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = int(size), int(seed)
        self.epoch, self.position = 0, 0

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.size)

    def take(self, count: int, busy: set[int]) -> list[int]:
        """The next ``count`` rows not in ``busy`` (skipped rows stay skipped for this pass)."""
        rows: list[int] = []
        order = self._order()
        for _ in range(2 * self.size + count):
            if len(rows) >= count or self.size == 0:
                break
            if self.position >= self.size:
                self.epoch, self.position = self.epoch + 1, 0
                order = self._order()
            row = int(order[self.position])
            self.position += 1
            if row not in busy and row not in rows:
                rows.append(row)
        return rows

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "size": self.size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def schedule_config(schedule: Any, batch_units: int, group_size: int = 1) -> ScheduleConfig:
    """``kit.schedule`` as the scheduler's config (only the keys its policy takes)."""
    policy = str(schedule.policy)
    return ScheduleConfig(
        batch_units=int(batch_units),
        policy=policy,
        group_size=int(group_size),
        slots=int(schedule.slots or batch_units * group_size) if policy == "stream" else None,
        overprovision=float(schedule.overprovision or 0.0) if policy == "overprovision" else 0.0,
        max_staleness=None
        if policy != "stream" or schedule.get("max_staleness") is None
        else int(schedule.max_staleness),
    )


class StreamedBatches:
    """The streamed path of both trainers: ``start`` (after the checkpoint is loaded), ``next_batch`` per step,
    ``resume`` after the step's update (and validation, checkpoint), ``close`` at the end.

    A queue item is ``(tracker row, what the engine starts from)``: the prompt's token ids on the CPU backend, the
    row's one-row generation batch on verl's agent-loop workers."""

    def __init__(self, trainer: Any, draw: Callable[[int, set[int]], list[int]]) -> None:
        config = trainer.config
        self.trainer = trainer
        self.group_size = int(config.actor_rollout_ref.rollout.n)
        self.draw = draw
        self.schedule = schedule_config(config.kit.schedule, int(config.data.train_batch_size), self.group_size)
        self.timeout_s = float(config.kit.schedule.get("timeout_s", 3600) or 3600)
        self.scheduler = StreamScheduler(self.schedule, start_version=max(0, int(trainer.global_steps) - 1))
        self.rollout = getattr(trainer.actor_rollout_wg, "rollout", None)
        self.server = None  # the CPU backend's generation server
        if self.rollout is not None and getattr(self.rollout, "tools", None) is not None:
            self.engine = self._cpu_engine()
        elif getattr(trainer, "async_rollout_mode", False) and config.actor_rollout_ref.rollout.multi_turn.enable:
            self.engine = self._agent_loop_engine()
        else:
            raise UserError(
                "streamed rollouts run a tool agent loop: --tools sandbox with --backend cpu, or with --backend ray "
                "and actor_rollout_ref.rollout.mode=async"
            )
        self.slots = self.engine.slots
        units_per_step = self.schedule.units_per_step or 0
        self.queue_target = self.schedule.batch_units + -(-self.slots // self.group_size) + units_per_step
        self.trained = 0
        self.dropped = 0

    # ------------------------------------------------------------------ the engines
    def _cpu_engine(self):
        """The CPU backend's: the rollout worker's model behind a batched generation server in this process."""
        from spo_helpers.verl_glue.agent_loop.cpu_server import CPUGenerationServer
        from spo_helpers.verl_glue.agent_loop.stream_engine import StreamingRollout
        from spo_helpers.verl_glue.agent_loop.tool import CodeInterpreter

        rollout = self.rollout
        self.settings = rollout.tools
        _, sampling = rollout._sampling_kwargs({})
        self.server = CPUGenerationServer(
            rollout.module,
            rollout.tokenizer,
            rng_state=rollout.rng["train"],
            eos_token_id=rollout.eos_ids,
            pad_token_id=rollout.pad_token_id,
            sampling_kwargs=sampling,
            micro_batch_size=rollout.micro_batch_size,
            log_probs=True,
        )
        return StreamingRollout(
            self.scheduler,
            flush=self.server.generate_batch,
            prompt_ids=lambda item: item[1],
            turn_config=self.settings.turns,
            tool=CodeInterpreter(self.settings.tool),
            tokenizer=rollout.tokenizer,
            latency=rollout.latency,
        )

    def _agent_loop_engine(self):
        """verl's agent-loop workers and their servers (vLLM's on the GPU path), as the trainer's manager built
        them; the manager's sleep / wake-up around updates when it frees the servers' cache between batches."""
        from spo_helpers.verl_glue.agent_loop.agent_loop_stream import AgentLoopStreamingRollout

        manager = self.trainer.async_rollout_manager
        frees_cache = bool(self.trainer.config.actor_rollout_ref.rollout.free_cache_engine)
        return AgentLoopStreamingRollout(
            self.scheduler,
            workers=manager.agent_loop_workers,
            request=lambda item: item[1],
            wake_up=manager.wake_up if frees_cache else None,
            sleep=manager.sleep if frees_cache else None,
        )

    @property
    def on_cpu_backend(self) -> bool:
        return self.server is not None

    # ------------------------------------------------------------------ the prompt queue
    def _rows_batch(self, rows: list[int]) -> DataProto:
        """The dataset rows of tracker ``rows`` as verl's loader batches them."""
        from verl.utils.dataset.rl_dataset import collate_fn

        trainer = self.trainer
        items = [trainer.train_dataset[int(trainer.key_rows[r])] for r in rows]
        return DataProto.from_single_dict(collate_fn(items))

    def _draw(self, count: int) -> list[tuple[int, Any]]:
        """``count`` prompts from the trainer's source, none already in use, as queue items (class docstring)."""
        from spo_helpers.verl_glue.agent_loop.prompt import prompt_token_ids

        trainer = self.trainer
        busy = {item[0] for item in self.engine.in_use()}
        items: list[tuple[int, Any]] = []
        for row in self.draw(count, busy)[:count]:
            if not self.on_cpu_backend:
                request = trainer._get_gen_batch(self._rows_batch([row]))
                request.meta_info["global_steps"] = trainer.global_steps
                items.append((int(row), request))
                continue
            raw = trainer.train_dataset[int(trainer.key_rows[row])]["raw_prompt"]
            ids = prompt_token_ids(
                self.rollout.tokenizer,
                raw,
                rewrite=self.settings.rewrite_prompt,
                chat_template_kwargs=self.settings.chat_template_kwargs,
            )
            items.append((int(row), tuple(int(i) for i in ids)))
        return items

    def start(self) -> None:
        self.engine.start(self._draw(self.queue_target))

    def resume(self) -> None:
        missing = self.queue_target - self.engine.queued
        if missing > 0:
            self.engine.refill(self._draw(missing))
        self.engine.resume()

    def close(self) -> None:
        self.engine.close()

    # ------------------------------------------------------------------ a step
    def next_batch(self, global_step: int) -> tuple[DataProto, list[str], dict[str, float], list[int]]:
        """The step's batch (as the synchronous path builds it, plus ``rollout_log_probs``), its prompt keys,
        the ``stream/*`` metrics, and each sample's staleness."""
        trainer = self.trainer
        closed, units, stats = self.engine.next_step(timeout=self.timeout_s)
        now = time.perf_counter()
        samples = [sample for unit in units for sample in unit]  # a group's members together, in member order
        rows = [int(s.item[0]) for s in samples]
        keys = list(trainer.tracker.keys_at(np.asarray(rows)))
        batch = self._rows_batch(rows)
        groups = [index for index, unit in enumerate(units) for _ in unit]
        batch.non_tensor_batch["uid"] = np.array([f"{global_step}-{g}" for g in groups], dtype=object)
        gen = trainer._get_gen_batch(batch)
        if self.on_cpu_backend:
            self.rollout.rng["train"] = self.server.rng_state.clone()  # checkpoints keep the stream's RNG
            batch = batch.union(self._packed([s.result for s in samples], gen))
        else:  # one-row outputs of verl's workers, as AgentLoopManager.generate_sequences concatenates them
            output = DataProto.concat([s.result for s in samples])
            output.meta_info.pop("metrics", None)
            batch = batch.union(output)
        staleness = [int(s) for s, unit in zip(closed.staleness, units, strict=True) for _ in unit]
        return batch, keys, self._metrics(closed, stats, staleness, now), staleness

    def _packed(self, results: list, gen: DataProto) -> DataProto:
        """The CPU engine's turn results as the tensors of verl's agent loop, with the behaviour log-probs."""
        from spo_helpers.verl_glue.agent_loop.cpu_server import non_tensor_fields, pack_turn_results

        trainer = self.trainer
        response_length = int(trainer.config.actor_rollout_ref.rollout.response_length)
        tensors = pack_turn_results(
            results,
            prompt_length=self.settings.prompt_length,
            response_length=response_length,
            pad_token_id=self.rollout.pad_token_id,
        )
        behaviour = torch.zeros((len(results), response_length), dtype=torch.float32)
        for row, result in enumerate(results):
            logprobs = result.response_logprobs or ()
            behaviour[row, : len(logprobs)] = torch.tensor(logprobs, dtype=torch.float32)
        tensors["rollout_log_probs"] = behaviour
        non_tensors = dict(gen.non_tensor_batch)
        non_tensors.update(non_tensor_fields(results))
        return DataProto.from_dict(tensors=tensors, non_tensors=non_tensors)

    def _metrics(self, closed, stats, staleness: list[int], now: float) -> dict[str, float]:
        """The ``stream/*`` metrics of a closed step (``staleness``: each trained sample's)."""
        self.trained += len(staleness)
        self.dropped += len(closed.dropped)
        elapsed = now - stats.started_at
        slots = self.slots
        metrics = {
            "stream/staleness/mean": float(np.mean(staleness)) if staleness else 0.0,
            "stream/staleness/max": float(max(staleness, default=0)),
            "stream/stale_share": float(np.mean(np.asarray(staleness) > 0)) if staleness else 0.0,
            "stream/dropped": float(len(closed.dropped)),
            STREAM_DROPPED_TOTAL: float(self.dropped),
            "stream/aborted": float(len(closed.aborted)),
            "stream/starved": float(stats.starved),
            "stream/in_flight": float(self.scheduler.in_flight),
            STREAM_SLOT_UTILISATION: stats.utilisation(slots, now),
            "stream/samples_per_second": len(staleness) / elapsed if elapsed > 0 else 0.0,
            "stream/step_wait_seconds": float(elapsed),
            "stream/version": float(closed.version),
        }
        if not math.isfinite(metrics[STREAM_SLOT_UTILISATION]):
            metrics[STREAM_SLOT_UTILISATION] = 0.0
        return metrics
