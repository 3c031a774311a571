"""Apply the recipe's schema to a batch: missing-value tokens, types, rules, unknown columns.

A value that fails its column's type or a rule either rejects its row (the default) or becomes
missing and is counted, as the column's ``on_invalid`` says. Rejected rows keep their values as
read, so nothing is lost. Types come from the schema only, never from a guess on a sample, so a
column has the same type whatever the file size or batch boundaries.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import threading
from collections import Counter
from dataclasses import dataclass, field

import polars as pl

from prepflow.errors import ProcessingError
from prepflow.processing.jsonfields import (
    Predecoded,
    decode_fields,
    fields_of_objects,
    predecoded_names,
)
from prepflow.processing.readers import RECORD, json_type
from prepflow.processing.recipe import ColumnSpec, InputOptions, Recipe
from prepflow.processing.seen import SeenValues

logger = logging.getLogger(__name__)

TRUE_WORDS = ("true", "t", "yes", "y", "1")
FALSE_WORDS = ("false", "f", "no", "n", "0")
# Formats tried, in order, for a date or datetime column that declares none (ISO 8601 first).
DATE_FORMATS = ("%Y-%m-%d",)
DAY_FIRST_DATE_FORMATS = ("%d/%m/%Y", "%d-%m-%Y", "%d.%m.%Y")
MONTH_FIRST_DATE_FORMATS = ("%m/%d/%Y", "%m-%d-%Y")
# A value with an offset or Z (2024-01-31T10:00:00+01:00) is converted to UTC.
DATETIME_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%z",
)  # fmt: skip
POLARS_TYPES: dict[str, pl.DataType] = {
    "int": pl.Int64(),
    "float": pl.Float64(),
    "string": pl.String(),
    "bool": pl.Boolean(),
    "date": pl.Date(),
    "datetime": pl.Datetime("us"),
    "category": pl.String(),
    "json": pl.String(),
}
# Rejected-row columns, added to a batch while it is checked.
REASON = "__reason"
COLUMN = "__column"
VALUE = "__value"
DUPLICATE_REASON = "duplicate value in a unique column"


@dataclass
class ValidationCounts:
    """Counts of missing and invalid values, summed over batches, for the report."""

    missing_before: Counter[str] = field(default_factory=Counter)
    set_missing: Counter[str] = field(default_factory=Counter)


@dataclass
class Checked:
    good: pl.DataFrame
    rejected: pl.DataFrame  # the rows as read, plus REASON, COLUMN and VALUE


class SchemaValidator:
    """Check batches against the recipe's schema; keeps state across batches for ``unique``."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.options: InputOptions = recipe.input
        self.specs = recipe.columns_schema.columns
        self.counts = ValidationCounts()
        # check() may run on several threads at once (see readers.ordered_map).
        self._counts_lock = threading.Lock()
        self.seen = {name: SeenValues() for name, spec in self.specs.items() if spec.unique}
        # When the engine spills, it checks unique columns itself over the whole spill,
        # which is faster than a batch-by-batch check.
        self.defer_unique = False
        self.unique_columns = [name for name, spec in self.specs.items() if spec.unique]
        # JSON columns whose first use is an extract_json step (steps.first_extractions).
        self.predecoded: dict[str, Predecoded] = {}

    def check_columns(self, columns: list[str], source_name: str) -> None:
        """Raise before any row is read when the file's columns cannot meet the schema."""
        data_columns = [name for name in columns if name != RECORD]
        required = [
            name for name, spec in self.specs.items() if spec.required and name not in data_columns
        ]
        if required:
            raise ProcessingError(
                f"{source_name!r} has no column {', '.join(map(repr, required))}, which the "
                f"schema marks required; its columns are {', '.join(map(repr, data_columns))}"
            )
        unknown = [name for name in data_columns if name not in self.specs]
        absent = [name for name in self.specs if name not in data_columns]
        misspelled = {
            name: close[0]
            for name in absent
            if (close := difflib.get_close_matches(name, unknown, n=1, cutoff=0.8))
        }
        if misspelled:
            # A schema name one typo away from a column of the file would leave that column
            # unchecked and add an empty one: almost surely a misspelling in the recipe.
            names = "; ".join(
                f"no column {name!r}, did you mean {column!r}?"
                for name, column in misspelled.items()
            )
            raise ProcessingError(
                f"{source_name!r} has {names} The schema names it; fix the column name in the "
                "recipe's schema"
            )
        if absent:
            logger.warning(
                "%s has no column %s that the schema names; they are added as missing values",
                source_name,
                ", ".join(map(repr, absent)),
            )
        if unknown and self.specs and self.recipe.columns_schema.unknown_columns == "fail":
            raise ProcessingError(
                f"{source_name!r} has columns the schema does not name: "
                f"{', '.join(map(repr, unknown))}; add them to the schema or set "
                "schema.unknown_columns to keep or drop"
            )

    def check(self, frame: pl.DataFrame, *, tokens_applied: bool = False) -> Checked:
        """Check a batch; ``tokens_applied`` means the reader already made missing tokens null."""
        # Every column as read (schema columns the file lacks added as missing), for rejected rows.
        absent = [name for name in self.specs if name not in frame.columns]
        as_read = frame.with_columns([pl.lit(None, dtype=pl.String).alias(name) for name in absent])
        if not tokens_applied:
            frame = self._apply_missing_tokens(frame)
        nulls = {name: frame[name].null_count() for name in frame.columns if name != RECORD}
        with self._counts_lock:
            self.counts.missing_before.update(nulls)
        frame = self._shape_columns(frame)
        if not self.specs:
            return Checked(frame, _empty_rejected(frame))

        # Rejected rows keep their values as read, missing-value tokens included.
        original = as_read
        problems: list[tuple[str, pl.Series, pl.Series]] = []
        blanked: dict[str, pl.Series] = {}
        converted: dict[str, pl.Series] = {}
        for name, spec in self.specs.items():
            plan = self.predecoded.get(name)
            values, invalid, reasons, missing, extracted = _convert(
                frame[name], spec, self.options, plan.fields if plan else None
            )
            converted.update({series.name: series for series in extracted})
            if plan is not None and not plan.keep_text:
                # Rejected rows keep the text (from ``original``); passing rows need only
                # the fields, and an empty column makes the spill smaller.
                values = pl.repeat(None, len(values), dtype=pl.String, eager=True).alias(name)
            invalid, reasons = self._check_unique(name, spec, values, invalid, reasons)
            if spec.on_invalid == "set_missing":
                if invalid.any():
                    blanked[name] = invalid
                    values = values.set(invalid, None)
                    if spec.required:
                        # A required value cannot be set missing, so its row is rejected
                        # with the reason the value failed.
                        missing = missing | invalid
                invalid = constant(False, len(values), pl.Boolean)
            if missing.any():
                reasons = _choose(
                    missing & reasons.is_null(), pl.lit("missing required value"), reasons
                )
                invalid = invalid | missing
            if invalid.any():
                problems.append((name, invalid, reasons))
            converted[name] = values
        frame = frame.with_columns(list(converted.values()))
        checked = (
            _split_rejected(original, frame, problems)
            if problems
            else Checked(frame, _empty_rejected(original))
        )
        # Count values set missing only in rows that pass, so no row is counted twice.
        kept = _any(problems).not_() if problems else None
        blanked_kept = {
            name: int((mask & kept).sum() if kept is not None else mask.sum())
            for name, mask in blanked.items()
        }
        with self._counts_lock:
            self.counts.set_missing.update(blanked_kept)
        return checked

    def _apply_missing_tokens(self, frame: pl.DataFrame) -> pl.DataFrame:
        expressions = []
        for name, dtype in frame.schema.items():
            if name == RECORD or dtype not in (pl.String, pl.Utf8):
                continue
            spec = self.specs.get(name)
            tokens = (
                spec.missing_values
                if spec is not None and spec.missing_values is not None
                else self.options.missing_values
            )
            if tokens:
                column = pl.col(name)
                expressions.append(
                    pl.when(column.is_in(list(tokens))).then(None).otherwise(column).alias(name)
                )
        return frame.with_columns(expressions) if expressions else frame

    def _shape_columns(self, frame: pl.DataFrame) -> pl.DataFrame:
        if self.specs and self.recipe.columns_schema.unknown_columns == "drop":
            frame = frame.select(
                [name for name in frame.columns if name in self.specs or name == RECORD]
            )
        absent = [name for name in self.specs if name not in frame.columns]
        if absent:
            frame = frame.with_columns(
                [pl.lit(None, dtype=pl.String).alias(name) for name in absent]
            )
        return frame

    def _check_unique(
        self, name: str, spec: ColumnSpec, values: pl.Series, invalid: pl.Series, reasons: pl.Series
    ) -> tuple[pl.Series, pl.Series]:
        if not spec.unique or self.defer_unique:
            return invalid, reasons
        # Invalid values are not remembered, so a later valid copy is not a repeat.
        candidates = values.set(invalid, None) if invalid.any() else values
        repeated = ~self.seen[name].first_occurrences(candidates)
        if repeated.any():
            reasons = pl.select(
                pl.when(repeated).then(pl.lit(DUPLICATE_REASON)).otherwise(reasons)
            ).to_series()
            invalid = invalid | repeated
        return invalid, reasons


