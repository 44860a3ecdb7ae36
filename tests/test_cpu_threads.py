"""The thread policy of the kit's CPU processes (``spo_helpers.cpu_threads``): chosen values, the user's kept, and
what torch's OpenMP runtime actually runs with in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from spo_helpers import cpu_threads
from spo_helpers.cpu_threads import KIT_SET_ENV, SWITCH_ENV, choose, user_values

CHECKOUT = Path(__file__).resolve().parents[1]


def test_the_kit_chooses_a_passive_wait_and_one_share_of_the_cores():
    policy = choose(share=1, environ={}, cores=8)
    assert (policy.num_threads, policy.wait_policy) == (8, "PASSIVE")
    assert policy.chosen_by == {"OMP_NUM_THREADS": "kit", "OMP_WAIT_POLICY": "kit"}
    assert choose(share=2, environ={}, cores=8).num_threads == 4
    assert choose(share=3, environ={}, cores=2).num_threads == 1  # never zero
    env = policy.kit_env()
    assert env == {"OMP_NUM_THREADS": "8", "OMP_WAIT_POLICY": "PASSIVE", KIT_SET_ENV: "OMP_NUM_THREADS,OMP_WAIT_POLICY"}


def test_the_users_values_are_kept_and_told_apart_from_the_kits():
    environ = {"OMP_NUM_THREADS": "3"}
    policy = choose(share=2, environ=environ, cores=8)
    assert (policy.num_threads, policy.wait_policy) == (3, "PASSIVE")
    assert policy.chosen_by == {"OMP_NUM_THREADS": "user", "OMP_WAIT_POLICY": "kit"}
    assert "OMP_NUM_THREADS" not in policy.kit_env()
    # a value a parent kit process set is the kit's: a worker with another share replaces it
    inherited = {"OMP_NUM_THREADS": "8", "OMP_WAIT_POLICY": "PASSIVE", KIT_SET_ENV: "OMP_NUM_THREADS,OMP_WAIT_POLICY"}
    assert user_values(inherited) == {}
    assert choose(share=2, environ=inherited, cores=8).num_threads == 4
    active = {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "8", KIT_SET_ENV: "OMP_NUM_THREADS"}
    assert user_values(active) == {"OMP_WAIT_POLICY": "ACTIVE"}
    assert choose(environ=active, cores=8).wait_policy == "ACTIVE"


def test_torch_switch_sets_nothing_and_a_wrong_switch_is_refused():
    policy = choose(environ={SWITCH_ENV: "torch"}, cores=8)
    assert (policy.num_threads, policy.wait_policy, policy.kit_env()) == (None, None, {})
    with pytest.raises(ValueError, match="SPO_CPU_THREADS='fast'"):
        choose(environ={SWITCH_ENV: "fast"})


def test_workers_get_their_share_in_place_of_the_parents(monkeypatch):
    monkeypatch.setattr(cpu_threads, "available_cores", lambda: 4)
    for name in (*cpu_threads.VARIABLES, KIT_SET_ENV, SWITCH_ENV):
        monkeypatch.delenv(name, raising=False)
    cpu_threads.apply()
    assert os.environ["OMP_NUM_THREADS"] == "4"
    assert cpu_threads.worker_env(share=2)["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv(KIT_SET_ENV)
    assert cpu_threads.worker_env(share=2)["OMP_NUM_THREADS"] == "1"  # the user's value, unchanged


def test_a_cgroup_quota_caps_the_cores(monkeypatch, tmp_path):
    quota = tmp_path / "cpu.max"
    monkeypatch.setattr(cpu_threads, "CGROUP_CPU_MAX", quota)
    affinity = len(os.sched_getaffinity(0))
    quota.write_text("max 100000\n")
    assert cpu_threads.available_cores() == affinity
    quota.write_text("50000 100000\n")
    assert cpu_threads.available_cores() == 1
    quota.write_text(f"{(affinity + 3) * 100000} 100000\n")
    assert cpu_threads.available_cores() == affinity


def test_a_gpu_machine_is_left_alone_unless_the_stage_runs_on_cpu(monkeypatch):
    for name in (*cpu_threads.VARIABLES, KIT_SET_ENV, SWITCH_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cpu_threads, "machine_has_gpu", lambda: True)
    assert cpu_threads.apply_unless_gpu() is None
    assert "OMP_WAIT_POLICY" not in os.environ
    assert cpu_threads.apply_unless_gpu(on_cpu=True).wait_policy == "PASSIVE"
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert cpu_threads.stage_runs_on_cpu(type("Args", (), {"backend": "ray", "device": "cpu"})())


PROBE = textwrap.dedent(
    """
    import json, os, sys
    from spo_helpers import cpu_threads
    cpu_threads.apply()
    import torch
    torch.ones(64, 64) @ torch.ones(64, 64)  # starts the OpenMP pool
    print(json.dumps({"threads": torch.get_num_threads(), "record": cpu_threads.record()}))
    """
)


def probe(env: dict[str, str]) -> tuple[dict, str]:
    """Run PROBE in a fresh interpreter; OMP_DISPLAY_ENV makes GNU OpenMP print its settings as it starts (its
    ``GOMP_SPINCOUNT`` says how long a waiting thread spins: 0 under a passive policy, 300000 by default)."""
    pytest.importorskip("torch")
    clean = {k: v for k, v in os.environ.items() if k not in (*cpu_threads.VARIABLES, KIT_SET_ENV, SWITCH_ENV)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, "OMP_DISPLAY_ENV": "VERBOSE", **env},
        capture_output=True,
        text=True,
        cwd=CHECKOUT,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_torch_runs_with_the_policy_in_a_fresh_process():
    facts, openmp = probe({})
    cores = cpu_threads.available_cores()
    assert facts["threads"] == cores
    assert "GOMP_SPINCOUNT = '0'" in openmp  # what the OpenMP runtime itself read: waiting threads never spin
    assert facts["record"]["chosen_by"] == {"OMP_NUM_THREADS": "kit", "OMP_WAIT_POLICY": "kit"}
    assert facts["record"]["torch_num_threads"] == cores


def test_torch_keeps_the_users_settings_and_its_defaults_on_request():
    facts, openmp = probe({"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE"})
    assert facts["threads"] == 1 and "OMP_WAIT_POLICY = 'ACTIVE'" in openmp
    assert facts["record"]["chosen_by"] == {"OMP_NUM_THREADS": "user", "OMP_WAIT_POLICY": "user"}
    facts, openmp = probe({SWITCH_ENV: "torch"})
    assert "GOMP_SPINCOUNT = '300000'" in openmp  # GNU OpenMP's default: spin, then sleep
    assert facts["record"]["OMP_WAIT_POLICY"] is None and facts["record"]["policy"] == "torch"


def test_the_spo_command_applies_the_policy_before_its_stage_runs(tmp_path):
    """``spo`` sets the policy for the stage it runs (here ``spo simulate``, a stage without torch)."""
    clean = {k: v for k, v in os.environ.items() if k not in (*cpu_threads.VARIABLES, KIT_SET_ENV, SWITCH_ENV)}
    code = (
        "import os, sys; from spo_helpers import cli; from spo_helpers.stages import simulate; "
        "simulate.run = lambda args: print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('OMP_NUM_THREADS')); "
        "sys.exit(cli.main(['simulate']))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["PASSIVE", str(cpu_threads.available_cores())]
