"""The recipe's steps: each one transforms a batch, and the fitted ones learn parameters first.

A step works on a polars DataFrame batch in ``apply`` and on a LazyFrame of the whole dataset in
``lazy``; the engine uses the lazy form to fit later steps and to count rows before a split.
Rows a step removes on purpose come back as ``removed``; rows it cannot process (a broken JSON
object, an unparseable date) come back as ``rejected`` with a reason, unless the step says to set
the value missing instead.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, TypeVar

import polars as pl

from prepflow.errors import ProcessingError
from prepflow.processing import filters
from prepflow.processing.jsonfields import (
    Predecoded,
    decode_fields,
    fields_of_objects,
    predecoded_names,
)
from prepflow.processing.recipe import (
    AddTimestamp,
    Clip,
    Deduplicate,
    DropColumns,
    DropMissing,
    ExtractJson,
    Filter,
    Impute,
    OneHot,
    Ordinal,
    ParseDates,
    Recipe,
    Rename,
    Scale,
    Step,
)
from prepflow.processing.seen import SeenValues
from prepflow.processing.validate import (
    COLUMN,
    REASON,
    VALUE,
    constant,
    json_problems,
    parse_temporal,
)

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)
NUMERIC = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64,
           pl.Float32, pl.Float64)  # fmt: skip


@dataclass
class Outcome:
    frame: pl.DataFrame
    removed: pl.DataFrame | None = None  # removed on purpose (drop_missing, deduplicate, filter)
    rejected: pl.DataFrame | None = None  # could not be processed; has REASON, COLUMN, VALUE


def data_columns(columns: list[str]) -> list[str]:
    return [name for name in columns if not name.startswith("__")]


def describe(step: Step) -> str:
    """Return a one-line description of a step, for logs and the report."""
    fields = step.model_dump(exclude={"step"}, exclude_none=True)
    details = ", ".join(f"{key}={value}" for key, value in fields.items())
    return f"{step.step} ({details})" if details else step.step


def output_columns(step: Step, columns: list[str], params: dict[str, Any] | None) -> list[str]:
    """Return the columns after ``step``; raise ProcessingError when it names an absent one."""
    needed = _columns_read(step, columns)
    absent = [name for name in needed if name not in columns]
    if absent:
        raise ProcessingError(
            f"step {describe(step)} names column(s) {', '.join(map(repr, absent))} that the data "
            "does not have at that point; the columns are "
            + ", ".join(map(repr, data_columns(columns)))
        )
    result = _columns_after(step, columns, params)
    clashes = [name for name, count in Counter(result).items() if count > 1]
    if clashes:
        raise ProcessingError(
            f"step {describe(step)} would make two columns named "
            f"{', '.join(map(repr, clashes))}; rename the existing column first, "
            "or choose other names in the step"
        )
    return result


def _columns_after(step: Step, columns: list[str], params: dict[str, Any] | None) -> list[str]:
    if isinstance(step, Rename):
        return [step.columns.get(name, name) for name in columns]
    if isinstance(step, DropColumns):
        return [name for name in columns if name not in step.columns]
    if isinstance(step, ExtractJson):
        kept = [name for name in columns if not (step.drop_source and name == step.column)]
        if step.drop_source and step.column in step.fields:
            # The source column is dropped after the fields are added, so a field of that
            # name would be dropped with it: count it as a clash.
            kept.append(step.column)
        return [*kept, *step.fields]
    if isinstance(step, AddTimestamp):
        if step.column in columns:
            raise ProcessingError(
                f"the data already has a {step.column!r} column, which add_timestamp would "
                "overwrite; rename that column or give the step another column name"
            )
        return [*columns, step.column]
    if isinstance(step, OneHot) and params is not None:
        result = [n for n in columns if not (step.drop_source and n in step.columns)]
        for name in step.columns:
            result += [one_hot_name(name, value) for value in params[name]]
        return result
    return columns


def _columns_read(step: Step, columns: list[str]) -> list[str]:
    if isinstance(step, DropMissing):
        return [] if step.columns == "any" else list(step.columns)
    if isinstance(step, ExtractJson):
        return [step.column]
    if isinstance(step, Rename):
        return list(step.columns)
    if isinstance(step, Deduplicate):
        return list(step.keys or [])
    if isinstance(step, Filter):
        return sorted(filters.columns_of(filters.parse_filter(step.where)))
    if isinstance(step, AddTimestamp):
        return []
    return list(getattr(step, "columns", []))


# Steps that neither remove rows nor read every column: after them, a JSON column's text is
# still not needed when extract_json drops it.
ROW_KEEPING_STEPS = (Impute, Rename, DropColumns, Clip, OneHot, Ordinal, Scale, AddTimestamp)


def first_extractions(recipe: Recipe) -> dict[str, Predecoded]:
    """Plan, for each JSON column of the schema whose first use by a step is extract_json,
    that the schema check decodes the step's fields, so the column is parsed once for both.

    A step that names the column earlier (rename, impute, drop_columns, ...) may change it,
    so such a column is left to the step. The text itself is dropped at the check when
    nothing before the step can use it: no unique check, no step that removes rows (whose
    removed rows would be kept with their values) or reads every column.
    """
    specs = recipe.columns_schema.columns
    json_columns = {
        name for name, spec in specs.items() if spec.type == "json" and spec.on_invalid == "reject"
    }
    found: dict[str, Predecoded] = {}
    for position, step in enumerate(recipe.steps):
        named = set(_columns_read(step, []))
        if isinstance(step, Rename):
            named |= set(step.columns.values())
        for name in sorted(json_columns & named):
            if isinstance(step, ExtractJson) and step.column == name:
                unused = (
                    step.drop_source
                    and not specs[name].unique
                    and all(
                        isinstance(earlier, ROW_KEEPING_STEPS)
                        for earlier in recipe.steps[:position]
                    )
                )
                found[name] = Predecoded(dict(step.fields), keep_text=not unused)
            json_columns.discard(name)
    return found


def one_hot_name(column: str, value: object) -> str:
    return f"{column}_{value}"


class StepRunner:
    """One step with its parameters and, for deduplicate, the keys seen in earlier batches."""

    def __init__(self, index: int, step: Step, params: dict[str, Any] | None, timestamp: str):
        self.index = index
        self.step = step
        self.params = params
        self.timestamp = timestamp
        self.seen_keys = SeenValues()

    # Batches ---------------------------------------------------------------------------------

    def apply(self, frame: pl.DataFrame) -> Outcome:
        step = self.step
        if isinstance(step, (DropMissing, Filter)):
            keep = frame.select(self._keep_expression(frame.schema)).to_series()
            return Outcome(
                frame.filter(keep), removed=_with_reason(frame.filter(~keep), self.reason())
            )
        if isinstance(step, Deduplicate):
            return self._deduplicate(frame)
        if isinstance(step, ExtractJson):
            return self._extract_json(frame)
        if isinstance(step, ParseDates):
            return self._parse_dates(frame)
        return Outcome(self.transform(frame))

    def keeps_every_row(self, schema: pl.Schema, checked_json: set[str]) -> bool:
        """Tell whether the step passes every row on, given the columns' types at that point.

        ``checked_json`` names columns that the schema already proved to hold JSON objects.
        """
        step = self.step
        if isinstance(step, (DropMissing, Filter, Deduplicate)):
            return False
        if isinstance(step, ExtractJson):
            return step.on_invalid == "set_missing" or step.column in checked_json
        if isinstance(step, ParseDates):
            return step.on_invalid == "set_missing" or all(
                schema.get(name) == self._date_type() for name in step.columns
            )
        return True

    def reason(self) -> str:
        return f"removed by step {self.index} ({self.step.step})"

    # Whole dataset ---------------------------------------------------------------------------

    def lazy(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        """Apply the step to the whole dataset lazily, dropping the rows it would reject."""
        step = self.step
        columns = frame.collect_schema().names()
        if isinstance(step, (DropMissing, Filter)):
            return frame.filter(self._keep_expression(frame.collect_schema()))
        if isinstance(step, Deduplicate):
            keys = step.keys or data_columns(columns)
            return frame.filter(pl.struct(keys).is_first_distinct())
        if isinstance(step, ExtractJson):
            if _predecoded(step, columns):
                frame = frame.rename(predecoded_names(step.column, step.fields))
                return frame.drop([step.column] if step.drop_source else [])
            if step.on_invalid == "reject":
                frame = frame.filter(
                    pl.col(step.column).map_batches(_valid_json, return_dtype=pl.Boolean)
                )
            # The same extraction as the batch pass, so fitted values match what it writes.
            struct = pl.Struct(dict.fromkeys(step.fields, pl.String))
            extracted = pl.col(step.column).map_batches(
                lambda series: _extract_struct(series, step.fields), return_dtype=struct
            )
            return frame.with_columns(
                [extracted.struct.field(name).alias(name) for name in step.fields]
            ).drop([step.column] if step.drop_source else [])
        if isinstance(step, ParseDates):
            parser, dtype = self._date_parser(), self._date_type()
            parsed = {
                name: pl.col(name).map_batches(parser, return_dtype=dtype) for name in step.columns
            }
            if step.on_invalid == "reject":
                frame = frame.filter(
                    pl.all_horizontal(
                        [pl.col(name).is_null() | parsed[name].is_not_null() for name in parsed]
                    )
                )
            return frame.with_columns([parsed[name].alias(name) for name in parsed])
        return self.transform(frame)

    def fit(self, frame: pl.LazyFrame) -> dict[str, Any]:
        """Learn the step's parameters from the whole dataset at this point."""
        step = self.step
        schema = frame.collect_schema()
        if isinstance(step, Impute):
            if step.strategy == "constant":
                return {name: step.value for name in step.columns}
            if step.strategy in ("mean", "median"):
                _require_numeric(step, schema, step.columns)
            if step.strategy == "median":
                return {name: exact_median(frame, name) for name in step.columns}
            return {
                name: _plain(
                    frame.select(_impute_statistic(name, step.strategy))
                    .collect(engine="streaming")
                    .item()
                )
                for name in step.columns
            }
        if isinstance(step, (OneHot, Ordinal)):
            found = (
                frame.select(
                    [
                        pl.col(name).drop_nulls().cast(pl.String).unique().sort().implode()
                        for name in step.columns
                    ]
                )
                .collect(engine="streaming")
                .row(0, named=True)
            )
            return {name: list(values) for name, values in found.items()}
        if isinstance(step, Scale):
            _require_numeric(step, schema, step.columns)
            aggregations = []
            for name in step.columns:
                column = pl.col(name).cast(pl.Float64)
                if step.method == "standard":
                    aggregations += [
                        column.mean().alias(f"{name}.mean"),
                        column.std(ddof=0).alias(f"{name}.std"),
                    ]
                else:
                    aggregations += [
                        column.min().alias(f"{name}.min"),
                        column.max().alias(f"{name}.max"),
                    ]
            row = frame.select(aggregations).collect(engine="streaming").row(0, named=True)
            result: dict[str, Any] = {}
            for key, value in row.items():
                name, statistic = key.rsplit(".", 1)
                result.setdefault(name, {})[statistic] = _plain(value)
            return result
        return {}

    # Shared ----------------------------------------------------------------------------------

    def transform(self, frame: Frame) -> Frame:
        """Apply a step that keeps every row."""
        step = self.step
        schema = frame.collect_schema()
        if isinstance(step, Impute):
            assert self.params is not None
            return frame.with_columns(
                [self._filled(name, schema[name], self.params[name]) for name in step.columns]
            )
        if isinstance(step, Rename):
            return frame.rename(step.columns)
        if isinstance(step, DropColumns):
            return frame.drop(step.columns)
        if isinstance(step, Clip):
            _require_numeric(step, schema, step.columns)
            return frame.with_columns(
                [pl.col(name).clip(step.min, step.max) for name in step.columns]
            )
        if isinstance(step, OneHot):
            assert self.params is not None
            added = [
                (pl.col(name).cast(pl.String) == value).fill_null(False).cast(pl.Int8)
                .alias(one_hot_name(name, value))
                for name in step.columns
                for value in self.params[name]
            ]  # fmt: skip
            result = frame.with_columns(added)
            return result.drop(step.columns) if step.drop_source else result
        if isinstance(step, Ordinal):
            assert self.params is not None
            # An unseen category becomes -1; a missing value stays missing.
            return frame.with_columns(
                [pl.when(pl.col(name).is_null()).then(None).otherwise(
                    pl.col(name).cast(pl.String).replace_strict(
                        self.params[name], list(range(len(self.params[name]))), default=-1,
                        return_dtype=pl.Int64,
                    )
                ).alias(name) for name in step.columns]
            )  # fmt: skip
        if isinstance(step, Scale):
            assert self.params is not None
            _require_numeric(step, schema, step.columns)
            return frame.with_columns([self._scaled(name) for name in step.columns])
        if isinstance(step, AddTimestamp):
            return frame.with_columns(pl.lit(self.timestamp).alias(step.column))
        raise AssertionError(f"step {step.step} removes rows; use apply or lazy")

    def _filled(self, name: str, dtype: pl.DataType, value: Any) -> pl.Expr:
        """Fill a column's missing values with ``value``, keeping every digit of it.

        An integer column filled with a fractional mean or median becomes Float64 rather than
        truncating the value; a value the column's type cannot hold fails the job.
        """
        column = pl.col(name)
        if value is None:
            return column
        if dtype.is_integer() and isinstance(value, float) and not value.is_integer():
            return column.cast(pl.Float64).fill_null(value)
        if pl.select(pl.lit(value).cast(dtype, strict=False)).item() is None:
            raise ProcessingError(
                f"step {self.index} (impute): {value!r} is not a valid {dtype} value for column "
                f"{name!r}; give a value of that type"
            )
        return column.fill_null(pl.lit(value).cast(dtype))

    def _keep_expression(self, schema: pl.Schema) -> pl.Expr:
        columns = list(schema.names())
        step = self.step
        if isinstance(step, DropMissing):
            names = data_columns(columns) if step.columns == "any" else step.columns
            if not names:
                return pl.lit(True)
            return pl.all_horizontal([pl.col(name).is_not_null() for name in names])
        assert isinstance(step, Filter)
        try:
            return filters.to_expression(filters.parse_filter(step.where), schema)
        except filters.FilterTypeError as error:
            raise ProcessingError(f"step {self.index} (filter): {error}") from error

    def _deduplicate(self, frame: pl.DataFrame) -> Outcome:
        assert isinstance(self.step, Deduplicate)
        keys = self.step.keys or data_columns(frame.columns)
        first = self.seen_keys.first_occurrences(frame.select(keys))
        return Outcome(
            frame.filter(first), removed=_with_reason(frame.filter(~first), self.reason())
        )

    def _extract_json(self, frame: pl.DataFrame) -> Outcome:
        step = self.step
        assert isinstance(step, ExtractJson)
        if _predecoded(step, frame.columns):
            # The schema check proved every value an object and decoded these fields.
            result = frame.rename(predecoded_names(step.column, step.fields))
            return Outcome(result.drop(step.column) if step.drop_source else result)
        column = frame[step.column].cast(pl.String)
        # One typed decode parses each value once and proves every value is an object.
        fields = decode_fields(column, step.fields)
        rejected = None
        if fields is None:
            invalid, messages = json_problems(column)
            if invalid.any() and step.on_invalid == "reject":
                rejected = frame.filter(invalid).with_columns(
                    (pl.lit("invalid JSON: ") + messages.filter(invalid)).alias(REASON),
                    pl.lit(step.column).alias(COLUMN),
                    column.filter(invalid).alias(VALUE),
                )
                frame, column = frame.filter(~invalid), column.filter(~invalid)
            elif invalid.any():
                column = column.set(invalid, None)
            fields = fields_of_objects(column, step.fields)
        result = frame.with_columns(list(fields.values()))
        if step.drop_source:
            result = result.drop(step.column)
        return Outcome(result, rejected=rejected)

    def _date_type(self) -> pl.DataType:
        assert isinstance(self.step, ParseDates)
        return pl.Date() if self.step.type == "date" else pl.Datetime("us")

    def _date_parser(self) -> Any:
        step = self.step
        assert isinstance(step, ParseDates)

        def parse(series: pl.Series) -> pl.Series:
            if series.dtype != pl.String:
                return series.cast(self._date_type(), strict=False)
            return parse_temporal(series.str.strip_chars(), step.format, step.day_first, step.type)

        return parse

    def _parse_dates(self, frame: pl.DataFrame) -> Outcome:
        step = self.step
        assert isinstance(step, ParseDates)
        parser = self._date_parser()
        parsed = {name: parser(frame[name]) for name in step.columns}
        bad = constant(False, frame.height, pl.Boolean)
        column_name = constant(None, frame.height, pl.String)
        value = constant(None, frame.height, pl.String)
        for name in reversed(step.columns):
            invalid = frame[name].is_not_null() & parsed[name].is_null()
            bad = bad | invalid
            column_name = pl.select(
                pl.when(invalid).then(pl.lit(name)).otherwise(column_name)
            ).to_series()
            value = pl.select(
                pl.when(invalid).then(frame[name].cast(pl.String)).otherwise(value)
            ).to_series()
        result = frame.with_columns(list(parsed.values()))
        if step.on_invalid == "set_missing" or not bad.any():
            return Outcome(result)
        expected = step.format or "ISO 8601"
        rejected = frame.filter(bad).with_columns(
            pl.lit(f"invalid {step.type} (expected format {expected})").alias(REASON),
            column_name.filter(bad).alias(COLUMN),
            value.filter(bad).alias(VALUE),
        )
        return Outcome(result.filter(~bad), rejected=rejected)

    def _scaled(self, name: str) -> pl.Expr:
        assert isinstance(self.step, Scale) and self.params is not None
        statistics: dict[str, float] = self.params[name]
        column = pl.col(name).cast(pl.Float64)
        if self.step.method == "standard":
            std = statistics["std"] or 1.0  # a constant column scales to 0, not to NaN
            return ((column - statistics["mean"]) / std).alias(name)
        spread = (statistics["max"] - statistics["min"]) or 1.0
        return ((column - statistics["min"]) / spread).alias(name)