def constant(value: bool | None, length: int, dtype: pl.DataType | type[pl.DataType]) -> pl.Series:
    """Return a Series of one value, built by polars: a Python list of a batch's length
    costs more than the checks themselves, and holds the GIL while it is built.
    """
    series: pl.Series = pl.repeat(value, length, dtype=dtype, eager=True)
    return series


def _convert(
    column: pl.Series,
    spec: ColumnSpec,
    options: InputOptions,
    fields: dict[str, str] | None = None,
) -> tuple[pl.Series, pl.Series, pl.Series, pl.Series, list[pl.Series]]:
    """Return the typed values, the mask of invalid values with a reason for each, the mask
    of missing required values (a row fault whatever ``on_invalid`` is), and, for a JSON
    column given ``fields`` (output name -> path), a hidden column per field (see jsonfields).
    """
    present = column.is_not_null()
    target = POLARS_TYPES[spec.type]
    values = _cast(column, spec, options)
    no_reason = constant(None, len(column), pl.String)
    reasons = no_reason
    extracted: list[pl.Series] = []
    if spec.type == "json":
        # With fields to extract, one typed decode checks the objects and extracts them.
        decoded = decode_fields(values, fields) if fields is not None else None
        if decoded is None:
            invalid, messages = json_problems(column)
            if invalid.any():
                reasons = _choose(invalid, pl.lit("invalid JSON: ") + messages, reasons)
            if fields is not None:
                decoded = fields_of_objects(values.set(invalid, None), fields)
        else:
            invalid = present & False
        if fields is not None and decoded is not None:
            hidden = predecoded_names(column.name, fields)
            extracted = [decoded[name].alias(hidden_name) for hidden_name, name in hidden.items()]
    else:
        invalid = present & values.is_null()
        if invalid.any():
            reasons = _choose(invalid, pl.lit(f"invalid {spec.type}"), reasons)
    for mask, reason in _rule_failures(values, spec):
        mask = mask.fill_null(False) & ~invalid
        if mask.any():
            reasons = _choose(mask, pl.lit(reason), reasons)
            invalid = invalid | mask
    missing = values.is_null() & present.not_() if spec.required else present & False
    return (
        values.cast(target).alias(column.name),
        invalid.alias("invalid"),
        reasons.alias("reason"),
        missing.alias("missing"),
        extracted,
    )


