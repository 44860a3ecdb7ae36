"""Learning curves of one run carry its bootstrap band over problems; several seeds keep the seed band."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from synthetic_runs import write_pipeline

from spo_helpers import analysis as A
from spo_helpers.analysis import plots as P


def test_one_run_per_method_gets_its_interval_over_problems(tmp_path):
    root = write_pipeline(tmp_path, seeds=(0,))
    runs = A.find_runs(root)
    curves = A.learning_curves(A.load_runs(runs), A.validation_table(runs, ks="n"))
    val = curves[curves["metric"].str.startswith("val")]
    assert val[["low", "high"]].notna().all().all()
    assert ((val["low"] <= val["value"] + 1e-12) & (val["value"] <= val["high"] + 1e-12)).all()
    assert curves.loc[curves["metric"] == "train reward", "low"].isna().all()
    fig = P.plot_learning_curves(curves, metrics=["val maj@n"])
    panel = fig.axes[0]
    assert panel.collections  # the band
    assert any("95% CI over problems" in line.get_label() for line in panel.lines)
    reward = P.plot_learning_curves(curves, metrics=["train reward"])
    assert not reward.axes[0].collections  # no problems behind the training reward: no band
    plt.close("all")
    assert np.isfinite(val["high"] - val["low"]).all()
