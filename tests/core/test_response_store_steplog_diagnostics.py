"""Unit tests for the response store, the step log and the per-step diagnostics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from spo_helpers.core.diagnostics import calibration, grpo_centred, grpo_diagnostics, quantiles, spo_diagnostics
from spo_helpers.core.drift import ResponseStore, mean_abs_logprob_change
from spo_helpers.errors import UserError
from spo_helpers.formats.steplog import StepLog, read_step_log, to_jsonable

# ---------------------------------------------------------------- response store


def put(store, key, n, start=0.0):
    store.put(key, np.arange(n), np.full(n, start, dtype=np.float64))


def test_store_evicts_least_recently_put_beyond_the_budget():
    store = ResponseStore(max_tokens=10)
    put(store, "a", 4)
    put(store, "b", 4)
    assert store.total_tokens == 8 and store.evictions == 0
    put(store, "c", 4)  # 12 > 10: "a" is the oldest
    assert "a" not in store and {"b", "c"} <= set(store._items)
    assert store.total_tokens == 8 and store.evictions == 1 and store.nbytes == 64
    put(store, "b", 4)  # a revisit makes "b" the most recent
    put(store, "d", 3)
    assert list(store._items) == ["b", "d"] and store.evictions == 2 and store.total_tokens == 7


def test_store_keeps_a_single_response_larger_than_the_budget():
    store = ResponseStore(max_tokens=5)
    put(store, "big", 9)
    assert len(store) == 1 and store.total_tokens == 9 and store.evictions == 0
    put(store, "small", 1)
    assert list(store._items) == ["small"] and store.total_tokens == 1 and store.evictions == 1


def test_put_replaces_and_stores_compact_copies():
    store = ResponseStore(max_tokens=100)
    ids = np.array([[1, 2, 3]], dtype=np.int64)
    lp = np.array([[-0.5, -1.0, -2.0]])
    store.put("k", ids, lp)
    ids[0, 0] = 99  # the store holds a copy
    got_ids, got_lp = store.get("k")
    assert got_ids.dtype == np.int32 and got_lp.dtype == np.float32
    assert got_ids.tolist() == [1, 2, 3] and got_lp.tolist() == [-0.5, -1.0, -2.0]
    store.put("k", [7], [-0.25])
    assert len(store) == 1 and store.total_tokens == 1 and store.evictions == 0
    assert store.get("k")[0].tolist() == [7] and store.get("missing") is None


def test_store_rejects_bad_input():
    with pytest.raises(ValueError, match="max_tokens"):
        ResponseStore(max_tokens=0)
    with pytest.raises(ValueError, match="3 token ids but 2 log-probs"):
        ResponseStore().put("k", [1, 2, 3], [0.0, 0.0])


def test_state_round_trip_keeps_lru_order_and_evictions():
    store = ResponseStore(max_tokens=9)
    for key, n in (("a", 2), ("b", 3), ("c", 4), ("a", 2), ("d", 3)):
        put(store, key, n, start=-float(n))
    state = store.state_dict()
    assert state["keys"] == list(store._items) and state["evictions"] == store.evictions
    copy = ResponseStore(max_tokens=1)
    copy.load_state_dict(state)
    assert copy.max_tokens == 9 and list(copy._items) == list(store._items)
    assert copy.total_tokens == store.total_tokens and copy.evictions == store.evictions
    for key in store._items:
        assert all(np.array_equal(x, y) for x, y in zip(store.get(key), copy.get(key), strict=True))
    put(store, "e", 4)  # both evict the same prompts next
    put(copy, "e", 4)
    assert list(copy._items) == list(store._items) and copy.evictions == store.evictions


def test_empty_store_round_trip_and_corrupt_state():
    empty = ResponseStore(max_tokens=3).state_dict()
    copy = ResponseStore()
    copy.load_state_dict(empty)
    assert len(copy) == 0 and copy.total_tokens == 0 and copy.max_tokens == 3
    bad = dict(empty, lengths=[2], keys=["x"])
    with pytest.raises(ValueError, match="corrupt"):
        copy.load_state_dict(bad)


def test_mean_abs_logprob_change_by_hand():
    now = np.array([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5], [0.0, 0.0, 0.0]])
    then = np.array([[-1.5, -1.0, -9.0], [-0.5, -1.5, -0.5], [4.0, 4.0, 4.0]])
    mask = np.array([[1, 1, 0], [1, 1, 1], [0, 0, 0]])
    # row 0: (0.5 + 1.0) / 2; row 1: (0 + 1 + 0) / 3; row 2: empty mask -> 0
    assert mean_abs_logprob_change(now, then, mask).tolist() == pytest.approx([0.75, 1 / 3, 0.0])
    assert mean_abs_logprob_change(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros((0, 4))).shape == (0,)
    with pytest.raises(ValueError, match="shapes differ"):
        mean_abs_logprob_change(now, then[:, :2], mask)


# ---------------------------------------------------------------- step log


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_steplog_drops_records_at_or_after_the_first_logged_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    first = StepLog(path)
    for step in range(4):
        first.log(step, {"x": step})
    resumed = StepLog(path)  # a resume from the checkpoint of step 1
    resumed.log(2, {"x": 20})
    assert [(r["step"], r["data"]["x"]) for r in lines(path)] == [(0, 0), (1, 1), (2, 20)]
    resumed.log(3, {"x": 30})  # only the first call truncates
    resumed.log(3, {"x": 31})
    assert [(r["step"], r["data"]["x"]) for r in lines(path)] == [(0, 0), (1, 1), (2, 20), (3, 30), (3, 31)]


def test_steplog_creates_its_file_and_folder(tmp_path):
    log = StepLog(tmp_path / "new" / "steps.jsonl")
    log.log(1, {"a": [1, 2]})
    assert read_step_log(log.path) == [{"step": 1, "data": {"a": [1, 2]}}]
    assert read_step_log(tmp_path / "absent.jsonl") == []


def test_torn_last_line_is_ignored_and_dropped_on_resume(tmp_path):
    path = tmp_path / "steps.jsonl"
    path.write_text('{"step": 1, "data": {"r": 1}}\n{"step": 2, "data": {"r": 0}}\n{"step": 3, "data": {"r"')
    assert [r["step"] for r in read_step_log(path)] == [1, 2]
    StepLog(path).log(3, {"r": 1})
    assert [r["step"] for r in lines(path)] == [1, 2, 3]


def test_damage_before_the_last_line_is_reported(tmp_path, caplog):
    """Only a crash's torn last line is dropped silently; damage elsewhere names the file and the lines."""
    path = tmp_path / "metrics.jsonl"
    good = '{"step": 1, "data": {"r": 1}}\n'
    path.write_text(good + '["not a record"]\n{"no_step": 1}\n{"step": 2, "data": {"r"\n' + good.replace("1,", "3,"))
    with pytest.raises(UserError, match=r"metrics.jsonl: 3 damaged line\(s\) .* \(line 2, 3, 4\)"):
        read_step_log(path)
    with pytest.raises(UserError):
        StepLog(path).log(4, {"r": 0})  # a resume never drops damaged records silently
    with caplog.at_level("WARNING"):
        assert [r["step"] for r in read_step_log(path, damaged="warn")] == [1, 3]
    assert "3 damaged line(s)" in caplog.text