def _choose(mask: pl.Series, value: pl.Expr, otherwise: pl.Series) -> pl.Series:
    return pl.select(pl.when(mask).then(value).otherwise(otherwise)).to_series()


def _cast(column: pl.Series, spec: ColumnSpec, options: InputOptions) -> pl.Series:
    if column.dtype not in (pl.String, pl.Utf8):
        target = POLARS_TYPES[spec.type]
        if spec.type == "int" and column.dtype.is_float():
            # A cast would truncate 2.5 to 2; only whole numbers are valid ints.
            whole = column.is_finite() & (column == column.floor())
            return column.set(~whole.fill_null(True), None).cast(pl.Int64, strict=False)
        if spec.type in ("string", "category", "json"):
            if spec.type == "json" and column.dtype != pl.String:
                return column.map_elements(json.dumps, return_dtype=pl.String)
            return column.cast(pl.String, strict=False)
        return column.cast(target, strict=False)
    if spec.type in ("string", "category", "json"):
        return column  # text as read; no strip, which would copy every value
    text = column.str.strip_chars()
    if spec.type == "int":
        if options.thousands:
            text = _without_thousands(text, options)
        return text.str.to_integer(strict=False)
    if spec.type == "float":
        if options.thousands:
            text = _without_thousands(text, options)
        if options.decimal != ".":
            text = text.str.replace_all(options.decimal, ".", literal=True)
        return text.cast(pl.Float64, strict=False)
    if spec.type == "bool":
        lower = text.str.to_lowercase()
        return pl.select(
            pl.when(lower.is_in(TRUE_WORDS)).then(True).when(lower.is_in(FALSE_WORDS)).then(False)
        ).to_series()
    if spec.type == "date":
        return parse_temporal(text, spec.format, spec.day_first, "date")
    if spec.type == "datetime":
        return parse_temporal(text, spec.format, spec.day_first, "datetime")
    raise AssertionError(f"no conversion for type {spec.type!r}")


def _without_thousands(text: pl.Series, options: InputOptions) -> pl.Series:
    """Remove thousands marks; a number whose marks are not every three digits becomes null.

    Without the check "1.2" with "." as the thousands mark would read as 12.
    """
    assert options.thousands is not None
    mark, decimal = re.escape(options.thousands), re.escape(options.decimal)
    grouped = rf"^[+-]?\d{{1,3}}({mark}\d{{3}})+({decimal}\d*)?$"
    misplaced = text.str.contains(mark) & ~text.str.contains(grouped)
    cleaned = text.str.replace_all(options.thousands, "", literal=True)
    return pl.select(pl.when(misplaced).then(None).otherwise(cleaned)).to_series()


