"""The committed reference run is portable: relative paths, and dumps that name their benchmarks."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from spo_helpers import analysis as A
from spo_helpers.stages import reference as R

REFERENCE = Path(__file__).resolve().parents[2] / "runs" / "reference"


def test_the_reference_configs_name_no_machines_paths():
    for config in REFERENCE.glob("spo/*/config.yaml"):
        text = config.read_text(encoding="utf-8")
        absolute = re.findall(r"(?m)^\s*(?:-\s|[\w.]+:\s)(/[^\s]*/runs/[^\s]*)", text)
        assert not absolute, f"{config}: {absolute[:3]}"
        assert "- runs/_assets/" in text  # the validation files, relative to the project folder
    stats = json.loads((REFERENCE / "offline_values.stats.json").read_text(encoding="utf-8"))
    assert stats["input_dir"] == "runs/reference/spo"  # the merge's input, relative to the project folder


def test_the_reference_dumps_name_their_data_sources(tmp_path, monkeypatch):
    for dump in REFERENCE.glob("spo/*/validation_data/*.jsonl"):
        lines = [json.loads(line) for line in dump.read_text(encoding="utf-8").splitlines() if line]
        assert lines and all(line.get("data_source") for line in lines), dump
    copy = tmp_path / "elsewhere" / "reference"  # a clone without the CPU world's files
    shutil.copytree(REFERENCE / "spo" / "spo_cpu", copy / "spo" / "spo_cpu")
    monkeypatch.chdir(tmp_path)
    sources = set(A.load_validation(copy / "spo" / "spo_cpu")["data_source"])
    assert sources == {"spo_arith", "spo_arith_train"}


def test_relative_paths():
    project = Path("/home/me/kit")
    text = "path: /home/me/kit/runs/a.parquet\n- /home/me/kit/x\ncwd: /home/me/kit\nother: /home/me/kit2/y\n"
    assert R.relative_paths(text, project) == "path: runs/a.parquet\n- x\ncwd: .\nother: /home/me/kit2/y\n"


def test_make_portable_names_sources_from_the_val_files_then_relativises(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "pyproject.toml").write_text("")
    import pandas as pd

    pd.DataFrame(
        {
            "prompt": [[{"role": "user", "content": "1+1?"}], [{"role": "user", "content": "2+2?"}]],
            "reward_model": [{"ground_truth": "2"}, {"ground_truth": "4"}],
            "extra_info": [{"prompt_key": "k1"}, {"prompt_key": "k2"}],
            "data_source": ["easy", "hard"],
        }
    ).to_parquet(project / "data" / "val.parquet")
    run = project / "runs" / "ref" / "spo" / "spo_cpu"
    (run / "validation_data").mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"config:\n  data:\n    val_files:\n    - {project}/data/val.parquet\n  kit:\n    method: SPO\nstage: train\n"
    )
    lines = [{"prompt_key": "k1", "score": 1.0}, {"prompt_key": "k2", "score": 0.0}, {"prompt_key": "k3", "score": 0.0}]
    (run / "validation_data" / "0.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert R.make_portable(project / "runs" / "ref") == {"spo_cpu": 2}
    written = [json.loads(x) for x in (run / "validation_data" / "0.jsonl").read_text().splitlines()]
    assert [x.get("data_source") for x in written] == ["easy", "hard", None]
    assert "- data/val.parquet" in (run / "config.yaml").read_text()
    monkeypatch.chdir(tmp_path)
    assert R.make_portable(project / "runs" / "ref") == {"spo_cpu": 0}  # again: nothing left to change
