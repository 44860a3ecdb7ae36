"""In-process generation for tool-integrated rollouts on the CPU backend: the tiny model as the server.

The turn logic (``turns.run_turns``) talks to an async ``generate``. On GPU nodes that is verl's vLLM
server; here it is ``CPUGenerationServer``, which answers from a Hugging Face causal LM with
``generate()`` (no ``position_ids``: ``generate`` derives them from the attention mask), stop strings
checked token by token, and the caller's RNG state.

**Rounds.** All samples of a batch run their turn logic concurrently (``asyncio``); a ``Lockstep`` gate
collects their requests and answers them in one batched ``generate`` call once *every* live sample is
waiting for one (samples busy in a code run are waited for). Rows are ordered by sample index. So the
composition of every round, and with it every random draw, depends only on the batch and the RNG state,
never on how long code runs take: the same state gives the same rollouts.

**Stopping.** A row ends at the first of: an EOS token (kept), the token that completes a stop string
(kept whole, as vLLM with ``include_stop_str_in_output=True`` keeps it, even if it runs past the string),
or the request's ``max_tokens``. Rows of one call share ``max_new_tokens`` (the largest asked); a row
that reached its own limit is stopped there.

**Randomness.** ``run_tool_rollout`` takes an RNG state (a ``torch.Generator().get_state()`` byte
tensor, e.g. the CPU worker's ``rollout.rng["train"]``) and returns the advanced one for the caller to
keep and checkpoint. Sampling runs with torch's global generator set to that state and restores the
global state afterwards, so nothing else sees or moves it.

``pack_turn_results`` lays the results out as verl's agent-loop workers do (prompts left-padded to
``prompt_length``, responses right-padded to ``response_length``, ``response_mask`` 0 on interpreter
tokens and padding) and ``non_tensor_fields`` adds ``__num_turns__`` and ``tool_metrics``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from spo_helpers.core.latency import LatencyModel
from spo_helpers.verl_glue.agent_loop.prompt import check_prompt_length, prompt_token_ids
from spo_helpers.verl_glue.agent_loop.turns import (
    CodeTool,
    GenerateRequest,
    Generation,
    ToolTurns,
    TurnConfig,
    TurnResult,
    run_turns,
)

logger = logging.getLogger(__name__)

STOP_WINDOW_SLACK = 8  # tokens decoded beyond the stop string's length when looking for it


@contextmanager
def torch_rng(state: torch.Tensor) -> Iterator[dict[str, torch.Tensor]]:
    """Run with torch's global RNG at ``state``; the holder gets the state reached, the global one is restored."""
    outer = torch.get_rng_state()
    torch.set_rng_state(state)
    holder: dict[str, torch.Tensor] = {}
    try:
        yield holder
    finally:
        holder["state"] = torch.get_rng_state()
        torch.set_rng_state(outer)


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


class StopCriteria(StoppingCriteria):
    """Per-row stop checks for ``generate()``: EOS, a stop string in the decoded tail, the row's own limit.

    ``finish[row]`` is the index (in the generated part) of the row's last kept token once it stopped.
    """

    def __init__(
        self,
        tokenizer: Any,
        prompt_width: int,
        stops: Sequence[Sequence[str]],
        max_tokens: Sequence[int],
        eos_token_ids: Sequence[int],
    ) -> None:
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width
        self.stops = [tuple(s for s in row if s) for row in stops]
        self.max_tokens = list(max_tokens)
        self.eos = set(eos_token_ids)
        self.finish: list[int | None] = [None] * len(self.max_tokens)

    def _stop_string_ends_here(self, generated: torch.Tensor, stops: tuple[str, ...]) -> bool:
        window = max(len(s) for s in stops) + STOP_WINDOW_SLACK
        text = self.tokenizer.decode(generated[-window:].tolist(), skip_special_tokens=False)
        return any(s in text for s in stops)

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        count = input_ids.shape[1] - self.prompt_width
        for row, finish in enumerate(self.finish):
            if finish is not None or count < 1:
                continue
            stops = self.stops[row]
            if (
                int(input_ids[row, -1]) in self.eos
                or count >= self.max_tokens[row]
                or (stops and self._stop_string_ends_here(input_ids[row, self.prompt_width :], stops))
            ):
                self.finish[row] = count - 1
        return torch.tensor([f is not None for f in self.finish], dtype=torch.bool, device=input_ids.device)


