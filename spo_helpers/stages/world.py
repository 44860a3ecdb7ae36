"""Build the offline CPU world; ``--tools``: its tool-integrated (TIR) variant, checked through the agent loop.

The world itself is built by ``world.build`` (task, tokenizer, tiny model, warm start). The TIR world's
success rates need model-written code to run, which happens only in the kit's sandbox: this command
samples the warm-started model through the real agent loop (``verl_glue.agent_loop.cpu_server``:
``run_tool_rollout``, the ``CodeInterpreter`` tool) on a local sandbox server (``sandbox.local_sandbox``,
or ``--sandbox_url``), scores each response with the kit's reward and writes per-prompt success, the
tool-call rate and success with and without a call, by difficulty, into the world's manifest. A world
already measured is returned at once, without starting a sandbox.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from spo_helpers.world.build import build_world, needs_tool_check, record_tool_check, tool_check_jobs
from spo_helpers.world.paths import ASSETS_ENV, WorldPaths, read_manifest
from spo_helpers.world.summary import summary
from spo_helpers.world.task import row_answer
from spo_helpers.world.traces import TOOL_PROMPT_LENGTH, TOOL_RESPONSE_LENGTH, TOOL_SHARE, ToolSamples

CHECK_RUN_TIMEOUT_S = 5.0  # seconds per code run in the check (the arithmetic takes milliseconds)
CHECK_BATCH = 256  # rollouts per run_tool_rollout call

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def sandbox_url(url: str | None = None) -> Iterator[str]:
    """``url`` as it is, or a local sandbox server's ``/run_code`` URL for as long as the block runs."""
    if url:
        yield url
        return
    from spo_helpers.sandbox.client import local_sandbox

    with local_sandbox() as local:
        yield local


def sample_with_tools(
    model,
    tokenizer,
    rows: Sequence[Mapping[str, Any]],
    *,
    url: str,
    n: int = 8,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    response_length: int = TOOL_RESPONSE_LENGTH,
    prompt_length: int = TOOL_PROMPT_LENGTH,
    batch_size: int = CHECK_BATCH,
    run_timeout: float = CHECK_RUN_TIMEOUT_S,
) -> ToolSamples:
    """``n`` rollouts per row through the agent loop (code run by the sandbox at ``url``), each scored.

    The prompt is the dataset's chat (``rewrite_prompt=False``, as the CPU world trains); sampling as the
    CPU rollout samples (``top_k`` off), from a torch generator seeded with ``seed``. The reward is the
    kit's (``verl_glue.reward.compute_score`` on the decoded response, interpreter text included, as
    verl's reward manager decodes it).
    """
    import numpy as np
    import torch

    from spo_helpers.verl_glue.agent_loop.cpu_server import run_tool_rollout
    from spo_helpers.verl_glue.agent_loop.tool import CodeInterpreter, ToolConfig
    from spo_helpers.verl_glue.agent_loop.turns import StopReason, TurnConfig
    from spo_helpers.verl_glue.reward import compute_score

    config = TurnConfig(response_length=response_length)
    tool = CodeInterpreter(ToolConfig(url=url, run_timeout=run_timeout))
    sampling = {"do_sample": True, "temperature": float(temperature), "top_p": float(top_p), "top_k": 0}
    state = torch.Generator().manual_seed(seed).get_state()
    jobs = [row for row in rows for _ in range(n)]
    shape = (len(rows), n)
    success, calls = np.zeros(len(jobs), dtype=bool), np.zeros(len(jobs), dtype=np.int64)
    tokens, over = np.zeros(len(jobs), dtype=np.int64), np.zeros(len(jobs), dtype=bool)
    budget_stops = {StopReason.BUDGET.value, StopReason.TOOL_OVER_BUDGET.value}
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        rollout = run_tool_rollout(
            model,
            tokenizer,
            [row["prompt"] for row in chunk],
            config=config,
            tool=tool,
            rng_state=state,
            sampling_kwargs=sampling,
            prompt_length=prompt_length,
            rewrite_prompt=False,
        )
        state = rollout.rng_state
        for offset, (row, result) in enumerate(zip(chunk, rollout.results, strict=True)):
            text = tokenizer.decode(result.response_ids, skip_special_tokens=True)
            score = compute_score(row["data_source"], text, row_answer(row), row.get("extra_info"))["score"]
            i = start + offset
            success[i] = score > 0
            calls[i] = result.metrics.tool_calls
            tokens[i] = result.metrics.response_tokens
            over[i] = result.metrics.stop_reason in budget_stops
    return ToolSamples(
        success=success.reshape(shape),
        tool_calls=calls.reshape(shape),
        response_tokens=tokens.reshape(shape),
        out_of_budget=over.reshape(shape),
    )


