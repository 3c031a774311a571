"""The recipe: a YAML description of what the built-in step does, validated before any data.

A recipe has five parts, each optional::

    input:     how to read the files (format, encoding, delimiter, missing-value tokens)
    schema:    the type and rules of each column, and what to do with columns it does not name
    steps:     the transformations, in order (``- step: impute`` and the step's fields)
    output:    format, compression, train/validation/test split, partitioning
    rejected:  whether rows that steps remove on purpose are written with the rejected rows
    artifacts: a previous run's fitted parameters to apply instead of fitting

``load_recipe`` raises RecipeError naming every field path, the bad value and what is
allowed. Column names are checked against the data later, when the header is known.
"""

from __future__ import annotations

import codecs
import math
import re
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from prepflow.errors import RecipeError
from prepflow.processing.filters import FilterSyntaxError, parse_filter

# pandas.read_csv's default na_values (pandas 2.x, "na_values" in its read_csv documentation),
# so the default recipe treats as missing what the reference script's dropna() dropped.
PANDAS_MISSING_TOKENS = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)  # fmt: skip
TIMESTAMP_COLUMN = "processed_timestamp"
# A recipe file larger than this is not a recipe; the limit keeps a wrong upload cheap.
MAX_RECIPE_BYTES = 1_048_576
# Problems listed in one RecipeError; the count of the others follows them.
MAX_PROBLEMS_SHOWN = 20
# Characters of a bad value quoted in a message.
MAX_SHOWN_CHARS = 100

ColumnType = Literal["int", "float", "string", "bool", "date", "datetime", "category", "json"]
OnInvalid = Literal["reject", "set_missing"]
NUMERIC_TYPES = ("int", "float")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputOptions(_Model):
    """How to read the input files."""

    format: Literal["auto", "csv", "parquet", "jsonl", "json"] = "auto"
    encoding: str = "utf-8"
    delimiter: str = ","
    quote: str | None = '"'
    decimal: Literal[".", ","] = "."
    thousands: Literal[",", ".", " ", "_", "'"] | None = None
    header: bool = True
    missing_values: tuple[str, ...] = PANDAS_MISSING_TOKENS

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            return codecs.lookup(value).name
        except LookupError:
            raise ValueError(
                f"unknown encoding {_short(value)}; use a Python codec name such as utf-8, "
                "cp1252 or latin-1"
            ) from None

    @field_validator("delimiter", "quote")
    @classmethod
    def _one_character(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 1 or value in "\r\n"):
            raise ValueError(f"must be one character other than a line break, got {value!r}")
        return value

    @model_validator(mode="after")
    def _marks_differ(self) -> InputOptions:
        if self.delimiter == self.quote:
            raise ValueError("delimiter and quote must differ")
        if self.thousands is not None and self.thousands == self.decimal:
            raise ValueError("thousands and decimal marks must differ")
        return self


class ColumnSpec(_Model):
    """The type of one column and the rules its values must meet."""

    type: ColumnType = "string"
    required: bool = False
    unique: bool = False
    min: float | str | None = None
    max: float | str | None = None
    allowed: tuple[str | int | float | bool, ...] | None = None
    pattern: str | None = None
    # What a value that fails its type or a rule does: reject its row, or become missing.
    on_invalid: OnInvalid = "reject"
    # Tokens that mean "missing" in this column; None uses input.missing_values.
    missing_values: tuple[str, ...] | None = None
    # strptime-style format of a date or datetime column, e.g. "%d/%m/%Y"; None accepts ISO 8601.
    format: str | None = None
    day_first: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"invalid regular expression {value!r}: {error}") from None
        return value

    @model_validator(mode="after")
    def _rules_fit_type(self) -> ColumnSpec:
        if (self.format is not None or self.day_first) and self.type not in ("date", "datetime"):
            raise ValueError(f"format and day_first apply to date and datetime, not {self.type}")
        if self.type in NUMERIC_TYPES:
            for name in ("min", "max"):
                if isinstance(getattr(self, name), str):
                    article = "an" if self.type == "int" else "a"
                    raise ValueError(f"{name} of {article} {self.type} column must be a number")
        if self.min is not None and self.max is not None and _greater(self.min, self.max):
            raise ValueError(f"min {self.min!r} is greater than max {self.max!r}")
        return self


