"""Loading training data and checking that it has what the pipeline needs.

A source is a local parquet file, a JSONL file, a JSON file (a list of row
objects, or an object of equal-length column lists), a directory of parquet
files, or otherwise a Hugging Face dataset id (needs the network or a warm cache).
Everything is read into one Arrow table, so nested columns (the chat ``prompt``,
``reward_model``, ``extra_info``) keep their types when written back to parquet.

Two prompt layouts are valid: the kit's chat list ``[{"role": "user", "content": ...}]``
and the official DAPO data's plain string, which the official dataset class wraps
into a chat list after appending ``ANSWER_FORMAT_SUFFIX``. Prompt keys are computed
as the key the training run will see, so both layouts match their offline values.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from spo_helpers.errors import UserError
from spo_helpers.formats.atomic import read_utf8
from spo_helpers.formats.keys import key_collisions, row_keys

PARQUET_SUFFIXES = (".parquet",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
JSON_SUFFIXES = (".json",)
HUB_CONFIGS = {"open-r1/DAPO-Math-17k-Processed": "all"}
"""The Hugging Face config a dataset id is read with when none is named, as the official dataset class reads it
(``spo_retool.py``: DAPO-Math-17k-Processed's ``all``; ``spo split`` names ``en``, as the official split script)."""
SCHEMA_COLUMNS = ("prompt", "reward_model", "extra_info", "data_source")
SCHEMA_HELP = (
    'each row needs \'prompt\' (a non-empty string or a chat list [{"role": "user", "content": ...}]) '
    "and 'reward_model' with a 'ground_truth'"
)


def _natural_key(path: Path) -> list[Any]:
    """Sort ``subset_10`` after ``subset_9``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _looks_like_path(source: str) -> bool:
    lowered = source.lower()
    return (
        source.startswith((".", "/", "~"))
        or lowered.endswith(PARQUET_SUFFIXES + JSONL_SUFFIXES + JSON_SUFFIXES)
        or source.count("/") > 1
    )


def _table_from_rows(rows: list[Any], path: Path) -> pa.Table:
    """Build a table from row objects; columns are the union of the rows' keys, in first-seen order."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    try:
        return pa.table({name: [row.get(name) for row in rows] for name in columns})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise UserError(
            f"{path}: the rows do not share one schema ({err}); give each field the same type in every row "
            "(for example all prompts strings, or all chat lists)"
        ) from None


def _read_jsonl(path: Path) -> pa.Table:
    rows = []
    for lineno, line in enumerate(read_utf8(path).split("\n"), start=1):  # JSON may hold a raw U+2028
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{lineno}: not valid JSON ({err.msg}); fix or remove the line") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}")
        rows.append(row)
    return _table_from_rows(rows, path)


def _read_json(path: Path) -> pa.Table:
    try:
        data = json.loads(read_utf8(path))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})") from None
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) > 1:
            raise UserError(f"{path}: column lists have different lengths {sorted(lengths)}; make them equal")
        data = [dict(zip(data, values, strict=True)) for values in zip(*data.values(), strict=True)]
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a list of row objects or an object of column lists")
    bad = next((i for i, row in enumerate(data) if not isinstance(row, dict)), None)
    if bad is not None:
        raise UserError(f"{path}: row {bad} is a {type(data[bad]).__name__}, expected a JSON object")
    return _table_from_rows(data, path)


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{path}: cannot read as parquet ({err}); re-export the file or check it is parquet") from None


