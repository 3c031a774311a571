"""Recipe steps on small frames, their fitting, and the exact split."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from prepflow.errors import ProcessingError
from prepflow.processing.engine import Splitter, _quotas
from prepflow.processing.recipe import parse_recipe
from prepflow.processing.steps import StepRunner, output_columns

TIMESTAMP = "2026-12-04T00:00:00.000000Z"


def runner_for(step_yaml: str, frame: pl.DataFrame | None = None) -> StepRunner:
    """Build the runner of one step, fitted on ``frame`` when the step learns parameters."""
    (step,) = parse_recipe(f"steps:\n  - {step_yaml}\n").steps
    runner = StepRunner(1, step, None, TIMESTAMP)
    if frame is not None:
        runner.params = runner.fit(frame.lazy())
    return runner


def test_impute_median_fitted():
    frame = pl.DataFrame({"x": [1.0, None, 3.0, 10.0]})
    runner = runner_for("{step: impute, columns: [x], strategy: median}", frame)

    assert runner.params == {"x": 3.0}
    assert runner.apply(frame).frame["x"].to_list() == [1.0, 3.0, 3.0, 10.0]


def test_impute_mode_smallest_tie():
    frame = pl.DataFrame({"k": ["b", "a", None, "b", "a"]})
    runner = runner_for("{step: impute, columns: [k], strategy: mode}", frame)

    assert runner.params == {"k": "a"}


def test_impute_mean_needs_numbers():
    frame = pl.DataFrame({"x": ["1", None]})

    with pytest.raises(ProcessingError, match="declare its type as int or float"):
        runner_for("{step: impute, columns: [x], strategy: mean}", frame)


def test_scale_standard_values():
    frame = pl.DataFrame({"x": [1.0, 2.0, 3.0]})
    runner = runner_for("{step: scale, columns: [x]}", frame)
    scaled = runner.apply(frame).frame["x"].to_list()

    std = np.std([1.0, 2.0, 3.0])
    assert scaled == pytest.approx([-1 / std, 0.0, 1 / std])


def test_scale_constant_column_zero():
    frame = pl.DataFrame({"x": [4.0, 4.0]})
    runner = runner_for("{step: scale, columns: [x], method: min_max}", frame)

    assert runner.apply(frame).frame["x"].to_list() == [0.0, 0.0]


def test_one_hot_vocabulary_sorted():
    frame = pl.DataFrame({"k": ["b", "a", None, "b"]})
    runner = runner_for("{step: one_hot, columns: [k]}", frame)
    result = runner.apply(frame).frame

    assert runner.params == {"k": ["a", "b"]}
    assert result.columns == ["k_a", "k_b"]
    assert result.rows() == [(0, 1), (1, 0), (0, 0), (0, 1)]


def test_ordinal_unknown_is_minus_one():
    runner = runner_for("{step: ordinal, columns: [k]}", pl.DataFrame({"k": ["x", "y"]}))

    result = runner.apply(pl.DataFrame({"k": ["y", "z", None]})).frame

    assert result["k"].to_list() == [1, -1, None]


def test_clip_bounds():
    runner = runner_for("{step: clip, columns: [x], min: 0, max: 10}")

    result = runner.apply(pl.DataFrame({"x": [-5, 5, 50, None]})).frame

    assert result["x"].to_list() == [0, 5, 10, None]


def test_filter_removed_rows_returned():
    runner = runner_for("{step: filter, where: 'x >= 2 and k != \"b\"'}")

    outcome = runner.apply(pl.DataFrame({"x": [1, 2, 3, None], "k": ["a", "a", "b", "a"]}))

    assert outcome.frame.rows() == [(2, "a")]
    assert outcome.removed is not None
    assert outcome.removed["x"].to_list() == [1, 3, None]


def test_deduplicate_across_batches():
    runner = runner_for("{step: deduplicate, keys: [id]}")

    first = runner.apply(pl.DataFrame({"id": [1, 2, 2], "v": ["a", "b", "c"]}))
    second = runner.apply(pl.DataFrame({"id": [3, 1], "v": ["d", "e"]}))

    assert first.frame["v"].to_list() == ["a", "b"]
    assert second.frame["v"].to_list() == ["d"]
    assert second.removed is not None
    assert second.removed["v"].to_list() == ["e"]


def test_parse_dates_day_first():
    runner = runner_for("{step: parse_dates, columns: [d], day_first: true}")

    outcome = runner.apply(pl.DataFrame({"d": ["31/01/2024", "2024-02-01", "13/13/2024"]}))

    assert outcome.frame["d"].to_list() == [dt.date(2024, 1, 31), dt.date(2024, 2, 1)]
    assert outcome.rejected is not None
    assert outcome.rejected["__value"].to_list() == ["13/13/2024"]


def test_parse_dates_set_missing():
    runner = runner_for(
        "{step: parse_dates, columns: [d], format: '%d.%m.%Y', on_invalid: set_missing}"
    )

    outcome = runner.apply(pl.DataFrame({"d": ["01.02.2024", "yesterday"]}))

    assert outcome.frame["d"].to_list() == [dt.date(2024, 2, 1), None]
    assert outcome.rejected is None


def test_extract_json_nested_path():
    runner = runner_for("{step: extract_json, column: p, fields: {city: address.city, n: n}}")

    result = runner.apply(
        pl.DataFrame({"p": ['{"address": {"city": "Porto"}, "n": 2}', None, "{}"]})
    ).frame

    assert result.columns == ["city", "n"]
    assert result.rows() == [("Porto", "2"), (None, None), (None, None)]


def test_extract_json_rejects_array():
    runner = runner_for("{step: extract_json, column: p, fields: [a]}")

    outcome = runner.apply(pl.DataFrame({"p": ['{"a": "x"}', "[1, 2]"]}))

    assert outcome.frame["a"].to_list() == ["x"]
    assert outcome.rejected is not None
    assert outcome.rejected["__reason"].to_list() == ["invalid JSON: a JSON array, not an object"]


def test_rename_onto_existing_fails():
    (step,) = parse_recipe("steps:\n  - {step: rename, columns: {a: b}}\n").steps

    with pytest.raises(ProcessingError, match="would make two columns named 'b'"):
        output_columns(step, ["a", "b"], None)


def test_quotas_largest_remainder():
    # 5.6, 0.7 and 0.7 rows: the two largest remainders (0.7 each) get the two spare rows.
    assert _quotas([0.8, 0.1, 0.1], 7) == [5, 1, 1]
    assert _quotas([0.8, 0.1, 0.1], 20_000) == [16_000, 2_000, 2_000]
    assert sum(_quotas([1 / 3, 1 / 3, 1 / 3], 100)) == 100


def test_split_sizes_exact_over_batches():
    splitter = Splitter({"train": 0.8, "validation": 0.1, "test": 0.1}, {None: 1003}, 5, None)
    sizes = {"train": 0, "validation": 0, "test": 0}

    for start in range(0, 1003, 100):
        frame = pl.DataFrame({"i": range(start, min(start + 100, 1003))})
        for name, part in splitter.assign(frame):
            sizes[name] += part.height

    # 802.4, 100.3 and 100.3 rows: the spare row goes to the largest remainder, train's.
    assert sizes == {"train": 803, "validation": 100, "test": 100}


def test_split_same_seed_same_rows():
    frame = pl.DataFrame({"i": range(50)})

    def train_rows(seed: int) -> list[int]:
        splitter = Splitter({"train": 0.5, "test": 0.5}, {None: 50}, seed, None)
        return dict(splitter.assign(frame))["train"]["i"].to_list()

    assert train_rows(1) == train_rows(1)
    assert train_rows(1) != train_rows(2)


def test_split_stratified_per_class():
    frame = pl.DataFrame({"y": ["a"] * 30 + ["b"] * 10})
    splitter = Splitter({"train": 0.5, "test": 0.5}, {"a": 30, "b": 10}, 0, "y")

    parts = dict(splitter.assign(frame))

    assert parts["train"]["y"].value_counts().sort("y").rows() == [("a", 15), ("b", 5)]
    assert parts["test"]["y"].value_counts().sort("y").rows() == [("a", 15), ("b", 5)]


def test_thousands_marks_every_three_digits():
    from prepflow.processing.recipe import ColumnSpec, InputOptions
    from prepflow.processing.validate import _cast

    options = InputOptions(decimal=",", thousands=".")
    text = pl.Series(["1.2", "1..0", "1.234,5", "12,5", "1.234.567", "-1.000"])

    values = _cast(text, ColumnSpec(type="float"), options).to_list()

    assert values == [None, None, 1234.5, 12.5, 1234567.0, -1000.0]


def test_datetime_offsets_become_utc():
    from prepflow.processing.validate import parse_temporal

    text = pl.Series(["2024-01-31T10:00:00Z", "2024-01-31T10:00:00+01:00", "2024-01-31 10:00"])

    values = parse_temporal(text, None, False, "datetime").to_list()

    assert values == [
        dt.datetime(2024, 1, 31, 10, 0),
        dt.datetime(2024, 1, 31, 9, 0),
        dt.datetime(2024, 1, 31, 10, 0),
    ]


def test_recipe_duplicate_key_rejected():
    from prepflow.errors import RecipeError

    with pytest.raises(RecipeError, match="duplicate key 'output' at line 2"):
        parse_recipe("output: {format: csv}\noutput: {format: parquet}\n")


def test_partition_folder_names():
    from prepflow.processing.writers import _partition_folder

    assert _partition_folder("k", None) == "k=__HIVE_DEFAULT_PARTITION__"
    assert _partition_folder("k", "a/b c") == "k=a%2Fb%20c"
    long_name = _partition_folder("k", "x" * 400)
    assert len(long_name.encode()) <= 255
    assert long_name != _partition_folder("k", "x" * 401)


@pytest.mark.parametrize(
    "values",
    [
        [float(v) for v in np.random.default_rng(3).normal(0, 1, 10_001)],
        [float(v) for v in np.random.default_rng(4).exponential(1, 10_000)],
        [50_000.0, 60_000.0, 70_000.0] * 1_000 + [60_000.0],
        [1.0, 2.0],
        [2.0, 2.0, 2.0],
        [1.0, float("inf"), 3.0],
        [-1e12, 0.5, 0.25, 1e12],
    ],
)
def test_exact_median_matches_sort(values):
    from prepflow.processing.steps import exact_median

    frame = pl.DataFrame({"x": values}).with_columns(
        pl.when(pl.int_range(pl.len()) % 7 == 3).then(None).otherwise(pl.col("x")).alias("x")
    )

    assert exact_median(frame.lazy(), "x") == frame["x"].median()


def test_exact_median_all_missing():
    from prepflow.processing.steps import exact_median

    frame = pl.DataFrame({"x": [None, None]}, schema={"x": pl.Float64})

    assert exact_median(frame.lazy(), "x") is None
