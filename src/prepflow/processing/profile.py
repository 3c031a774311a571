"""Per-column statistics for the report, gathered batch by batch in bounded memory.

Counts, missing values, min, max, mean and standard deviation are exact. Quantiles and
histograms come from a uniform random sample of up to SAMPLE_ROWS rows (the rows with the
smallest random keys). Distinct counts are exact up to SKETCH_SIZE values and estimated above
that from the SKETCH_SIZE smallest hashes (a k-minimum-values sketch). Top values are exact
while a column has at most TOP_TRACK_LIMIT distinct values, and come from the sample after.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

SAMPLE_ROWS = 100_000
SKETCH_SIZE = 16_384
TOP_TRACK_LIMIT = 10_000
TOP_VALUES = 10
HISTOGRAM_BINS = 20
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
NUMERIC = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64,
           pl.Float32, pl.Float64)  # fmt: skip
SAMPLE_KEY = "__sample_key"


@dataclass
class _Column:
    dtype: str = "null"
    count: int = 0
    missing: int = 0
    minimum: Any = None
    maximum: Any = None
    total: float = 0.0
    total_squares: float = 0.0
    numeric_count: int = 0
    hashes: np.ndarray[Any, Any] = field(default_factory=lambda: np.empty(0, np.uint64))
    counts: dict[Any, int] | None = field(default_factory=dict)


class Profiler:
    """Statistics of every column of a stream of batches."""

    def __init__(self, seed: int = 0) -> None:
        self.columns: dict[str, _Column] = {}
        self.sample: pl.DataFrame | None = None
        self.rows = 0
        self.random = np.random.default_rng(seed)

    def add(self, frame: pl.DataFrame) -> None:
        data = frame.select([name for name in frame.columns if not name.startswith("__")])
        if data.width == 0 and frame.height == 0:
            return
        self.rows += data.height
        for name in data.columns:
            self._add_column(name, data[name])
        self._add_sample(data)

    def ensure_columns(self, schema: pl.Schema) -> None:
        for name, dtype in schema.items():
            if not name.startswith("__"):
                self.columns.setdefault(name, _Column(dtype=str(dtype)))

    def summary(self) -> dict[str, dict[str, Any]]:
        return {name: self._summarize(name, column) for name, column in self.columns.items()}

    def _add_column(self, name: str, series: pl.Series) -> None:
        column = self.columns.setdefault(name, _Column())
        if series.dtype != pl.Null:
            column.dtype = str(series.dtype)
        column.count += series.len()
        column.missing += series.null_count()
        present = series.drop_nulls()
        if present.is_empty():
            return
        if series.dtype in NUMERIC:
            values = present.cast(pl.Float64)
            finite = values.filter(values.is_finite())
            column.total += float(finite.sum())
            column.total_squares += float((finite * finite).sum())
            column.numeric_count += finite.len()
        if series.dtype not in (pl.List, pl.Struct, pl.Object):
            low, high = present.min(), present.max()
            column.minimum = low if column.minimum is None else min(column.minimum, low)
            column.maximum = high if column.maximum is None else max(column.maximum, high)
        hashes = present.hash(seed=0).unique().to_numpy()
        merged = np.union1d(column.hashes, hashes)
        column.hashes = merged[:SKETCH_SIZE] if merged.size > SKETCH_SIZE else merged
        if column.counts is not None:
            for value, count in present.value_counts().iter_rows():
                column.counts[value] = column.counts.get(value, 0) + count
            if len(column.counts) > TOP_TRACK_LIMIT:
                column.counts = None

    def _add_sample(self, data: pl.DataFrame) -> None:
        keys = self.random.random(data.height)
        keyed = data.with_columns(pl.Series(SAMPLE_KEY, keys))
        combined = (
            keyed
            if self.sample is None
            else pl.concat([self.sample, keyed], how="diagonal_relaxed")
        )
        if combined.height > SAMPLE_ROWS:
            combined = combined.sort(SAMPLE_KEY).head(SAMPLE_ROWS)
        self.sample = combined

    def _summarize(self, name: str, column: _Column) -> dict[str, Any]:
        result: dict[str, Any] = {
            "type": column.dtype,
            "count": column.count,
            "missing": column.missing,
            "min": _plain(column.minimum),
            "max": _plain(column.maximum),
            "mean": None,
            "std": None,
            "quantiles": None,
            "histogram": None,
        }
        if column.numeric_count:
            mean = column.total / column.numeric_count
            variance = max(column.total_squares / column.numeric_count - mean * mean, 0.0)
            result["mean"] = mean
            result["std"] = math.sqrt(variance)
        distinct, exact = _distinct(column.hashes)
        result["distinct"] = distinct
        result["distinct_exact"] = exact
        sample = self._sample_of(name)
        if sample is not None and sample.dtype in NUMERIC and sample.len():
            values = sample.cast(pl.Float64).filter(sample.cast(pl.Float64).is_finite())
            if values.len():
                result["quantiles"] = {
                    str(q): float(values.quantile(q, "linear") or 0.0) for q in QUANTILES
                }
                counts, edges = np.histogram(values.to_numpy(), bins=HISTOGRAM_BINS)
                result["histogram"] = {"edges": edges.tolist(), "counts": counts.tolist()}
        result["top_values"] = self._top_values(column, sample)
        result["top_values_exact"] = column.counts is not None
        return result

    def _sample_of(self, name: str) -> pl.Series | None:
        if self.sample is None or name not in self.sample.columns:
            return None
        return self.sample[name].drop_nulls()

    def _top_values(self, column: _Column, sample: pl.Series | None) -> list[dict[str, Any]]:
        if column.counts is not None:
            ranked = sorted(column.counts.items(), key=lambda item: (-item[1], str(item[0])))
            return [
                {"value": _plain(value), "count": count} for value, count in ranked[:TOP_VALUES]
            ]
        if sample is None or sample.is_empty():
            return []
        counts = sample.value_counts(sort=True).head(TOP_VALUES)
        return [
            {"value": _plain(value), "count": count, "estimated": True}
            for value, count in counts.iter_rows()
        ]


def _distinct(hashes: np.ndarray[Any, Any]) -> tuple[int, bool]:
    if hashes.size < SKETCH_SIZE:
        return int(hashes.size), True
    # k-minimum-values estimate: (k - 1) / (k-th smallest hash as a fraction of the hash range).
    fraction = float(hashes[SKETCH_SIZE - 1]) / float(np.iinfo(np.uint64).max)
    return round((SKETCH_SIZE - 1) / fraction), False


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