class CPUGenerationServer:
    """Batched ``generate()`` on an in-process model, drawing from an RNG state it carries (``rng_state``)."""

    def __init__(
        self,
        module: torch.nn.Module,
        tokenizer: Any,
        *,
        rng_state: torch.Tensor,
        eos_token_id: int | Sequence[int],
        pad_token_id: int,
        sampling_kwargs: Mapping[str, Any] | None = None,
        micro_batch_size: int = 256,
        log_probs: bool = False,
    ) -> None:
        self.module = module
        self.log_probs = bool(log_probs)  # answer each token's log-prob under the sampling distribution
        self.tokenizer = tokenizer
        self.rng_state = rng_state.clone()
        self.eos_ids = _ids(eos_token_id)
        self.pad_token_id = int(pad_token_id)
        self.sampling_kwargs = dict(sampling_kwargs or {"do_sample": True})
        self.micro_batch_size = max(1, int(micro_batch_size))
        self.calls = 0

    def _generate_chunk(self, requests: Sequence[GenerateRequest]) -> list[Generation]:
        width = max(len(r.prompt_ids) for r in requests)
        ids = torch.full((len(requests), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(requests), width), dtype=torch.long)
        for row, request in enumerate(requests):
            length = len(request.prompt_ids)
            ids[row, width - length :] = torch.tensor(request.prompt_ids, dtype=torch.long)
            mask[row, width - length :] = 1
        criteria = StopCriteria(
            self.tokenizer, width, [r.stop for r in requests], [r.max_tokens for r in requests], self.eos_ids
        )
        out = self.module.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max(r.max_tokens for r in requests),
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_token_id,
            stopping_criteria=StoppingCriteriaList([criteria]),
            use_cache=True,
            output_scores=self.log_probs,
            return_dict_in_generate=self.log_probs,
            **self.sampling_kwargs,
        )
        sequences = out.sequences if self.log_probs else out
        generated = sequences[:, width:]
        token_logprobs = self._token_logprobs(out.scores, generated) if self.log_probs else None
        answers = []
        for row, request in enumerate(requests):
            finish = criteria.finish[row]
            end = request.max_tokens if finish is None else min(finish + 1, request.max_tokens)
            logprobs = None if token_logprobs is None else tuple(float(x) for x in token_logprobs[row, :end])
            answers.append(Generation(token_ids=tuple(int(t) for t in generated[row, :end]), log_probs=logprobs))
        return answers

    @staticmethod
    def _token_logprobs(scores: Sequence[torch.Tensor], generated: torch.Tensor) -> torch.Tensor:
        """``log softmax(scores_t)[token_t]`` per row and step: the log-prob of each sampled token under the
        distribution it was drawn from (the logits after ``generate``'s temperature, top-k and top-p)."""
        steps = min(len(scores), generated.shape[1])
        out = torch.zeros(generated.shape, dtype=torch.float32)
        for t in range(steps):
            logp = torch.log_softmax(scores[t].float(), dim=-1)
            out[:, t] = logp.gather(1, generated[:, t : t + 1]).squeeze(1)
        return out

    @torch.no_grad()
    def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[Generation]:
        """One answer per request, in order; advances ``rng_state``."""
        if not requests:
            return []
        was_training = self.module.training
        self.module.eval()
        answers: list[Generation] = []
        try:
            with torch_rng(self.rng_state) as holder:
                for start in range(0, len(requests), self.micro_batch_size):
                    answers += self._generate_chunk(requests[start : start + self.micro_batch_size])
            self.rng_state = holder["state"]
        finally:
            self.module.train(was_training)
        self.calls += 1
        return answers