class SchemaOptions(_Model):
    """The columns the recipe names, and what happens to the others."""

    columns: dict[str, ColumnSpec] = Field(default_factory=dict)
    unknown_columns: Literal["keep", "drop", "fail"] = "keep"


class DropMissing(_Model):
    """Remove rows that miss a value in the given columns, or in any column."""

    step: Literal["drop_missing"]
    columns: list[str] | Literal["any"] = "any"


class Impute(_Model):
    """Fill missing values with a fitted mean, median or mode, or a constant."""

    step: Literal["impute"]
    columns: list[str] = Field(min_length=1)
    strategy: Literal["mean", "median", "mode", "constant"]
    value: str | int | float | bool | None = None

    @model_validator(mode="after")
    def _value_for_constant(self) -> Impute:
        if (self.strategy == "constant") != (self.value is not None):
            raise ValueError("value is required with strategy constant and allowed only there")
        return self


class ExtractJson(_Model):
    """Add a column per field of a JSON object column; ``a.b`` reaches into nested objects."""

    step: Literal["extract_json"]
    column: str
    # Output column name -> field path in the object.
    fields: dict[str, str] = Field(min_length=1)
    drop_source: bool = True
    on_invalid: OnInvalid = "reject"

    @field_validator("fields", mode="before")
    @classmethod
    def _list_means_same_names(cls, value: object) -> object:
        if isinstance(value, list):
            return {str(item): str(item) for item in value}
        return value


class ParseDates(_Model):
    """Parse text columns into dates or datetimes with a declared format."""

    step: Literal["parse_dates"]
    columns: list[str] = Field(min_length=1)
    format: str | None = None
    day_first: bool = False
    type: Literal["date", "datetime"] = "date"
    on_invalid: OnInvalid = "reject"


class Rename(_Model):
    step: Literal["rename"]
    columns: dict[str, str] = Field(min_length=1)


class DropColumns(_Model):
    step: Literal["drop_columns"]
    columns: list[str] = Field(min_length=1)


class Deduplicate(_Model):
    """Keep the first row of each group of rows equal on ``keys`` (all columns if omitted)."""

    step: Literal["deduplicate"]
    keys: list[str] | None = None


class Filter(_Model):
    """Keep the rows for which ``where`` holds; see prepflow.processing.filters for the syntax."""

    step: Literal["filter"]
    where: str

    @field_validator("where")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            parse_filter(value)
        except FilterSyntaxError as error:
            raise ValueError(str(error)) from None
        return value


class Clip(_Model):
    step: Literal["clip"]
    columns: list[str] = Field(min_length=1)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Clip:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class OneHot(_Model):
    """Replace each column with one 0/1 column per category seen when fitting."""

    step: Literal["one_hot"]
    columns: list[str] = Field(min_length=1)
    drop_source: bool = True


class Ordinal(_Model):
    """Replace each category with its position in the sorted vocabulary; unknown becomes -1."""

    step: Literal["ordinal"]
    columns: list[str] = Field(min_length=1)


class Scale(_Model):
    step: Literal["scale"]
    columns: list[str] = Field(min_length=1)
    method: Literal["standard", "min_max"] = "standard"


class AddTimestamp(_Model):
    """Add one UTC timestamp, the same for every row of a job."""

    step: Literal["add_timestamp"]
    column: str = TIMESTAMP_COLUMN


Step = Annotated[
    DropMissing
    | Impute
    | ExtractJson
    | ParseDates
    | Rename
    | DropColumns
    | Deduplicate
    | Filter
    | Clip
    | OneHot
    | Ordinal
    | Scale
    | AddTimestamp,
    Field(discriminator="step"),
]
# Steps whose parameters are learned from the data, and written to artifacts.json.
FITTED_STEPS = (Impute, OneHot, Ordinal, Scale)