def check_tool_world(paths: WorldPaths, *, url: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Measure a TIR world's success with tools (``world.build.tool_check_jobs``) and record it in its manifest."""
    import torch

    from spo_helpers.world.model import load_model

    torch.set_num_threads(min(2, torch.get_num_threads()))
    seed = int((read_manifest(paths) or {}).get("seed", 0))
    model, tokenizer = load_model(paths.model_dir)
    jobs = tool_check_jobs(paths)
    started = time.perf_counter()
    samples: dict[str, ToolSamples] = {}
    with sandbox_url(url) as served:
        for job in jobs:
            if progress:
                logger.info(
                    "[world] tool check: %d %s prompts x %d samples at T=%s",
                    len(job.rows),
                    job.section,
                    job.n,
                    job.temperature,
                )
            samples[job.section] = sample_with_tools(
                model, tokenizer, job.rows, url=served, n=job.n, temperature=job.temperature, top_p=job.top_p, seed=seed
            )
    return record_tool_check(
        paths, jobs, samples, response_length=TOOL_RESPONSE_LENGTH, seconds=time.perf_counter() - started
    )


def build_tool_world(
    assets_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    num_train: int = 3000,
    num_val: int = 200,
    tool_share: float = TOOL_SHARE,
    force: bool = False,
    progress: bool = True,
    warm_start=None,
    model_config=None,
    url: str | None = None,
    check: bool = True,
) -> WorldPaths:
    """The TIR world (built or cached by ``world.build.build_world(..., tools=True)``), its tool check done.

    ``check=False`` skips the check (the manifest's ``spread`` stays ``null``); a later call with the
    default runs it on the cached world.
    """
    paths = build_world(
        assets_dir,
        seed=seed,
        num_train=num_train,
        num_val=num_val,
        force=force,
        progress=progress,
        warm_start=warm_start,
        model_config=model_config,
        tools=True,
        tool_share=tool_share,
    )
    if check and needs_tool_check(paths):
        check_tool_world(paths, url=url, progress=progress)
    if progress:
        print(summary(paths), flush=True)
    return paths


USAGE = """\
  spo world                              # the CPU world, cached in runs/_assets/
  spo world --tools                      # its tool-integrated variant, checked in a sandbox
  spo world --seed 1 --num_train 1000 --quiet

Details: README.md (The CPU world), docs/tools.md (The CPU world with tools)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--assets", metavar="DIR", default=None, help=f"assets folder (default: ${ASSETS_ENV} or ./runs/_assets)"
    )
    parser.add_argument("--seed", metavar="N", type=int, default=0, help="(default 0)")
    parser.add_argument(
        "--num_train",
        "--num-train",
        dest="num_train",
        metavar="N",
        type=int,
        default=3000,
        help="training prompts (default 3000)",
    )
    parser.add_argument(
        "--num_val",
        "--num-val",
        dest="num_val",
        metavar="N",
        type=int,
        default=200,
        help="held-out prompts (default 200)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when a matching world exists")
    parser.add_argument("--quiet", action="store_true", help="print only the world's folder")
    parser.add_argument(
        "--tools",
        action="store_true",
        help="the tool-integrated variant, its success measured in the sandbox",
    )
    parser.add_argument(
        "--tool_share",
        metavar="X",
        type=float,
        default=None,
        help=f"with --tools: share of tool traces in the warm start (default {TOOL_SHARE})",
    )
    parser.add_argument(
        "--sandbox_url",
        metavar="URL",
        default=None,
        help="with --tools: a running /run_code server (default: start one)",
    )


def run(args: argparse.Namespace) -> int:
    if not args.tools:
        if args.tool_share is not None or args.sandbox_url:
            from spo_helpers.errors import UserError

            raise UserError("--tool_share and --sandbox_url apply to the tool world: add --tools")
        paths = build_world(
            args.assets,
            seed=args.seed,
            num_train=args.num_train,
            num_val=args.num_val,
            force=args.force,
            progress=not args.quiet,
        )
    else:
        paths = build_tool_world(
            args.assets,
            seed=args.seed,
            num_train=args.num_train,
            num_val=args.num_val,
            tool_share=TOOL_SHARE if args.tool_share is None else args.tool_share,
            force=args.force,
            progress=not args.quiet,
            url=args.sandbox_url,
        )
    if args.quiet:
        print(paths.root)
    return 0


__all__ = ["add_arguments", "build_tool_world", "check_tool_world", "run", "sample_with_tools", "sandbox_url"]