def _predecoded(step: ExtractJson, columns: list[str]) -> bool:
    return all(name in columns for name in predecoded_names(step.column, step.fields))


def _with_reason(frame: pl.DataFrame, reason: str) -> pl.DataFrame | None:
    if frame.height == 0:
        return None
    return frame.with_columns(
        pl.lit(reason).alias(REASON),
        pl.lit(None, dtype=pl.String).alias(COLUMN),
        pl.lit(None, dtype=pl.String).alias(VALUE),
    )


def _extract_struct(column: pl.Series, fields: dict[str, str]) -> pl.Series:
    """Return the extracted fields of a column of JSON objects, as one struct Series."""
    text = column.cast(pl.String)
    invalid, _ = json_problems(text)
    if invalid.any():
        text = text.set(invalid, None)
    return pl.DataFrame(list(fields_of_objects(text, fields).values())).to_struct(column.name)


def _valid_json(column: pl.Series) -> pl.Series:
    return ~json_problems(column.cast(pl.String))[0]


MEDIAN_BUCKETS = 65_536


def exact_median(frame: pl.LazyFrame, name: str) -> float | None:
    """Return the exact median of a numeric column in memory bounded by its distinct values.

    Loading a column to sort it needs 8 bytes a row. Instead, three streaming passes: count,
    min and max; counts per bucket of the value range, to find the buckets of the middle
    ranks; then the counts of each distinct value in those buckets only.
    """
    column = pl.col(name).cast(pl.Float64)
    values = frame.select(column.alias(name)).filter(pl.col(name).is_not_null())
    count, low, high = (
        values.select(pl.len(), pl.col(name).min().alias("low"), pl.col(name).max().alias("high"))
        .collect(engine="streaming")
        .row(0)
    )
    if count == 0:
        return None
    if not (math.isfinite(low) and math.isfinite(high)) or low == high:
        # Infinities leave no range to cut into buckets; a constant column has one value.
        return float(values.select(pl.col(name).median()).collect(engine="streaming").item())

    width = (high - low) / MEDIAN_BUCKETS
    bucket = ((pl.col(name) - low) / width).floor().clip(0, MEDIAN_BUCKETS - 1).cast(pl.Int64)
    per_bucket = (
        values.group_by(bucket.alias("bucket")).len().collect(engine="streaming").sort("bucket")
    )
    starts = per_bucket["len"].cum_sum() - per_bucket["len"]
    ranks = sorted({(count - 1) // 2, count // 2})
    middle = [_value_at_rank(values, name, bucket, per_bucket, starts, rank) for rank in ranks]
    return sum(middle) / len(middle)


def _value_at_rank(
    values: pl.LazyFrame,
    name: str,
    bucket: pl.Expr,
    per_bucket: pl.DataFrame,
    starts: pl.Series,
    rank: int,
) -> float:
    """Return the value at a 0-based rank, from the value counts of the bucket holding it."""
    position = int(((starts <= rank) & (starts + per_bucket["len"] > rank)).arg_max() or 0)
    chosen = int(per_bucket["bucket"][position])
    counts = (
        values.filter(bucket == chosen).group_by(name).len().collect(engine="streaming").sort(name)
    )
    offset = rank - int(starts[position])
    cumulative = counts["len"].cum_sum()
    index = int((cumulative > offset).arg_max() or 0)
    return float(counts[name][index])


def _impute_statistic(name: str, strategy: str) -> pl.Expr:
    column = pl.col(name)
    if strategy == "mean":
        return column.mean().alias(name)
    if strategy == "median":
        return column.median().alias(name)
    # The smallest of the most frequent values, so ties give the same mode on every run.
    return column.drop_nulls().mode().sort().first().alias(name)


def _require_numeric(step: Step, schema: pl.Schema, columns: list[str]) -> None:
    for name in columns:
        if schema[name] not in NUMERIC:
            raise ProcessingError(
                f"step {step.step} needs numbers, but column {name!r} is {schema[name]}; declare "
                "its type as int or float in the recipe's schema"
            )


def _plain(value: Any) -> Any:
    """Turn a polars scalar into a JSON value (dates as ISO text)."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
