"""spo_helpers.progress: one bar helper for notebooks, terminals and headless runs; verl's bar replaced."""

from __future__ import annotations

import types

from tqdm import tqdm as std_tqdm

from spo_helpers import progress as P


def test_headless_bars_are_disabled(monkeypatch):
    monkeypatch.setenv(P.HEADLESS_ENV, "1")
    bar = P.progress_bar(range(3), desc="x")
    assert bar.disable and list(bar) == [0, 1, 2]


def test_terminal_bars(monkeypatch, capsys):
    monkeypatch.delenv(P.HEADLESS_ENV, raising=False)
    assert not P.in_kernel()
    bar = P.progress_bar(total=2, desc=P.TRAINING_BAR)
    bar.update(2)
    bar.close()
    assert P.TRAINING_BAR in capsys.readouterr().err  # always drawn (training), as verl's own bar
    assert P.progress_bar(range(2), terminal=None).disable  # only on a TTY: pytest's stderr is none


def test_bars_in_replaces_a_modules_tqdm_for_the_block():
    module = types.SimpleNamespace(tqdm=std_tqdm)
    with P.bars_in(module):
        assert module.tqdm is P.progress_bar
    assert module.tqdm is std_tqdm


def test_the_training_bar_has_one_name_for_both_methods():
    from pathlib import Path

    verl_glue = Path(P.__file__).parent / "verl_glue"
    spo = (verl_glue / "spo_trainer.py").read_text()
    assert "desc=TRAINING_BAR" in spo and "SPO training" not in spo
    assert "bars_in(ray_trainer)" in (verl_glue / "grpo_trainer.py").read_text()
    import pytest

    ray_trainer = pytest.importorskip("verl.trainer.ppo.ray_trainer")  # verl's fit() names its bar so

    assert f'desc="{P.TRAINING_BAR}"' in Path(ray_trainer.__file__).read_text()
    assert ray_trainer.tqdm is std_tqdm
