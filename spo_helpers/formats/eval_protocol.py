"""The evaluation protocol: how a model is sampled when it is scored, one place for every stage.

Stage 02 (offline value estimation), stage 04's validation during training and ``spo evaluate`` all sample
with the same settings per preset; only the number of samples per prompt differs by use:

    estimate  n samples per prompt for the offline values (the official eval.sh: 8)
    validate  n samples per prompt of the validation during training (the official train.sh: 16)
    evaluate  n samples per problem of the final evaluation (the paper's maj@32 and pass@k: 32)

The kit's verl config reads these values through the ``${spo.eval:<preset>,<field>}`` resolver
(``verl_glue/config.py``), and the analysis reads them to decide whether a table may stand beside the
paper's numbers (``same_as_paper``).

The paper reports maj@32 and pass@k of Qwen3-8B at temperature 0.6 and top-p 0.95 (the official recipe's
validation settings) with 16K responses (the paper preset). The official config also names top-k 20
(``val_kwargs.top_k``), which the kit's config keeps, but no request carries it: verl 0.6.1's asynchronous
rollout, which the official runs and the GPU presets validate with, sends only the temperature and top-p
(``experimental/agent_loop/agent_loop.py`` 333-343), so vLLM samples without top-k there (``top_k_sent``). The cpu
preset samples its 0.4M-parameter model with the same temperature and top-p, without top-k, and fewer samples
while training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

USES = ("estimate", "validate", "evaluate")


@dataclass(frozen=True)
class EvalProtocol:
    """Sampling settings of one preset, and the samples per prompt of each use."""

    preset: str
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = -1  # the configured val_kwargs.top_k; -1: no top-k
    top_k_sent: bool = True  # whether the rollout's requests carry top_k (not verl 0.6.1's async rollout)
    n_estimate: int = 8
    n_validate: int = 16
    n_evaluate: int = 32

    def n(self, use: str) -> int:
        if use not in USES:
            raise ValueError(f"use must be one of {USES}, got {use!r}")
        return int(getattr(self, f"n_{use}"))

    @property
    def effective_top_k(self) -> int:
        """The top-k samples are drawn with: the configured one where requests carry it, else none (-1)."""
        return self.top_k if self.top_k_sent else -1

    def sampling(self) -> dict[str, Any]:
        """The settings that decide what a sample is (not how many): temperature, top_p, the top-k applied."""
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.effective_top_k}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self, use: str = "evaluate") -> str:
        top_k = "no top-k" if self.effective_top_k < 0 else f"top-k {self.effective_top_k}"
        if self.top_k >= 0 and not self.top_k_sent:
            top_k += f" (top-k {self.top_k} configured, not sent by verl's async rollout)"
        return f"n={self.n(use)}, temperature {self.temperature}, top-p {self.top_p}, {top_k}"


PROTOCOLS: dict[str, EvalProtocol] = {
    "cpu": EvalProtocol("cpu", top_k=-1, n_estimate=8, n_validate=4, n_evaluate=32),
    "official": EvalProtocol("official", top_k=20, top_k_sent=False, n_estimate=8, n_validate=16, n_evaluate=32),
    "paper": EvalProtocol("paper", top_k=20, top_k_sent=False, n_estimate=8, n_validate=16, n_evaluate=32),
}

PAPER_PROTOCOL = PROTOCOLS["paper"]
"""What the paper's maj@32 / pass@k numbers were measured with (n = 32 at the official sampling settings)."""


def protocol(preset: str) -> EvalProtocol:
    """The protocol of a preset; ``ValueError`` naming the known presets otherwise."""
    try:
        return PROTOCOLS[str(preset)]
    except KeyError:
        raise ValueError(f"no evaluation protocol for preset {preset!r}; known: {', '.join(PROTOCOLS)}") from None


def protocol_value(preset: str, field: str) -> Any:
    """One field of a preset's protocol (the ``${spo.eval:<preset>,<field>}`` resolver)."""
    chosen = protocol(preset)
    if field not in chosen.as_dict() or field == "preset":
        raise ValueError(f"the evaluation protocol has no field {field!r}; fields: {', '.join(chosen.as_dict())}")
    return getattr(chosen, field)


def applied_top_k(top_k: Any, rollout_mode: str | None) -> int:
    """The top-k a run's validation samples with: its ``val_kwargs.top_k`` on the sync rollout, none (-1) on the
    async one, whose requests do not carry it (module doc)."""
    if top_k is None or str(rollout_mode) == "async":
        return -1
    return int(top_k)


def same_as_paper(settings: dict[str, Any], n: int, benchmarks: set[str] | None = None) -> tuple[bool, str]:
    """Whether measured ``settings`` (temperature, top_p, the top-k applied) with ``n`` samples match the paper's
    protocol.

    Returns ``(same, reason)``: the reason names every difference (or says it is the same protocol).
    """
    want = PAPER_PROTOCOL
    differences = []
    if int(n) != want.n_evaluate:
        differences.append(f"n={n} (paper: {want.n_evaluate})")
    for key, value in want.sampling().items():
        got = settings.get(key)
        if got is None or float(got) != float(value):
            differences.append(f"{key}={got} (paper: {value})")
    if benchmarks is not None:
        from spo_helpers.formats.benchmarks import PAPER_BENCHMARK_NAMES

        missing = [b for b in PAPER_BENCHMARK_NAMES if b not in benchmarks]
        if missing:
            differences.append(f"benchmarks without {', '.join(missing)}")
    if differences:
        return False, "not the paper's protocol: " + "; ".join(differences)
    return True, f"the paper's protocol ({want.describe()})"


def with_n(chosen: EvalProtocol, use: str, n: int) -> EvalProtocol:
    """A copy of ``chosen`` with ``n`` samples for ``use``."""
    return replace(chosen, **{f"n_{use}": int(n)})