def _read_parquet_dir(path: Path) -> pa.Table:
    files = sorted((p for p in path.iterdir() if p.is_file() and p.suffix == ".parquet"), key=_natural_key)
    if not files:
        raise UserError(f"{path}: the directory holds no .parquet files; point --dataset at a file or a parquet folder")
    tables = [_read_parquet(p) for p in files]
    try:
        return pa.concat_tables(tables, promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise UserError(f"{path}: its parquet files have incompatible schemas ({err})") from None


def _read_local(path: Path) -> pa.Table:
    if path.is_dir():
        return _read_parquet_dir(path)
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty; regenerate it")
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return _read_parquet(path)
    if suffix in JSONL_SUFFIXES:
        return _read_jsonl(path)
    if suffix in JSON_SUFFIXES:
        return _read_json(path)
    raise UserError(f"{path}: unsupported file type {suffix!r}; use .parquet, .jsonl, .json or a parquet folder")


def hub_config(source: str, config: str | None = None) -> str | None:
    """``config`` when given, else the one the official recipe reads ``source`` with (``HUB_CONFIGS``)."""
    return config if config is not None else HUB_CONFIGS.get(source)


def _read_hub(source: str, config: str | None, split: str) -> pa.Table:
    try:
        import datasets
    except ImportError:
        raise UserError(
            f"{source!r} is not a local file or folder, and loading it as a Hugging Face dataset needs the "
            "'datasets' package (pip install 'spo-helpers[verl]')"
        ) from None
    try:
        dataset = datasets.load_dataset(source, config, split=split)
    except Exception as err:  # network, unknown id, unknown config: all are user-fixable
        raise UserError(
            f"{source!r} was not found locally and could not be loaded as a Hugging Face dataset "
            f"(config={config!r}, split={split!r}): {type(err).__name__}: {err}; pass a local parquet/JSONL/JSON "
            "path or check the id and your network"
        ) from None
    return dataset.with_format("arrow")[:]


def load_dataset_table(source: str | os.PathLike, *, config: str | None = None, split: str = "train") -> pa.Table:
    """Load ``source`` as one Arrow table (``config`` and ``split`` apply to Hugging Face ids only).

    Raises ``UserError`` for a missing path, an empty file, zero rows, a malformed line or an unreadable file.
    """
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.exists():
        table = _read_local(path)
    elif _looks_like_path(text):
        raise UserError(f"{text}: no such file or directory; check the path")
    else:
        table = _read_hub(text, hub_config(text, config), split)
    if table.num_rows == 0:
        raise UserError(f"{text}: the dataset has no rows; regenerate it (`spo split`) or check the file or split")
    return table


def validate_data_file(source: str | os.PathLike, what: str) -> int:
    """Every check a stage needs before compute, on a local data file or folder; returns its row count.

    Readable file (a malformed JSONL line is named by number), rows present, the schema (prompt text, ground
    truth, data source) and a prompt key for every row. A hub id is left to the loader (verl's or ``spo split``'s).
    """
    text = os.fspath(source)
    if not Path(text).expanduser().exists():
        if _looks_like_path(text):
            raise UserError(f"{what} file not found: {text}; check the path (`spo split` writes subset_<i>.parquet)")
        return 0
    frame = schema_frame(load_dataset_table(text))
    check_schema(frame, f"{what} file {text}")
    keys = dataset_prompt_keys(frame, f"{what} file {text}")
    check_key_collisions(frame, keys, f"{what} file {text}")
    return len(frame)


def check_key_collisions(df: pd.DataFrame, keys: list[str], source: str) -> None:
    """Raise ``UserError`` when different prompts share a prompt key, naming the rows of the first such key."""
    if "prompt" not in df.columns:
        return
    clashes = key_collisions(df["prompt"].tolist(), keys)
    if not clashes:
        return
    key, rows = next(iter(clashes.items()))
    shown = ", ".join(map(str, rows[:5])) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
    raise UserError(
        f"{source}: {len(clashes)} prompt key(s) are shared by different prompts, which training would merge into "
        f"one (rows {shown} have different prompts under extra_info.prompt_key {key[:60]!r}); give each distinct "
        "prompt its own extra_info.prompt_key, or drop the field to key prompts by their text"
    )


def load_dataset_rows(source: str | os.PathLike, *, config: str | None = None, split: str = "train") -> pd.DataFrame:
    """Load ``source`` as a DataFrame; see ``load_dataset_table``."""
    return load_dataset_table(source, config=config, split=split).to_pandas()


def schema_frame(table: pa.Table) -> pd.DataFrame:
    """The columns the schema check and prompt keys need, as a DataFrame (cheaper than the whole table)."""
    return table.select([c for c in SCHEMA_COLUMNS if c in table.column_names]).to_pandas()


def _is_messages(value: Any) -> bool:
    return isinstance(value, list | tuple | np.ndarray)


def valid_prompt(value: Any) -> bool:
    """A non-empty string, or a non-empty chat list of ``{"content": str}`` messages with some text."""
    if isinstance(value, str):
        return bool(value.strip())
    if not _is_messages(value) or len(value) == 0:
        return False
    if not all(isinstance(m, Mapping) and isinstance(m.get("content"), str) for m in value):
        return False
    return any(m["content"].strip() for m in value)


def valid_reward_model(value: Any) -> bool:
    """A mapping whose ``ground_truth`` is set and not blank."""
    if not isinstance(value, Mapping) or value.get("ground_truth") is None:
        return False
    truth = value["ground_truth"]
    return bool(truth.strip()) if isinstance(truth, str) else True


def valid_data_source(value: Any) -> bool:
    """A non-blank string: the name the validation metrics and the results table use."""
    return isinstance(value, str) and bool(value.strip())


_FIELD_CHECKS = {
    "prompt": (valid_prompt, "a usable 'prompt'"),
    "reward_model": (valid_reward_model, "'reward_model.ground_truth'"),
    "data_source": (valid_data_source, "a non-blank 'data_source' string"),
}


def check_schema(df: pd.DataFrame, source: str) -> None:
    """Raise ``UserError`` naming how many rows lack each required field and the first bad row.

    ``prompt`` and ``reward_model`` are required; ``data_source``, when the column exists, must name every row.
    """
    problems = []
    for column, (check, what) in _FIELD_CHECKS.items():
        if column not in df.columns:
            if column != "data_source":
                problems.append(f"column {column!r} is missing (columns: {', '.join(map(str, df.columns))})")
            continue
        bad = np.flatnonzero([not check(v) for v in df[column]])
        if bad.size:
            problems.append(f"{bad.size} of {len(df)} rows lack {what} (first bad row: {int(bad[0])})")
    if problems:
        raise UserError(f"{source}: " + "; ".join(problems) + f"; {SCHEMA_HELP}")


def dataset_prompt_keys(df: pd.DataFrame, source: str = "dataset") -> list[str]:
    """Prompt key of every row (``formats.keys.row_key``); a row without one raises ``UserError`` naming it."""
    if "prompt" not in df.columns and "extra_info" not in df.columns:
        raise UserError(f"{source}: neither a 'prompt' nor an 'extra_info' column; {SCHEMA_HELP}")
    n = len(df)
    prompts = df["prompt"].tolist() if "prompt" in df.columns else [None] * n
    extras = df["extra_info"].tolist() if "extra_info" in df.columns else [None] * n
    return row_keys(prompts, extras, source)