class Lockstep:
    """Turns concurrent ``await generate(request)`` calls into batches: one per round of all live samples.

    ``client(slot)`` is sample ``slot``'s ``generate``; ``retire()`` is called when a sample finishes. A batch
    goes out when every live sample waits, in slot order, through ``flush`` (a synchronous batch call).
    """

    def __init__(self, flush: Callable[[list[GenerateRequest]], list[Generation]], live: int) -> None:
        self._flush = flush
        self._live = live
        self._waiting: dict[int, tuple[GenerateRequest, asyncio.Future[Generation]]] = {}

    def client(self, slot: int) -> Callable[[GenerateRequest], Awaitable[Generation]]:
        async def generate(request: GenerateRequest) -> Generation:
            future: asyncio.Future[Generation] = asyncio.get_running_loop().create_future()
            self._waiting[slot] = (request, future)
            self._maybe_flush()
            return await future

        return generate

    def retire(self) -> None:
        self._live -= 1
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if not self._waiting or len(self._waiting) < self._live:
            return
        batch = [self._waiting[slot] for slot in sorted(self._waiting)]
        self._waiting = {}
        try:
            answers = self._flush([request for request, _ in batch])
        except Exception as err:
            for _, future in batch:
                future.set_exception(err)
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            future.set_result(answer)


@dataclass(frozen=True)
class ToolRollout:
    """A batch of rollouts, in input order, and the RNG state to keep (``rounds``: batched generate calls)."""

    results: list[TurnResult]
    rng_state: torch.Tensor
    rounds: int


async def _rollouts(
    prompts: Sequence[Sequence[int]],
    server: CPUGenerationServer,
    config: TurnConfig,
    tool: CodeTool,
    tokenizer: Any,
    delays: Sequence[Callable[[int], float] | None],
) -> list[TurnResult]:
    gate = Lockstep(server.generate_batch, live=len(prompts))

    async def one(slot: int, prompt_ids: Sequence[int]) -> TurnResult:
        try:
            turns = ToolTurns(prompt_ids, config, tokenizer, tool.extract)
            return await run_turns(turns, gate.client(slot), tool, extra_latency=delays[slot])
        finally:
            gate.retire()

    return list(await asyncio.gather(*(one(slot, ids) for slot, ids in enumerate(prompts))))


