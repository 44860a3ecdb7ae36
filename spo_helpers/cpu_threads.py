"""The thread policy of every process the kit starts on CPU: waiting threads sleep, and each process computes
with its share of the cores.

torch's CPU kernels run on an OpenMP pool of one thread per core. With ``OMP_WAIT_POLICY`` unset, GNU OpenMP
keeps a finished region's threads spinning for a while so the next region starts without a wake-up. On an idle
machine that saves a little; beside other busy processes the spinning threads hold the cores the working thread
is waiting for (a 10-step CPU training on 2 cores beside two busy processes: 72 s and 63 CPU-s with torch's
defaults, 33 s and 21 CPU-s with a passive wait policy; bench/bench_contention.py measures it). Several
processes that each start one thread per core (the Ray CPU mode's ranks) crowd each other the same way.

The policy, set in the environment before torch (and with it the OpenMP runtime) loads::

    OMP_WAIT_POLICY = PASSIVE                       # a waiting thread sleeps instead of spinning
    OMP_NUM_THREADS = max(1, cores // share)        # cores: those this process may use (affinity, cgroup quota)
                                                    # share: processes computing at once (Ray CPU: the ranks)

A value the user set is kept (``OMP_NUM_THREADS`` / ``OMP_WAIT_POLICY`` in the environment; in a notebook whose
kernel already imported torch, its ``torch.set_num_threads``). ``SPO_CPU_THREADS=torch`` leaves torch's defaults
alone (the benchmark's baseline). Processes on a machine with an NVIDIA GPU are left as they are, unless the
stage runs on CPU (``--backend cpu`` or ``--device cpu``). A run records what it ran with in ``config.yaml``
(``threads``).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

SWITCH_ENV = "SPO_CPU_THREADS"
"""``kit`` (default): the policy above; ``torch``: torch's own defaults, nothing set."""
SWITCH_VALUES = ("kit", "torch")
KIT_SET_ENV = "SPO_CPU_THREADS_SET"
"""The variables the kit set (comma separated), so a child process tells the kit's values from the user's."""
WAIT_POLICY = "PASSIVE"
VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cores() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota (containers, CI runners)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def machine_has_gpu() -> bool:
    """Whether an NVIDIA GPU is present (its device files; torch is not imported for this)."""
    return any(Path("/dev").glob("nvidia[0-9]*"))


def switch(environ: dict[str, str] | None = None) -> str:
    value = (os.environ if environ is None else environ).get(SWITCH_ENV, "kit").strip().lower() or "kit"
    if value not in SWITCH_VALUES:
        raise ValueError(f"{SWITCH_ENV}={value!r}: choose one of {', '.join(SWITCH_VALUES)}")
    return value


def user_values(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The thread variables the user set: present in the environment and not set by the kit."""
    environ = os.environ if environ is None else environ
    kit_set = set(filter(None, environ.get(KIT_SET_ENV, "").split(",")))
    return {name: environ[name] for name in VARIABLES if name in environ and name not in kit_set}


@dataclass(frozen=True)
class ThreadPolicy:
    """The thread settings of one process, and who chose each (``kit``, ``user`` or ``torch``: left unset)."""

    num_threads: int | None
    wait_policy: str | None
    chosen_by: dict[str, str] = field(default_factory=dict)
    cores: int = 1
    share: int = 1

    def kit_env(self) -> dict[str, str]:
        """The variables the kit sets for this process (the user's and torch's are left out)."""
        values = {"OMP_NUM_THREADS": str(self.num_threads), "OMP_WAIT_POLICY": str(self.wait_policy)}
        chosen = {name: value for name, value in values.items() if self.chosen_by.get(name) == "kit"}
        if chosen:
            chosen[KIT_SET_ENV] = ",".join(chosen)
        return chosen


def choose(share: int = 1, environ: dict[str, str] | None = None, cores: int | None = None) -> ThreadPolicy:
    """The policy for a process that computes beside ``share - 1`` others of the kit on this machine's cores.

    ``OMP_NUM_THREADS = max(1, cores // share)`` and ``OMP_WAIT_POLICY = PASSIVE``, each unless the user set it;
    with ``SPO_CPU_THREADS=torch`` nothing is chosen.
    """
    environ = os.environ if environ is None else environ
    cores = available_cores() if cores is None else cores
    share = max(1, int(share))
    if switch(environ) == "torch":
        return ThreadPolicy(None, None, dict.fromkeys(VARIABLES, "torch"), cores, share)
    users = user_values(environ)
    threads = int(users["OMP_NUM_THREADS"]) if "OMP_NUM_THREADS" in users else max(1, cores // share)
    wait = users.get("OMP_WAIT_POLICY", WAIT_POLICY)
    chosen_by = {name: ("user" if name in users else "kit") for name in VARIABLES}
    return ThreadPolicy(threads, wait, chosen_by, cores, share)


def apply(share: int = 1) -> ThreadPolicy:
    """Set this process's policy in ``os.environ`` (before torch loads, so its OpenMP pool follows it).

    Where torch is already loaded (a notebook kernel that imported it), the wait policy can no longer change and
    the thread count is left to torch unless the user's environment names one: said once in the log.
    """
    policy = choose(share)
    os.environ.update(policy.kit_env())
    if "torch" in sys.modules and policy.num_threads is not None:
        import torch

        if policy.chosen_by["OMP_NUM_THREADS"] == "user":
            torch.set_num_threads(policy.num_threads)
        else:
            logger.debug(
                "torch was loaded before the kit's thread policy: it keeps %d threads and OpenMP's wait policy "
                "(restart the kernel to apply OMP_WAIT_POLICY=%s, OMP_NUM_THREADS=%d)",
                torch.get_num_threads(),
                policy.wait_policy,
                policy.num_threads,
            )
    return policy


def apply_unless_gpu(on_cpu: bool = False) -> ThreadPolicy | None:
    """``apply()`` on a machine without a GPU, or for work that runs on CPU (``on_cpu``: ``--backend cpu`` /
    ``--device cpu``); GPU runs are left as they are (None)."""
    if machine_has_gpu() and not on_cpu:
        return None
    return apply()


def stage_runs_on_cpu(args: object) -> bool:
    """Whether an ``spo`` command's arguments put its compute on CPU (``--backend cpu`` or ``--device cpu``)."""
    return getattr(args, "backend", None) == "cpu" or getattr(args, "device", None) == "cpu"


def worker_env(share: int) -> dict[str, str]:
    """The variables for worker processes that compute ``share`` at a time on this machine (Ray CPU actors).

    A worker inherits its parent's environment, where the kit may have set one process's share of the cores:
    the worker's own share replaces it. The user's values are passed unchanged.
    """
    policy = choose(share)
    env = policy.kit_env()
    env.update(user_values())
    return env


def record(share: int = 1, workers: dict[str, str] | None = None) -> dict[str, object]:
    """What a run computes with, for its ``config.yaml``: the variables, who chose them, torch's thread count
    (when torch is loaded), the cores, and the workers' variables where the run has workers."""
    policy = choose(share)
    out: dict[str, object] = {
        "policy": switch(),
        "cores": policy.cores,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "chosen_by": dict(policy.chosen_by),
    }
    if "torch" in sys.modules:
        import torch

        out["torch_num_threads"] = torch.get_num_threads()
    if workers:
        out["workers"] = dict(workers)
    return out