def parse_temporal(text: pl.Series, fmt: str | None, day_first: bool, kind: str) -> pl.Series:
    """Parse dates or datetimes with the declared format, or the fixed ISO-first list."""
    if fmt is not None:
        formats: tuple[str, ...] = (fmt,)
    elif kind == "date":
        formats = DATE_FORMATS + (DAY_FIRST_DATE_FORMATS if day_first else MONTH_FIRST_DATE_FORMATS)
    else:
        formats = DATETIME_FORMATS
        # chrono's %z takes +01:00 but not the Z that ISO 8601 allows for UTC.
        text = text.str.replace(r"([0-9])[Zz]$", "${1}+00:00")
    attempts = [
        text.str.to_date(candidate, strict=False, exact=True)
        if kind == "date"
        else _to_utc(text.str.to_datetime(candidate, strict=False, exact=True, time_unit="us"))
        for candidate in formats
    ]
    return pl.select(pl.coalesce(attempts)).to_series().alias(text.name)


def _to_utc(values: pl.Series) -> pl.Series:
    """Make datetimes with an offset naive UTC, so every format gives the same type."""
    dtype = values.dtype
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        return values.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return values


def json_problems(column: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Return a mask of values that are not a JSON object, and the parser's message for each."""
    present = column.filter(column.is_not_null())
    try:
        # polars parses a whole batch natively and raises at the first bad value.
        present.str.json_decode(pl.Struct({}))
        objects = present.str.strip_chars().str.starts_with("{")
        if bool(objects.all()):
            false = constant(False, len(column), pl.Boolean)
            return false, constant(None, len(column), pl.String)
    except pl.exceptions.PolarsError:
        pass
    messages = [None if value is None else _json_message(value) for value in column.to_list()]
    series = pl.Series(messages, dtype=pl.String)
    return series.is_not_null(), series


def _json_message(text: str) -> str | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return str(error)  # "Expecting value: line 1 column 19 (char 18)"
    if not isinstance(value, dict):
        return f"a JSON {json_type(value)}, not an object"
    return None


def _rule_failures(values: pl.Series, spec: ColumnSpec) -> list[tuple[pl.Series, str]]:
    failures: list[tuple[pl.Series, str]] = []
    comparable = spec.type in ("int", "float", "string", "category", "date", "datetime")
    if spec.min is not None and comparable:
        bound = _bound(spec.min, spec.type)
        failures.append((values < bound, f"below min {spec.min}"))
    if spec.max is not None and comparable:
        bound = _bound(spec.max, spec.type)
        failures.append((values > bound, f"above max {spec.max}"))
    if spec.allowed is not None:
        allowed = pl.Series(list(spec.allowed)).cast(values.dtype, strict=False).drop_nulls()
        failures.append(
            (values.is_not_null() & ~values.is_in(allowed), "not one of the allowed values")
        )
    if spec.pattern is not None and values.dtype == pl.String:
        failures.append(
            (
                ~values.str.contains(f"^(?:{spec.pattern})$"),
                f"does not match pattern {spec.pattern!r}",
            )
        )
    return failures


def _bound(value: float | str, kind: str) -> object:
    if kind == "date" and isinstance(value, str):
        return pl.Series([value]).str.to_date(strict=False)[0]
    if kind == "datetime" and isinstance(value, str):
        return pl.Series([value]).str.to_datetime(strict=False, time_unit="us")[0]
    return value


def _split_rejected(
    original: pl.DataFrame,
    converted: pl.DataFrame,
    problems: list[tuple[str, pl.Series, pl.Series]],
) -> Checked:
    any_invalid = _any(problems)
    column_name = constant(None, len(original), pl.String)
    reason = constant(None, len(original), pl.String)
    value = constant(None, len(original), pl.String)
    # The first failing column in schema order names the row's fault.
    for name, mask, reasons in reversed(problems):
        column_name = pl.select(pl.when(mask).then(pl.lit(name)).otherwise(column_name)).to_series()
        reason = pl.select(pl.when(mask).then(reasons).otherwise(reason)).to_series()
        as_text = original[name].cast(pl.String, strict=False)
        value = pl.select(pl.when(mask).then(as_text).otherwise(value)).to_series()
    rejected = original.with_columns(
        reason.alias(REASON), column_name.alias(COLUMN), value.alias(VALUE)
    ).filter(any_invalid)
    return Checked(converted.filter(~any_invalid), rejected)


def _any(problems: list[tuple[str, pl.Series, pl.Series]]) -> pl.Series:
    combined = problems[0][1]
    for _, mask, _ in problems[1:]:
        combined = combined | mask
    return combined


def _empty_rejected(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.clear().with_columns(
        pl.lit(None, dtype=pl.String).alias(REASON),
        pl.lit(None, dtype=pl.String).alias(COLUMN),
        pl.lit(None, dtype=pl.String).alias(VALUE),
    )