def test_to_jsonable_numbers_and_containers():
    assert to_jsonable(np.float32(1.5)) == 1.5 and type(to_jsonable(np.float32(1.5))) is float
    assert to_jsonable(np.int64(3)) == 3 and type(to_jsonable(np.int64(3))) is int
    assert to_jsonable(np.bool_(True)) is True
    assert to_jsonable(torch.tensor(2.5)) == 2.5 and to_jsonable(torch.tensor(7)) == 7
    assert to_jsonable(torch.tensor([1.0, float("nan")])) == [1.0, None]
    for bad in (float("nan"), float("inf"), np.float64("-inf"), torch.tensor(float("nan")), np.float32("nan")):
        assert to_jsonable(bad) is None
    assert to_jsonable({1: (np.int32(1), "s", None, True)}) == {"1": [1, "s", None, True]}
    assert to_jsonable(np.array([[1, 2], [3, 4]])) == [[1, 2], [3, 4]]
    assert to_jsonable(object).startswith("<class")


def test_steplog_writes_nan_as_null(tmp_path):
    log = StepLog(tmp_path / "m.jsonl")
    log.log(0, {"loss": float("nan"), "t": torch.tensor(1.25), "n": np.int64(4)})
    assert "NaN" not in log.path.read_text()
    assert read_step_log(log.path)[0]["data"] == {"loss": None, "t": 1.25, "n": 4}


