"""Column statistics: exact counts and moments, distinct estimates, top values, the sample."""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from typing import Any

import numpy as np
import polars as pl
import pytest

from prepflow.processing import profile
from prepflow.processing.profile import Profiler


def profiled(*frames: pl.DataFrame, seed: int = 0) -> tuple[Profiler, dict[str, dict[str, Any]]]:
    """Feed the frames to a new Profiler, then return it and its summary."""
    profiler = Profiler(seed=seed)
    for frame in frames:
        profiler.add(frame)
    return profiler, profiler.summary()


def summarize(*frames: pl.DataFrame, seed: int = 0) -> dict[str, dict[str, Any]]:
    return profiled(*frames, seed=seed)[1]


@pytest.fixture(autouse=True, params=["grouped", "per_batch"])
def chunking(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each test twice: with the default grouping of batches, and one batch at a time.

    The profiler may group small batches into one polars query (CHUNK_ROWS). Profiling each
    batch on its own exercises the merging of statistics across batches.
    """
    if request.param == "per_batch":
        monkeypatch.setattr(profile, "CHUNK_ROWS", 1, raising=False)


def in_batches(values: list[Any], size: int, name: str = "v") -> list[pl.DataFrame]:
    return [
        pl.DataFrame({name: values[start : start + size]}) for start in range(0, len(values), size)
    ]


# --- Counts, missing values, min and max -----------------------------------------------------


def test_count_includes_missing() -> None:
    stats = summarize(pl.DataFrame({"x": [1, None, 3]}), pl.DataFrame({"x": [None, 5]}))

    assert stats["x"]["count"] == 5


def test_missing_counted_across_batches() -> None:
    stats = summarize(pl.DataFrame({"x": [1, None, 3]}), pl.DataFrame({"x": [None, 5]}))

    assert stats["x"]["missing"] == 2


def test_min_across_batches() -> None:
    stats = summarize(pl.DataFrame({"x": [4, None, 3]}), pl.DataFrame({"x": [-2, 9]}))

    assert stats["x"]["min"] == -2


def test_max_across_batches() -> None:
    stats = summarize(pl.DataFrame({"x": [4, None, 3]}), pl.DataFrame({"x": [-2, 9]}))

    assert stats["x"]["max"] == 9


def test_string_min_max() -> None:
    stats = summarize(pl.DataFrame({"s": ["pear", "apple", None]}), pl.DataFrame({"s": ["zoo"]}))

    assert stats["s"]["min"] == "apple"
    assert stats["s"]["max"] == "zoo"


def test_string_has_no_mean() -> None:
    stats = summarize(pl.DataFrame({"s": ["a", "b"]}))

    assert stats["s"]["mean"] is None
    assert stats["s"]["std"] is None
    assert stats["s"]["quantiles"] is None


def test_type_recorded() -> None:
    stats = summarize(pl.DataFrame({"x": [1, 2], "s": ["a", "b"], "f": [0.5, 1.0]}))

    assert stats["x"]["type"] == "Int64"
    assert stats["s"]["type"] == "String"
    assert stats["f"]["type"] == "Float64"


def test_null_batch_keeps_later_type() -> None:
    stats = summarize(
        pl.DataFrame({"x": pl.Series([None, None], dtype=pl.Null)}),
        pl.DataFrame({"x": [3, 4]}),
    )

    assert stats["x"]["type"] == "Int64"
    assert stats["x"]["missing"] == 2
    assert stats["x"]["min"] == 3


def test_all_missing_column() -> None:
    stats = summarize(pl.DataFrame({"x": pl.Series([None, None, None], dtype=pl.Int64)}))

    assert stats["x"]["count"] == 3
    assert stats["x"]["missing"] == 3
    assert stats["x"]["min"] is None
    assert stats["x"]["mean"] is None
    assert stats["x"]["distinct"] == 0


def test_internal_columns_skipped() -> None:
    stats = summarize(pl.DataFrame({"x": [1], "__record": [7]}))

    assert list(stats) == ["x"]


def test_ensure_columns_adds_empty() -> None:
    profiler = Profiler()
    profiler.ensure_columns(pl.Schema({"x": pl.Int64, "__key": pl.Int64}))

    stats = profiler.summary()

    assert list(stats) == ["x"]
    assert stats["x"]["count"] == 0
    assert stats["x"]["type"] == "Int64"


def test_rows_counted() -> None:
    profiler, _ = profiled(pl.DataFrame({"x": [1, 2, 3]}), pl.DataFrame({"x": [4]}))

    assert profiler.rows == 4


def test_infinite_max_shown_as_text() -> None:
    stats = summarize(pl.DataFrame({"f": [1.0, math.inf]}))

    assert stats["f"]["max"] == "inf"


def test_date_min_max_iso() -> None:
    dates = pl.Series("d", ["2024-03-01", "2023-12-31"]).str.to_date()

    stats = summarize(pl.DataFrame({"d": dates}))

    assert stats["d"]["min"] == "2023-12-31"
    assert stats["d"]["max"] == "2024-03-01"


# --- Mean and standard deviation -------------------------------------------------------------


def test_mean_matches_statistics() -> None:
    rng = random.Random(1)
    values = [rng.uniform(-50, 50) for _ in range(5_000)]

    stats = summarize(*in_batches(values, 700))

    assert stats["v"]["mean"] == pytest.approx(statistics.fmean(values), rel=1e-12)


def test_std_is_population_std() -> None:
    rng = random.Random(2)
    values = [rng.gauss(10, 3) for _ in range(5_000)]

    stats = summarize(*in_batches(values, 700))

    assert stats["v"]["std"] == pytest.approx(statistics.pstdev(values), rel=1e-9)


def test_mean_ignores_missing() -> None:
    stats = summarize(pl.DataFrame({"x": [1, None, 2, None, 6]}))

    assert stats["x"]["mean"] == pytest.approx(3.0)


def test_mean_ignores_nan_and_inf() -> None:
    stats = summarize(pl.DataFrame({"f": [1.0, math.nan, 3.0, math.inf, -math.inf]}))

    assert stats["f"]["mean"] == pytest.approx(2.0)
    assert stats["f"]["std"] == pytest.approx(1.0)


def test_std_of_constant_is_zero() -> None:
    stats = summarize(pl.DataFrame({"x": [7, 7, 7]}))

    assert stats["x"]["std"] == 0.0


def test_std_with_large_offset() -> None:
    # Epoch milliseconds: a large mean with a small spread.
    values = [1.7e12 + step for step in range(100)]

    stats = summarize(pl.DataFrame({"t": values}))

    assert stats["t"]["std"] == pytest.approx(statistics.pstdev(values), rel=1e-6)


def test_std_with_offset_billion() -> None:
    values = [1e9 + step for step in range(10)]

    stats = summarize(*in_batches(values, 3))

    assert stats["v"]["std"] == pytest.approx(statistics.pstdev(values), rel=1e-6)


# --- Distinct counts -------------------------------------------------------------------------


def test_distinct_exact_small() -> None:
    stats = summarize(pl.DataFrame({"s": ["a", "b", "a", None, "c"]}))

    assert stats["s"]["distinct"] == 3
    assert stats["s"]["distinct_exact"] is True


def test_distinct_exact_below_sketch_size() -> None:
    count = profile.SKETCH_SIZE - 1
    values = [value % count for value in range(3 * count)]

    stats = summarize(*in_batches(values, 5_000))

    assert stats["v"]["distinct"] == count
    assert stats["v"]["distinct_exact"] is True


def test_distinct_estimated_above_sketch_size() -> None:
    count = 200_000

    stats = summarize(*in_batches(list(range(count)), 50_000))

    assert stats["v"]["distinct_exact"] is False
    assert stats["v"]["distinct"] == pytest.approx(count, rel=0.05)


@pytest.mark.parametrize("seed", range(5))
def test_distinct_estimate_small_sketch(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    monkeypatch.setattr(profile, "SKETCH_SIZE", 4_096)
    rng = np.random.default_rng(seed)
    distinct_values = rng.choice(10**9, size=60_000, replace=False)
    # Every value appears twice, so counting duplicates would double the estimate.
    values = np.concatenate([distinct_values, distinct_values[::-1]]).tolist()

    stats = summarize(*in_batches(values, 7_000))

    assert stats["v"]["distinct_exact"] is False
    assert stats["v"]["distinct"] == pytest.approx(60_000, rel=0.05)


def test_distinct_of_strings_estimated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile, "SKETCH_SIZE", 4_096)
    values = [f"user-{number}" for number in range(50_000)]

    stats = summarize(*in_batches(values, 9_000))

    assert stats["v"]["distinct"] == pytest.approx(50_000, rel=0.05)


# --- Top values ------------------------------------------------------------------------------


def test_top_values_exact_counts() -> None:
    values = ["b"] * 5 + ["a"] * 3 + ["c"] * 7 + [None] * 4 + ["d"]

    stats = summarize(*in_batches(values, 6))

    assert stats["v"]["top_values"] == [
        {"value": "c", "count": 7},
        {"value": "b", "count": 5},
        {"value": "a", "count": 3},
        {"value": "d", "count": 1},
    ]
    assert stats["v"]["top_values_exact"] is True


def test_top_values_ties_by_text() -> None:
    stats = summarize(pl.DataFrame({"v": ["y", "x", "z", "x", "y", "z"]}))

    values = [entry["value"] for entry in stats["v"]["top_values"]]

    assert values == ["x", "y", "z"]


def test_top_values_limited_to_ten() -> None:
    rng = random.Random(3)
    values = [rng.randrange(40) for _ in range(4_000)]
    expected = Counter(values).most_common()

    stats = summarize(*in_batches(values, 999))
    top = stats["v"]["top_values"]

    assert len(top) == profile.TOP_VALUES
    # Counts are exact, in descending order, and match an independent count.
    assert [entry["count"] for entry in top] == [count for _, count in expected[: len(top)]]
    for entry in top:
        assert entry["count"] == dict(expected)[entry["value"]]


def test_top_values_estimated_past_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile, "TOP_TRACK_LIMIT", 50)
    values = [number % 80 for number in range(800)] + [7] * 200

    stats = summarize(*in_batches(values, 100))

    assert stats["v"]["top_values_exact"] is False
    assert stats["v"]["top_values"][0]["value"] == 7
    assert stats["v"]["top_values"][0]["estimated"] is True


# --- Sample and quantiles --------------------------------------------------------------------


def test_sample_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile, "SAMPLE_ROWS", 100)

    profiler, _ = profiled(*in_batches(list(range(1_000)), 90))

    assert profiler.sample is not None
    assert profiler.sample.height == 100


def test_sample_bounded_single_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile, "SAMPLE_ROWS", 100)

    profiler, _ = profiled(pl.DataFrame({"v": list(range(1_000))}))

    assert profiler.sample is not None
    assert profiler.sample.height == 100


def test_sample_keeps_all_small() -> None:
    profiler, _ = profiled(pl.DataFrame({"v": [1, 2, 3]}))

    assert profiler.sample is not None
    assert sorted(profiler.sample["v"].to_list()) == [1, 2, 3]


def test_sample_rows_are_distinct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile, "SAMPLE_ROWS", 100)

    profiler, _ = profiled(*in_batches(list(range(1_000)), 90))

    assert profiler.sample is not None
    assert profiler.sample["v"].n_unique() == 100


def test_sample_smallest_keys_overall(monkeypatch: pytest.MonkeyPatch) -> None:
    # Chosen rows wait in pieces between merges. The result must still be the rows with the
    # SAMPLE_ROWS smallest random keys of the whole stream, drawn in stream order.
    monkeypatch.setattr(profile, "SAMPLE_ROWS", 100)
    values = list(range(3_000))

    profiler, _ = profiled(*in_batches(values, 70), seed=5)

    keys = np.random.default_rng(5).random(len(values))
    expected = sorted(int(index) for index in np.argsort(keys)[:100])
    assert profiler.sample is not None
    assert sorted(profiler.sample["v"].to_list()) == expected


def test_sample_draws_from_every_part(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile, "SAMPLE_ROWS", 500)

    profiler, _ = profiled(*in_batches(list(range(10_000)), 1_000))

    assert profiler.sample is not None
    parts = Counter(value // 1_000 for value in profiler.sample["v"].to_list())
    # A uniform sample of 500 puts about 50 rows in each tenth of the stream.
    assert set(parts) == set(range(10))
    assert min(parts.values()) >= 25


def test_quantiles_exact_full_sample() -> None:
    stats = summarize(*in_batches(list(range(1_000)), 128))

    quantiles = stats["v"]["quantiles"]

    for level in profile.QUANTILES:
        assert quantiles[str(level)] == pytest.approx(level * 999, abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_quantiles_close_when_sampled(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    monkeypatch.setattr(profile, "SAMPLE_ROWS", 400)
    values = [number % 1_000 for number in range(20_000)]

    stats = summarize(*in_batches(values, 3_000), seed=seed)
    quantiles = stats["v"]["quantiles"]

    # The standard error of a quantile of 400 uniform draws is at most 25 on this range, so
    # the tolerance of 80 is more than three standard errors.
    for level in profile.QUANTILES:
        assert quantiles[str(level)] == pytest.approx(level * 999, abs=80)


def test_histogram_counts_all_sampled() -> None:
    stats = summarize(pl.DataFrame({"v": list(range(1_000))}))

    histogram = stats["v"]["histogram"]

    assert sum(histogram["counts"]) == 1_000
    assert len(histogram["counts"]) == profile.HISTOGRAM_BINS
    assert histogram["edges"][0] == 0.0
    assert histogram["edges"][-1] == 999.0
