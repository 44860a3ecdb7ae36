import numpy as np
import pytest

pytest.importorskip("verl")

from verl.trainer.ppo.metric_utils import process_validation_metrics as verl_metrics

from spo_helpers.verl_glue.val_metrics import process_validation_metrics, subset_sizes


def test_subset_sizes_match_verl():
    assert subset_sizes(2) == [2]
    assert subset_sizes(4) == [2, 4]
    assert subset_sizes(8) == [2, 4, 8]
    assert subset_sizes(6) == [2, 4, 6]


def test_agrees_with_verl_within_bootstrap_noise():
    rng = np.random.default_rng(0)
    n_prompts, n = 30, 8
    p = rng.uniform(0, 1, n_prompts)
    scores = (rng.uniform(size=(n_prompts, n)) < p[:, None]).astype(float).ravel()
    preds = [str(int(s)) if s else str(rng.integers(2, 5)) for s in scores]
    uids = [f"u{i}" for i in range(n_prompts) for _ in range(n)]
    sources = ["a"] * (n_prompts * n)
    infos = {"score": scores.tolist(), "acc": (scores > 0).tolist(), "pred": preds, "prompt_key": uids}
    ours = process_validation_metrics(sources, uids, infos)
    theirs = verl_metrics(sources, uids, infos)
    assert set(ours["a"]) == set(theirs["a"]) == {"score", "acc"}
    for var in ("score", "acc"):
        assert set(ours["a"][var]) == set(theirs["a"][var])
        for name, value in theirs["a"][var].items():
            assert ours["a"][var][name] == pytest.approx(value, abs=0.03), (var, name)


def test_exact_cases():
    # Constant values: best = worst = maj = the value, with zero spread.
    infos = {"score": [1.0] * 4, "pred": ["7"] * 4}
    out = process_validation_metrics(["s"] * 4, ["u"] * 4, infos)["s"]["score"]
    assert out["mean@4"] == 1.0 and out["best@4/mean"] == 1.0 and out["worst@2/mean"] == 1.0
    assert out["maj@4/mean"] == 1.0 and out["best@4/std"] == 0.0