def _run_coroutine(factory: Callable[[], Awaitable[Any]]) -> Any:
    """``asyncio.run`` here, or on a helper thread when this thread already runs a loop (Jupyter, Ray actors)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def sample_delays(
    latency: LatencyModel | None, sample_words: Sequence[Sequence[int]] | None, size: int
) -> list[Callable[[int], float] | None]:
    """Per sample, the added delay of its code run number ``call`` (``None`` without a latency model)."""
    if latency is None or not latency.enabled:
        return [None] * size
    if sample_words is None or len(sample_words) != size:
        raise ValueError("a latency model needs one tuple of sample words per prompt")
    return [functools.partial(_delay_of, latency, tuple(int(w) for w in words)) for words in sample_words]


def _delay_of(latency: LatencyModel, words: tuple[int, ...], call: int) -> float:
    return latency.delay(*words, call)


def run_tool_rollout(
    module: torch.nn.Module,
    tokenizer: Any,
    raw_prompts: Sequence[Any],
    *,
    config: TurnConfig,
    tool: CodeTool,
    rng_state: torch.Tensor,
    sampling_kwargs: Mapping[str, Any] | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    prompt_length: int | None = None,
    rewrite_prompt: bool = True,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    micro_batch_size: int = 256,
    latency: LatencyModel | None = None,
    sample_words: Sequence[Sequence[int]] | None = None,
) -> ToolRollout:
    """Tool-integrated rollouts for one batch of dataset chats (``non_tensor_batch["raw_prompt"]``).

    ``sampling_kwargs`` go to ``generate()`` as they are (``do_sample``, ``temperature``, ``top_p``,
    ``top_k``: the CPU rollout's ``_sampling_kwargs``); EOS and padding default to the model's generation
    config, then the tokenizer's. With ``prompt_length`` a longer prompt is refused (verl's batch would not
    hold it). ``latency`` (with ``sample_words``, integers naming each sample, e.g. its step and row) adds the
    latency model's seeded delay to every code run: ``latency.delay(*words, call)``. Returns the results and the
    advanced RNG state, which the caller stores in place of ``rng_state``.
    """
    generation = getattr(module, "generation_config", None)
    if eos_token_id is None:
        eos_token_id = getattr(generation, "eos_token_id", None)
        eos_token_id = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    if pad_token_id is None:
        pad_token_id = getattr(generation, "pad_token_id", None)
        pad_token_id = tokenizer.pad_token_id if pad_token_id is None else pad_token_id
    if pad_token_id is None:
        pad_token_id = _ids(eos_token_id)[0]
    prompts = [
        prompt_token_ids(tokenizer, raw, rewrite=rewrite_prompt, chat_template_kwargs=chat_template_kwargs)
        for raw in raw_prompts
    ]
    if prompt_length is not None:
        for ids in prompts:
            check_prompt_length(ids, prompt_length)
    server = CPUGenerationServer(
        module,
        tokenizer,
        rng_state=rng_state,
        eos_token_id=eos_token_id,
        pad_token_id=int(pad_token_id),
        sampling_kwargs=sampling_kwargs,
        micro_batch_size=micro_batch_size,
    )
    delays = sample_delays(latency, sample_words, len(prompts))
    results = _run_coroutine(lambda: _rollouts(prompts, server, config, tool, tokenizer, delays))
    logger.debug("tool rollout: %d samples in %d rounds", len(results), server.calls)
    return ToolRollout(results=results, rng_state=server.rng_state, rounds=server.calls)


def pack_turn_results(
    results: Sequence[TurnResult], *, prompt_length: int, response_length: int, pad_token_id: int
) -> dict[str, torch.Tensor]:
    """The batch tensors verl's agent-loop workers produce, for ``DataProto.from_dict(tensors=...)``.

    ``prompts`` (left-padded), ``responses`` (right-padded), ``response_mask`` (1 on model tokens only),
    ``input_ids``, ``attention_mask`` (1 on every real token, interpreter tokens included) and
    ``position_ids`` (counting real tokens from 0).
    """
    from verl.utils.model import compute_position_id_with_mask

    size = len(results)
    prompts = torch.full((size, prompt_length), pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros((size, prompt_length), dtype=torch.long)
    responses = torch.full((size, response_length), pad_token_id, dtype=torch.long)
    response_valid = torch.zeros((size, response_length), dtype=torch.long)
    response_mask = torch.zeros((size, response_length), dtype=torch.long)
    for row, result in enumerate(results):
        check_prompt_length(result.prompt_ids, prompt_length)
        if len(result.response_ids) > response_length:
            raise ValueError(f"a response has {len(result.response_ids)} tokens, more than {response_length}")
        p, r = len(result.prompt_ids), len(result.response_ids)
        if p:
            prompts[row, prompt_length - p :] = torch.tensor(result.prompt_ids, dtype=torch.long)
            prompt_mask[row, prompt_length - p :] = 1
        if r:
            responses[row, :r] = torch.tensor(result.response_ids, dtype=torch.long)
            response_valid[row, :r] = 1
            response_mask[row, :r] = torch.tensor(result.response_mask, dtype=torch.long)
    attention_mask = torch.cat([prompt_mask, response_valid], dim=-1)
    return {
        "prompts": prompts,
        "responses": responses,
        "response_mask": response_mask,
        "input_ids": torch.cat([prompts, responses], dim=-1),
        "attention_mask": attention_mask,
        "position_ids": compute_position_id_with_mask(attention_mask),
    }


def non_tensor_fields(results: Sequence[TurnResult]) -> dict[str, np.ndarray]:
    """``__num_turns__`` (verl's name; its metrics read it) and ``tool_metrics`` (one dict per sample)."""
    metrics = np.empty(len(results), dtype=object)
    metrics[:] = [r.metrics.as_dict() for r in results]
    return {"__num_turns__": np.array([r.num_turns for r in results], dtype=np.int32), "tool_metrics": metrics}
