"""Which worker backend and preset a stage runs with: the one resolution the CLI and the notebooks share.

Backends: ``cpu`` (verl's trainer in-process on the tiny world, the default without a GPU) and ``ray``
(verl's FSDP + vLLM workers on GPU nodes, or with ``--device cpu`` verl's FSDP workers as Ray actors on CPU:
``verl_glue/ray_cpu``). Presets: ``cpu`` (the tiny world), ``official`` (the final ``train.sh``) and ``paper``
(the paper's first release); their settings are config groups under ``spo_helpers/verl_glue/config/preset/``.
"""

from __future__ import annotations

from spo_helpers.errors import UserError

BACKENDS = ("cpu", "ray")
PRESETS = ("cpu", "official", "paper")
DEVICES = ("cuda", "cpu")
"""Where the ``ray`` backend's workers run: GPUs (the default) or CPUs (its CPU mode, the ``cpu`` preset only)."""


def gpu_available() -> bool:
    """Whether torch sees a CUDA device (False when torch is not installed)."""
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def check_choices(backend: str | None = None, preset: str | None = None, device: str | None = None) -> None:
    """Each of ``backend``, ``preset``, ``device`` that is chosen (not None) is one of its options."""
    chosen = (("backend", backend, BACKENDS), ("preset", preset, PRESETS), ("device", device, DEVICES))
    for what, value, options in chosen:
        if value is not None and value not in options:
            raise UserError(f"unknown {what} {value!r}; choose one of {', '.join(options)}")


def resolve_backend(
    backend: str | None = None, preset: str | None = None, device: str | None = None
) -> tuple[str, str]:
    """``(backend, preset)`` from what the user chose (None: not chosen).

    Without a choice: ``ray`` with the ``official`` preset when a GPU is visible, else ``cpu`` with ``cpu``.
    The ``cpu`` preset also runs on ``ray`` (the tiny world on GPU workers: a fast smoke run); the GPU
    presets need ``ray``. ``ray`` with ``device="cpu"`` is the ray backend's CPU mode (verl's workers as Ray
    actors on CPU), with or without a GPU; its preset defaults to ``cpu`` (another one is refused by ``RunSpec``,
    with the fix in the message).
    """
    check_choices(backend, preset, device)
    if backend == "ray" and device == "cpu":
        return "ray", preset or "cpu"
    backend = backend or (preset != "cpu" and gpu_available() and "ray") or "cpu"
    if preset is None and backend == "ray" and not gpu_available():
        backend = "cpu"
    preset = preset or ("cpu" if backend == "cpu" else "official")
    if preset != "cpu" and backend == "cpu":
        raise UserError(f"the {preset} preset needs GPU nodes (--backend ray); the CPU backend runs --preset cpu")
    return backend, preset
