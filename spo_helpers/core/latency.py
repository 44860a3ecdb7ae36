"""Long-tailed latencies: the throughput model's time distributions, and a seeded delay per code run.

A draw ``L`` (seconds when it delays a code run; the simulation's own unit there):

    constant      L = scale
    exponential   L ~ Exp(mean = scale)
    lognormal     L = exp(mu + sigma Z),  Z ~ N(0, 1)             (tail weight: sigma)
    pareto        L = scale (1 + Lomax(shape)), i.e. Pareto(x_m = scale, shape)   (tail weight: 1 / shape)

``LatencyModel.delay(*words)`` is the latency of one code run named by integers (a sample's id, its call
number): a draw from a generator seeded by ``(seed, *words)``, so the same run gets the same delay whatever
ran before it or beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LATENCY_DISTRIBUTIONS = ("lognormal", "pareto", "exponential", "constant")
NO_LATENCY = "none"


def draw_latencies(
    dist: str,
    size: int,
    rng: np.random.Generator,
    *,
    mu: float = 0.0,
    sigma: float = 1.0,
    pareto_shape: float = 2.0,
    scale: float = 1.0,
) -> np.ndarray:
    """``size`` draws of ``dist`` (module docstring), one generator call each distribution."""
    if dist == "constant":
        return np.full(size, float(scale))
    if dist == "exponential":
        return rng.exponential(scale, size)
    if dist == "lognormal":
        return rng.lognormal(mu, sigma, size)
    if dist == "pareto":
        return scale * (1.0 + rng.pareto(pareto_shape, size))
    raise ValueError(f"dist must be one of {LATENCY_DISTRIBUTIONS}, got {dist!r}")


@dataclass(frozen=True)
class LatencyModel:
    """An added delay per code run (``kit.tool_latency``); ``dist="none"`` (the default) adds nothing.

    dist: none | lognormal | pareto | exponential | constant. mu, sigma: lognormal (seconds: the median delay is
    ``exp(mu)``). pareto_shape, scale: Pareto (``scale`` is the minimum delay) and the scale of the exponential
    and constant delays. seed: the delays' own seed. max_s: a cap on one delay (a Pareto tail is unbounded).
    """

    dist: str = NO_LATENCY
    mu: float = 0.0
    sigma: float = 1.0
    pareto_shape: float = 2.0
    scale: float = 1.0
    seed: int = 0
    max_s: float = 60.0

    def __post_init__(self) -> None:
        if self.dist != NO_LATENCY and self.dist not in LATENCY_DISTRIBUTIONS:
            raise ValueError(
                f"tool latency dist must be {NO_LATENCY} or one of {LATENCY_DISTRIBUTIONS}, got {self.dist!r}"
            )
        if self.sigma < 0 or self.pareto_shape <= 0 or self.scale <= 0 or self.max_s <= 0:
            raise ValueError(
                f"tool latency needs sigma >= 0, pareto_shape > 0, scale > 0 and max_s > 0; got sigma={self.sigma}, "
                f"pareto_shape={self.pareto_shape}, scale={self.scale}, max_s={self.max_s}"
            )

    @property
    def enabled(self) -> bool:
        return self.dist != NO_LATENCY

    def draw(self, size: int, rng: np.random.Generator) -> np.ndarray:
        """``size`` delays from ``rng``, capped at ``max_s`` (zeros when off)."""
        if not self.enabled:
            return np.zeros(size)
        values = draw_latencies(
            self.dist, size, rng, mu=self.mu, sigma=self.sigma, pareto_shape=self.pareto_shape, scale=self.scale
        )
        return np.minimum(values, self.max_s)

    def delay(self, *words: int) -> float:
        """Seconds added to the code run named by ``words``: ``draw(1, Generator(SeedSequence([seed, *words])))``."""
        if not self.enabled:
            return 0.0
        entropy = [int(self.seed) & 0xFFFFFFFF, *(int(w) & 0xFFFFFFFFFFFFFFFF for w in words)]
        return float(self.draw(1, np.random.default_rng(np.random.SeedSequence(entropy)))[0])

    @classmethod
    def from_mapping(cls, section) -> LatencyModel:
        """From ``kit.tool_latency`` (a mapping, a DictConfig, or ``None`` for off)."""
        if not section:
            return cls()
        known = {
            k: section[k] for k in ("dist", "mu", "sigma", "pareto_shape", "scale", "seed", "max_s") if k in section
        }
        return cls(**{k: (str(v) if k == "dist" else int(v) if k == "seed" else float(v)) for k, v in known.items()})
