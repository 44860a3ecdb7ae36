"""spo_helpers.analysis.tables: shares as percentages, ratios with an x, values unchanged."""

from __future__ import annotations

import pandas as pd

from spo_helpers.analysis.tables import styled


def test_styled_formats_without_changing_values():
    frame = pd.DataFrame(
        {"method": ["GRPO", "SPO"], "share": [0.420833, 0.1], "acc": [54.23, float("nan")], "ratio": [4.351, 2.0]}
    )
    html = styled(frame, percent=["share"], points=["acc"], times=["ratio"]).to_html()
    for shown in ("42.1%", "10.0%", "54.2%", "–", "4.35x", "2.00x"):
        assert shown in html, shown
    assert "0.420833" not in html and "row0" in html
    assert frame["share"].iloc[0] == 0.420833  # the frame (and its CSV) keeps full precision


def test_every_float_column_and_series():
    series = pd.Series([0.5, 0.25], index=pd.Index(["GRPO", "SPO"], name="method"), name="mean share")
    html = styled(series, percent="all", digits=0).to_html()
    assert "50%" in html and "25%" in html and "GRPO" in html