# ---------------------------------------------------------------- diagnostics


def test_grpo_centred_by_hand_with_singletons():
    rewards = np.array([1.0, 0.0, 1.0, 1.0, 0.5, 0.25])
    groups = np.array(["a", "a", "b", "b", "c", "a"], dtype=object)
    # a: mean (1 + 0 + 0.25) / 3; b: mean 1; c is alone: verl's mean 0
    mean_a = 1.25 / 3
    expected = [1 - mean_a, -mean_a, 0.0, 0.0, 0.5, 0.25 - mean_a]
    assert grpo_centred(rewards, groups).tolist() == pytest.approx(expected)
    assert grpo_centred(np.array([0.3, 0.7]), [5, 9]).tolist() == pytest.approx([0.3, 0.7])


def test_grpo_diagnostics_by_hand():
    rewards = np.array([1.0, 1.0, 1.0, 0.0, 1.0])
    groups = [0, 0, 1, 1, 2]
    advantages = np.array([0.0, 0.0, 0.7, -0.7, 0.0])
    out = grpo_diagnostics(rewards, groups, advantages)
    centred = np.array([0.0, 0.0, 0.5, -0.5, 1.0])
    assert out["kit/zero_adv_frac"] == pytest.approx(2 / 5)  # group 0 only; the singleton does not count
    assert out["kit/zero_adv_frac_realised"] == pytest.approx(3 / 5)
    assert out["kit/adv_var_before_norm"] == pytest.approx(np.var(centred, ddof=1))
    assert out["kit/adv_var_after_norm"] == pytest.approx(np.var(advantages, ddof=1))
    single = grpo_diagnostics(np.array([1.0]), [0], np.array([0.0]))
    assert single["kit/adv_var_before_norm"] == 0.0 and single["kit/adv_var_after_norm"] == 0.0


def test_spo_diagnostics_by_hand():
    out = spo_diagnostics(np.array([1.0, 0.0, 1.0]), np.array([0.5, 0.25, 1.0]), np.array([1.0, -1.0, 0.0]))
    assert out["kit/adv_var_before_norm"] == pytest.approx(np.var([0.5, -0.25, 0.0], ddof=1))
    assert out["kit/zero_adv_frac"] == pytest.approx(1 / 3)


def test_calibration_by_hand():
    out = calibration(np.array([0.2, 0.8, 0.5]), np.array([0.0, 1.0, 1.0]))
    assert out["kit/calibration/p_hat_mean"] == pytest.approx(0.5)
    assert out["kit/calibration/reward_mean"] == pytest.approx(2 / 3)
    assert out["kit/calibration/gap"] == pytest.approx(0.5 - 2 / 3)
    assert out["kit/calibration/brier"] == pytest.approx((0.04 + 0.04 + 0.25) / 3)
    assert calibration(np.empty(0), np.empty(0)) == {}
    assert calibration([1.0], [1.0])["kit/calibration/brier"] == 0.0


def test_quantiles_match_numpy_and_torch():
    values = np.random.default_rng(3).normal(size=37)
    out = quantiles(values, "adv")
    assert list(out) == ["adv/p10", "adv/p30", "adv/p50", "adv/p70", "adv/p90"]
    for q in (10, 30, 50, 70, 90):
        assert out[f"adv/p{q}"] == np.percentile(values, q)
        assert out[f"adv/p{q}"] == pytest.approx(torch.quantile(torch.tensor(values), q / 100).item())
    assert quantiles(np.array([]), "x") == {}
    assert quantiles([2.0], "x", qs=(0, 100)) == {"x/p0": 2.0, "x/p100": 2.0}
    assert all(math.isfinite(v) for v in out.values())
