"""Per-column statistics for the report, gathered batch by batch in bounded memory.

Counts, missing values, min and max are exact; mean and standard deviation are exact up to
floating-point rounding. Quantiles and
histograms come from a uniform random sample of up to SAMPLE_ROWS rows (the rows with the
smallest random keys). Distinct counts are exact below SKETCH_SIZE values and estimated above
that from the SKETCH_SIZE smallest hashes (a k-minimum-values sketch). Top values are exact
while a column has at most TOP_TRACK_LIMIT distinct values, and come from the sample after.
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
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
# Rows profiled together: fewer, larger polars queries cost less than one per batch.
CHUNK_ROWS = 131_072


@dataclass
class _Column:
    dtype: str = "null"
    count: int = 0
    missing: int = 0
    minimum: Any = None
    maximum: Any = None
    # Running mean and sum of squared deviations (M2) of the finite numeric values.
    mean: float = 0.0
    squared_deviations: float = 0.0
    numeric_count: int = 0
    hashes: np.ndarray[Any, Any] = field(default_factory=lambda: np.empty(0, np.uint64))
    # Exact value counts, until the column has more than TOP_TRACK_LIMIT distinct values.
    tracking_top: bool = True
    top: pl.DataFrame | None = None

    def merge_moments(self, count: int, mean: float, squared_deviations: float) -> None:
        """Combine this chunk's mean and M2 with the running ones (the pairwise update).

        Summing x and x squared instead would lose all precision for values such as epoch
        milliseconds, where the spread is tiny next to the magnitude.
        """
        total = self.numeric_count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.squared_deviations += (
            squared_deviations + delta * delta * self.numeric_count * count / total
        )
        self.numeric_count = total


class Profiler:
    """Statistics of every column of a stream of batches."""

    def __init__(self, seed: int = 0) -> None:
        self.columns: dict[str, _Column] = {}
        self.sample: pl.DataFrame | None = None
        self.rows = 0
        self.random = np.random.default_rng(seed)
        self.sample_threshold = 1.0
        self.sample_pieces: list[pl.DataFrame] = []
        self.sample_piece_rows = 0
        self.pending: list[pl.DataFrame] = []
        self.pending_rows = 0
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="profile")
        self.running: Future[None] | None = None

    def add(self, frame: pl.DataFrame) -> None:
        """Queue a batch; batches are profiled in groups of CHUNK_ROWS to save per-call costs."""
        data = frame.select([name for name in frame.columns if not name.startswith("__")])
        self.pending.append(data)
        self.pending_rows += data.height
        if self.pending_rows >= CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        """Profile the queued batches on the worker thread, which overlaps reading and writing.

        polars releases the GIL while it computes, so the thread uses a second core.
        """
        if not self.pending:
            return
        data = pl.concat(self.pending, how="diagonal_relaxed")
        self.pending, self.pending_rows = [], 0
        if self.running is not None:
            self.running.result()
        self.running = self.worker.submit(self._profile, data)

    def _profile(self, data: pl.DataFrame) -> None:
        self.rows += data.height
        if data.width == 0 or data.height == 0:
            for name, dtype in data.schema.items():
                self.columns.setdefault(name, _Column(dtype=str(dtype)))
            return
        self._add_aggregates(data)
        self._add_hashes(data)
        self._add_counts(data)
        self._add_sample(data)

    def ensure_columns(self, schema: pl.Schema) -> None:
        for name, dtype in schema.items():
            if not name.startswith("__"):
                self.columns.setdefault(name, _Column(dtype=str(dtype)))

    def summary(self) -> dict[str, dict[str, Any]]:
        self.flush()
        if self.running is not None:
            self.running.result()
        self.worker.shutdown()
        self._merge_sample()
        return {name: self._summarize(name, column) for name, column in self.columns.items()}

    def _add_aggregates(self, data: pl.DataFrame) -> None:
        """Add counts, min, max and sums of every column, computed in one polars query."""
        expressions: list[pl.Expr] = []
        for name, dtype in data.schema.items():
            column = pl.col(name)
            expressions.append(column.null_count().alias(f"{name}\0missing"))
            if dtype not in (pl.List, pl.Struct, pl.Object, pl.Null):
                expressions += [
                    column.min().alias(f"{name}\0min"),
                    column.max().alias(f"{name}\0max"),
                ]
            if dtype in NUMERIC:
                values = column.cast(pl.Float64)
                finite = values.filter(values.is_finite())
                expressions += [
                    finite.mean().alias(f"{name}\0mean"),
                    (finite.var(ddof=0) * finite.count()).alias(f"{name}\0squares"),
                    finite.count().alias(f"{name}\0finite"),
                ]
        found = data.select(expressions).row(0, named=True)
        for name, dtype in data.schema.items():
            entry = self.columns.setdefault(name, _Column())
            if dtype != pl.Null:
                entry.dtype = str(dtype)
            entry.count += data.height
            entry.missing += found[f"{name}\0missing"]
            low, high = found.get(f"{name}\0min"), found.get(f"{name}\0max")
            if low is not None:
                entry.minimum = low if entry.minimum is None else min(entry.minimum, low)
            if high is not None:
                entry.maximum = high if entry.maximum is None else max(entry.maximum, high)
            if found.get(f"{name}\0finite"):
                entry.merge_moments(
                    found[f"{name}\0finite"], found[f"{name}\0mean"], found[f"{name}\0squares"]
                )

    def _add_hashes(self, data: pl.DataFrame) -> None:
        """Merge each column's smallest value hashes into its sketch, in one polars query."""
        expressions = []
        for name in data.columns:
            hashes = pl.col(name).drop_nulls().hash(seed=0)
            sketch = self.columns[name].hashes
            if sketch.size >= SKETCH_SIZE:
                # Only hashes below the current k-th smallest can change the sketch.
                hashes = hashes.filter(hashes < int(sketch[-1]))
            expressions.append(hashes.unique().bottom_k(SKETCH_SIZE).implode().alias(name))
        # Each result is a one-row list column; its Series goes to numpy without Python ints.
        found = data.select(expressions)
        for name in found.columns:
            column = self.columns[name]
            values = found[name][0]
            if values is not None and values.len():
                merged = np.union1d(column.hashes, values.to_numpy().astype(np.uint64))
                column.hashes = merged[:SKETCH_SIZE]

    def _add_counts(self, data: pl.DataFrame) -> None:
        """Add exact value counts of the columns that still have few distinct values."""
        tracked = [name for name in data.columns if self.columns[name].tracking_top]
        if not tracked:
            return
        found = data.select(
            [pl.col(name).drop_nulls().value_counts(name="count").implode() for name in tracked]
        )
        for name in tracked:
            column = self.columns[name]
            cell = found[name][0]  # a Series of {value, count} structs
            if cell is None or not cell.len():
                continue
            counts = cell.struct.unnest().rename({name: "value"})
            if column.top is not None:
                counts = pl.concat([column.top, counts], how="vertical_relaxed")
                counts = counts.group_by("value").agg(pl.col("count").sum())
            if counts.height > TOP_TRACK_LIMIT:
                column.tracking_top, column.top = False, None
            else:
                column.top = compact(counts)

    def _add_sample(self, data: pl.DataFrame) -> None:
        keys = self.random.random(data.height)
        # Rows with a key above the sample's largest key could never enter it.
        chosen = keys < self.sample_threshold
        if not chosen.all():
            if not chosen.any():
                return
            data, keys = data.filter(pl.Series(chosen)), keys[chosen]
        # Chosen rows wait as pieces, and the sample is cut back to SAMPLE_ROWS once they add
        # up to that many rows: sorting and copying the whole sample for every chunk cost
        # more than the rest of the profile.
        self.sample_pieces.append(compact(data.with_columns(pl.Series(SAMPLE_KEY, keys))))
        self.sample_piece_rows += len(keys)
        if self.sample_piece_rows >= SAMPLE_ROWS:
            self._merge_sample()

    def _merge_sample(self) -> None:
        if not self.sample_pieces:
            return
        parts = [self.sample] if self.sample is not None else []
        combined = pl.concat(parts + self.sample_pieces, how="diagonal_relaxed")
        self.sample_pieces, self.sample_piece_rows = [], 0
        if combined.height > SAMPLE_ROWS:
            combined = compact(combined.sort(SAMPLE_KEY).head(SAMPLE_ROWS))
        self.sample = combined
        if combined.height >= SAMPLE_ROWS:
            self.sample_threshold = float(combined[SAMPLE_KEY].max())  # type: ignore[arg-type]

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
            result["mean"] = column.mean
            result["std"] = math.sqrt(column.squared_deviations / column.numeric_count)
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
        result["top_values_exact"] = column.tracking_top
        return result

    def _sample_of(self, name: str) -> pl.Series | None:
        if self.sample is None or name not in self.sample.columns:
            return None
        return self.sample[name].drop_nulls()

    def _top_values(self, column: _Column, sample: pl.Series | None) -> list[dict[str, Any]]:
        if column.tracking_top and column.top is not None:
            ranked = column.top.sort(["count", "value"], descending=[True, False], nulls_last=True)
            return [
                {"value": _plain(value), "count": count}
                for value, count in ranked.head(TOP_VALUES).iter_rows()
            ]
        if sample is None or sample.is_empty():
            return []
        counts = sample.value_counts(sort=True).head(TOP_VALUES)
        return [
            {"value": _plain(value), "count": count, "estimated": True}
            for value, count in counts.iter_rows()
        ]


def compact(frame: pl.DataFrame) -> pl.DataFrame:
    """Copy a frame's values into buffers of its own.

    polars' string columns are views into the buffers of the batch they came from, so a few
    rows kept from each batch would otherwise keep every batch in memory.
    """
    table = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
    copied = pl.from_arrow(table)
    assert isinstance(copied, pl.DataFrame)
    return copied


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