class Split(_Model):
    """An exact random split: sizes are the fractions of the rows, rounded to whole rows."""

    train: float = Field(gt=0, le=1)
    validation: float = Field(default=0, ge=0, lt=1)
    test: float = Field(default=0, ge=0, lt=1)
    seed: int = 0
    stratify: str | None = None

    @model_validator(mode="after")
    def _sums_to_one(self) -> Split:
        total = self.train + self.validation + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ValueError(f"train, validation and test must add up to 1, not {total:g}")
        return self

    def fractions(self) -> dict[str, float]:
        named = {"train": self.train, "validation": self.validation, "test": self.test}
        return {name: value for name, value in named.items() if value > 0}


class OutputOptions(_Model):
    """Format, compression, split and partitioning of the processed rows."""

    format: Literal["csv", "parquet", "jsonl"] = "csv"
    compression: Literal["none", "gzip", "zstd", "snappy"] = "none"
    # Write one output per input file (named processed_<input name>) instead of combining.
    per_file: bool = False
    # Base name of a combined output: <name>.<format>, or one file per split.
    name: str = Field(default="data", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    split: Split | None = None
    partition_by: str | None = None
    # Prefix text cells that start with =, +, -, @, a tab or a carriage return with a single
    # quote in every CSV file written (outputs and rejected.csv), so spreadsheet programs show
    # them as text instead of running them as formulas.
    escape_formulas: bool = False

    @model_validator(mode="after")
    def _compatible(self) -> OutputOptions:
        if self.compression in ("snappy", "zstd") and self.format != "parquet":
            raise ValueError(f"{self.compression} compression is for parquet; use gzip or none")
        if self.per_file and self.split is not None:
            raise ValueError("split needs the files combined; remove per_file or split")
        if self.split is not None and self.split.stratify == self.partition_by is not None:
            raise ValueError("stratify and partition_by name the same column")
        return self


class RejectedOptions(_Model):
    # Also write rows that steps remove on purpose (drop_missing, deduplicate, filter).
    keep_removed: bool = False


class ArtifactsOptions(_Model):
    # A previous run's fitted parameters: its job name, the S3 URI of its artifacts.json, or,
    # when the step runs by hand, a local path. None fits the parameters on this data.
    apply: str | None = None


class Recipe(_Model):
    version: Literal[1] = 1
    input: InputOptions = Field(default_factory=InputOptions)
    # ``schema`` would shadow a BaseModel attribute, so the field has another Python name.
    columns_schema: SchemaOptions = Field(default_factory=SchemaOptions, alias="schema")
    steps: list[Step] = Field(default_factory=list)
    output: OutputOptions = Field(default_factory=OutputOptions)
    rejected: RejectedOptions = Field(default_factory=RejectedOptions)
    artifacts: ArtifactsOptions = Field(default_factory=ArtifactsOptions)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _fitted_over_all_files(self) -> Recipe:
        fitted = [step.step for step in self.steps if isinstance(step, FITTED_STEPS)]
        if self.output.per_file and fitted and self.artifacts.apply is None:
            raise ValueError(
                f"output.per_file with fitted steps ({', '.join(fitted)}) would fit each file "
                "on its own; combine the files, or fit once and apply those artifacts"
            )
        return self

    def needs_fitting(self) -> bool:
        return self.artifacts.apply is None and any(
            isinstance(step, FITTED_STEPS) for step in self.steps
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the recipe as plain data, with every default filled in, for the report."""
        return self.model_dump(mode="json", by_alias=True)


def check_shardable(recipe: Recipe, host_count: int, *, source: str = "the recipe") -> None:
    """Raise RecipeError when ``recipe`` would give other rows on ``host_count`` hosts than on one.

    Each host of a sharded job sees only its share of the objects. A fitted step would learn
    other parameters on each share, and a duplicate check would miss duplicates held by two
    hosts. A split stays allowed: each host splits its share exactly, so the fractions hold.
    """
    if host_count < 2:
        return
    problems = [
        f"step {index} ({step.step}) fits its parameters on all rows"
        for index, step in enumerate(recipe.steps, start=1)
        if isinstance(step, FITTED_STEPS) and recipe.artifacts.apply is None
    ]
    problems += [
        f"step {index} (deduplicate) compares all rows"
        for index, step in enumerate(recipe.steps, start=1)
        if isinstance(step, Deduplicate)
    ]
    problems += [
        f"column {name!r} is unique, which is checked over all rows"
        for name, column in recipe.columns_schema.columns.items()
        if column.unique
    ]
    if problems:
        raise RecipeError(
            f"{source} cannot run on {host_count} instances, because each instance sees only "
            f"its share of the objects: {'; '.join(problems)}. Set PROCESSING_INSTANCE_COUNT "
            "to 1 (or --instance-count 1), or fit on one instance first and name that job in "
            "artifacts.apply"
        )


def default_recipe() -> Recipe:
    """Return the reference behaviour: drop each row with a missing value, add a timestamp."""
    return Recipe(
        steps=[DropMissing(step="drop_missing"), AddTimestamp(step="add_timestamp")],
        output=OutputOptions(per_file=True),
    )


def load_recipe(path: Path) -> Recipe:
    """Read and validate a recipe file; raise RecipeError for any fault, naming its place."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_RECIPE_BYTES + 1)
    except OSError as error:
        raise RecipeError(
            f"cannot read recipe {str(path)!r}: {error.strerror or error}; check the path"
        ) from error
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeError(
            f"recipe {str(path)!r} is larger than {MAX_RECIPE_BYTES} bytes; is it a data file?"
        )
    return parse_recipe(raw, source=str(path))


def parse_recipe(text: str | bytes, *, source: str = "recipe") -> Recipe:
    """Validate recipe text (YAML, so JSON too)."""
    if isinstance(text, bytes):
        raw = text
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            line = raw.count(b"\n", 0, error.start) + 1
            raise RecipeError(
                f"{source} is not UTF-8 text: byte 0x{raw[error.start]:02X} on line {line} "
                "cannot be decoded; save the recipe as UTF-8"
            ) from error
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise RecipeError(f"{source} is not valid YAML: {_yaml_problem(error)}") from error
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise RecipeError(
            f"{source} must be a mapping with keys such as input, schema, steps and output, "
            f"not {type(data).__name__}"
        )
    try:
        return Recipe.model_validate(data)
    except ValidationError as error:
        raise RecipeError(_describe(error, source)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects a key given twice in one mapping (YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    if mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(problem)


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"{source} is invalid ({error.error_count()} problem(s)):"]
    problems = error.errors(include_url=False)
    for item in problems[:MAX_PROBLEMS_SHOWN]:
        where = _field_path(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        shown = _short(item.get("input"))
        # Validators that quote the value already name it, and the whole recipe is no value.
        suffix = "" if shown in message or not item["loc"] else f" (got {shown})"
        lines.append(f"  {where}: {message}{suffix}")
    if len(problems) > MAX_PROBLEMS_SHOWN:
        lines.append(f"  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
    return "\n".join(lines)


def _field_path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in {
            "drop_missing", "impute", "extract_json", "parse_dates", "rename", "drop_columns",
            "deduplicate", "filter", "clip", "one_hot", "ordinal", "scale", "add_timestamp",
        }:  # fmt: skip
            # pydantic adds the discriminator value to the path; "(impute)" reads better.
            path += f" ({part})"
        else:
            path += ("." if path else "") + str(part)
    return path or "(top level)"


def _short(value: object) -> str:
    # reprlib stops early, so a huge value (YAML aliases can expand to gigabytes) stays cheap.
    text = _SHORT_REPR.repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "..."


def _short_repr() -> reprlib.Repr:
    shortener = reprlib.Repr()  # Python 3.11's Repr takes no keyword arguments
    shortener.maxlevel, shortener.maxstring, shortener.maxother = 3, 60, 60
    shortener.maxlist, shortener.maxdict = 6, 6
    return shortener


_SHORT_REPR = _short_repr()


def _greater(low: float | str, high: float | str) -> bool:
    if isinstance(low, str) != isinstance(high, str):
        return False
    return low > high  # type: ignore[operator]
