"""Recipe validation: defaults, every rule, and error messages that name the field and value."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from prepflow.errors import ConfigurationError, RecipeError
from prepflow.processing.recipe import (
    MAX_RECIPE_BYTES,
    PANDAS_MISSING_TOKENS,
    TIMESTAMP_COLUMN,
    AddTimestamp,
    DropMissing,
    ExtractJson,
    Filter,
    Impute,
    Recipe,
    default_recipe,
    load_recipe,
    parse_recipe,
)


def recipe_error(text: str | bytes) -> str:
    """Return the message of the RecipeError that parsing ``text`` raises."""
    with pytest.raises(RecipeError) as caught:
        parse_recipe(text)
    return str(caught.value)


# --- Defaults --------------------------------------------------------------------------------


def test_empty_text_gives_defaults() -> None:
    assert parse_recipe("") == Recipe()


def test_empty_mapping_gives_defaults() -> None:
    assert parse_recipe("{}") == Recipe()


def test_comment_only_gives_defaults() -> None:
    assert parse_recipe("# nothing here\n") == Recipe()


def test_input_defaults() -> None:
    options = Recipe().input

    assert options.format == "auto"
    assert options.encoding == "utf-8"
    assert options.delimiter == ","
    assert options.quote == '"'
    assert options.decimal == "."
    assert options.thousands is None
    assert options.header is True
    assert options.missing_values == PANDAS_MISSING_TOKENS


def test_missing_tokens_match_pandas() -> None:
    assert "" in PANDAS_MISSING_TOKENS
    assert "NA" in PANDAS_MISSING_TOKENS
    assert "null" in PANDAS_MISSING_TOKENS
    assert "-nan" in PANDAS_MISSING_TOKENS
    assert len(PANDAS_MISSING_TOKENS) == len(set(PANDAS_MISSING_TOKENS))


def test_output_defaults() -> None:
    output = Recipe().output

    assert output.format == "csv"
    assert output.compression == "none"
    assert output.per_file is False
    assert output.name == "data"
    assert output.split is None
    assert output.partition_by is None


def test_other_defaults() -> None:
    recipe = Recipe()

    assert recipe.version == 1
    assert recipe.steps == []
    assert recipe.columns_schema.columns == {}
    assert recipe.columns_schema.unknown_columns == "keep"
    assert recipe.rejected.keep_removed is False
    assert recipe.artifacts.apply is None


def test_default_recipe_steps() -> None:
    recipe = default_recipe()

    assert recipe.steps == [DropMissing(step="drop_missing"), AddTimestamp(step="add_timestamp")]


def test_default_recipe_drops_any_missing() -> None:
    step = default_recipe().steps[0]

    assert isinstance(step, DropMissing)
    assert step.columns == "any"


def test_default_recipe_timestamp_column() -> None:
    step = default_recipe().steps[1]

    assert isinstance(step, AddTimestamp)
    assert step.column == TIMESTAMP_COLUMN


def test_default_recipe_per_file() -> None:
    assert default_recipe().output.per_file is True


def test_default_recipe_needs_no_fitting() -> None:
    assert default_recipe().needs_fitting() is False


def test_column_spec_defaults() -> None:
    recipe = parse_recipe("schema: {columns: {age: {}}}")
    spec = recipe.columns_schema.columns["age"]

    assert spec.type == "string"
    assert spec.required is False
    assert spec.on_invalid == "reject"
    assert spec.missing_values is None


def test_encoding_normalized() -> None:
    assert parse_recipe("input: {encoding: UTF8}").input.encoding == "utf-8"


def test_encoding_alias_normalized() -> None:
    assert parse_recipe("input: {encoding: latin1}").input.encoding == "iso8859-1"


def test_to_dict_uses_schema_key() -> None:
    document = parse_recipe("schema: {unknown_columns: drop}").to_dict()

    assert document["schema"]["unknown_columns"] == "drop"
    assert "columns_schema" not in document


def test_to_dict_round_trips() -> None:
    recipe = parse_recipe(
        "steps:\n  - step: impute\n    columns: [a]\n    strategy: constant\n    value: 0\n"
    )

    assert Recipe.model_validate(recipe.to_dict()) == recipe


def test_json_text_accepted() -> None:
    recipe = parse_recipe('{"output": {"format": "parquet", "compression": "zstd"}}')

    assert recipe.output.compression == "zstd"


def test_recipe_is_frozen() -> None:
    recipe = Recipe()

    with pytest.raises(ValueError):
        recipe.version = 1  # type: ignore[misc]


# --- Accepted values -------------------------------------------------------------------------


def test_snappy_with_parquet_accepted() -> None:
    recipe = parse_recipe("output: {format: parquet, compression: snappy}")

    assert recipe.output.compression == "snappy"


def test_gzip_with_csv_accepted() -> None:
    assert parse_recipe("output: {compression: gzip}").output.compression == "gzip"


def test_split_fractions_accepted() -> None:
    split = parse_recipe("output: {split: {train: 0.7, validation: 0.2, test: 0.1}}").output.split

    assert split is not None
    assert split.fractions() == {"train": 0.7, "validation": 0.2, "test": 0.1}


def test_split_fractions_omit_zero() -> None:
    split = parse_recipe("output: {split: {train: 0.8, test: 0.2}}").output.split

    assert split is not None
    assert split.fractions() == {"train": 0.8, "test": 0.2}


def test_quote_may_be_null() -> None:
    assert parse_recipe("input: {quote: null}").input.quote is None


def test_thousands_differs_from_decimal() -> None:
    options = parse_recipe("input: {thousands: '.', decimal: ','}").input

    assert options.thousands == "."
    assert options.decimal == ","


def test_date_format_accepted() -> None:
    recipe = parse_recipe("schema: {columns: {d: {type: date, format: '%d/%m/%Y'}}}")

    assert recipe.columns_schema.columns["d"].format == "%d/%m/%Y"


def test_string_bounds_accepted() -> None:
    recipe = parse_recipe("schema: {columns: {code: {min: AA, max: ZZ}}}")

    assert recipe.columns_schema.columns["code"].max == "ZZ"


def test_mixed_bound_types_accepted() -> None:
    # A date column's bounds are text. A number and a text bound are not compared.
    recipe = parse_recipe("schema: {columns: {d: {type: date, min: '2024-01-01', max: 5}}}")

    assert recipe.columns_schema.columns["d"].min == "2024-01-01"


def test_equal_min_max_accepted() -> None:
    recipe = parse_recipe("schema: {columns: {a: {type: int, min: 3, max: 3}}}")

    assert recipe.columns_schema.columns["a"].min == 3


def test_impute_constant_with_value() -> None:
    step = parse_recipe(
        "steps: [{step: impute, columns: [a], strategy: constant, value: 0}]"
    ).steps[0]

    assert isinstance(step, Impute)
    assert step.value == 0


def test_extract_json_list_maps_names() -> None:
    step = parse_recipe("steps: [{step: extract_json, column: j, fields: [a, b.c]}]").steps[0]

    assert isinstance(step, ExtractJson)
    assert step.fields == {"a": "a", "b.c": "b.c"}


def test_extract_json_mapping_kept() -> None:
    step = parse_recipe(
        "steps: [{step: extract_json, column: j, fields: {city: addr.city}}]"
    ).steps[0]

    assert isinstance(step, ExtractJson)
    assert step.fields == {"city": "addr.city"}


def test_filter_step_keeps_text() -> None:
    step = parse_recipe("steps: [{step: filter, where: 'age >= 18'}]").steps[0]

    assert isinstance(step, Filter)
    assert step.where == "age >= 18"


def test_every_step_kind_parses() -> None:
    text = """
steps:
  - step: drop_missing
    columns: [a]
  - step: impute
    columns: [a]
    strategy: mean
  - step: extract_json
    column: j
    fields: [x]
  - step: parse_dates
    columns: [d]
    format: "%Y-%m-%d"
  - step: rename
    columns: {a: b}
  - step: drop_columns
    columns: [c]
  - step: deduplicate
    keys: [b]
  - step: filter
    where: "b > 0"
  - step: clip
    columns: [b]
    min: 0
  - step: one_hot
    columns: [e]
  - step: ordinal
    columns: [f]
  - step: scale
    columns: [b]
    method: min_max
  - step: add_timestamp
"""

    names = [step.step for step in parse_recipe(text).steps]

    assert names == [
        "drop_missing", "impute", "extract_json", "parse_dates", "rename", "drop_columns",
        "deduplicate", "filter", "clip", "one_hot", "ordinal", "scale", "add_timestamp",
    ]  # fmt: skip


# --- needs_fitting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step",
    [
        "{step: impute, columns: [a], strategy: median}",
        "{step: one_hot, columns: [a]}",
        "{step: ordinal, columns: [a]}",
        "{step: scale, columns: [a]}",
    ],
)
def test_fitted_step_needs_fitting(step: str) -> None:
    assert parse_recipe(f"steps: [{step}]").needs_fitting() is True


def test_constant_impute_still_fitted_step() -> None:
    recipe = parse_recipe("steps: [{step: impute, columns: [a], strategy: constant, value: x}]")

    assert recipe.needs_fitting() is True


def test_applied_artifacts_skip_fitting() -> None:
    recipe = parse_recipe("steps: [{step: scale, columns: [a]}]\nartifacts: {apply: job-1}")

    assert recipe.needs_fitting() is False


def test_plain_steps_need_no_fitting() -> None:
    recipe = parse_recipe("steps: [{step: drop_missing}, {step: clip, columns: [a], max: 1}]")

    assert recipe.needs_fitting() is False


def test_no_steps_need_no_fitting() -> None:
    assert Recipe().needs_fitting() is False


# --- Validation errors -----------------------------------------------------------------------


def test_recipe_error_is_configuration_error() -> None:
    assert issubclass(RecipeError, ConfigurationError)


def test_unknown_encoding() -> None:
    message = recipe_error("input: {encoding: klingon}")

    assert "input.encoding" in message
    assert "'klingon'" in message
    assert "utf-8" in message


def test_delimiter_two_characters() -> None:
    message = recipe_error("input: {delimiter: ';;'}")

    assert "input.delimiter" in message
    assert "';;'" in message
    assert "one character" in message


def test_delimiter_empty() -> None:
    message = recipe_error("input: {delimiter: ''}")

    assert "input.delimiter" in message
    assert "one character" in message


def test_delimiter_line_break() -> None:
    message = recipe_error('input: {delimiter: "\\n"}')

    assert "input.delimiter" in message
    assert "line break" in message


def test_quote_two_characters() -> None:
    message = recipe_error("input: {quote: \"''\"}")

    assert "input.quote" in message
    assert "one character" in message


def test_delimiter_equals_quote() -> None:
    message = recipe_error('input: {delimiter: "\'", quote: "\'"}')

    assert "input" in message
    assert "delimiter and quote must differ" in message


def test_thousands_equals_decimal() -> None:
    message = recipe_error("input: {thousands: ',', decimal: ','}")

    assert "thousands and decimal marks must differ" in message
    assert "'thousands': ','" in message


def test_unknown_thousands_mark() -> None:
    message = recipe_error("input: {thousands: x}")

    assert "input.thousands" in message
    assert "'x'" in message


def test_pattern_does_not_compile() -> None:
    message = recipe_error("schema: {columns: {zip: {pattern: '[0-9'}}}")

    assert "schema.columns.zip.pattern" in message
    assert "invalid regular expression '[0-9'" in message


def test_min_greater_than_max() -> None:
    message = recipe_error("schema: {columns: {age: {type: int, min: 10, max: 1}}}")

    assert "schema.columns.age" in message
    assert "is greater than max" in message


def test_string_min_greater_than_max() -> None:
    message = recipe_error("schema: {columns: {code: {min: b, max: a}}}")

    assert "min 'b' is greater than max 'a'" in message


def test_text_bound_on_number_column() -> None:
    message = recipe_error("schema: {columns: {age: {type: float, max: ten}}}")

    assert "schema.columns.age" in message
    assert "max of a float column must be a number" in message


def test_format_on_non_date() -> None:
    message = recipe_error("schema: {columns: {age: {type: int, format: '%Y'}}}")

    assert "schema.columns.age" in message
    assert "format and day_first apply to date and datetime, not int" in message


def test_day_first_on_string() -> None:
    message = recipe_error("schema: {columns: {name: {day_first: true}}}")

    assert "not string" in message


def test_unknown_column_type() -> None:
    message = recipe_error("schema: {columns: {age: {type: integer}}}")

    assert "schema.columns.age.type" in message
    assert "'integer'" in message
    assert "'int'" in message


def test_impute_constant_without_value() -> None:
    message = recipe_error("steps: [{step: impute, columns: [a], strategy: constant}]")

    assert "steps[0] (impute)" in message
    assert "value is required with strategy constant" in message


def test_impute_value_with_median() -> None:
    message = recipe_error("steps: [{step: impute, columns: [a], strategy: median, value: 3}]")

    assert "steps[0] (impute)" in message
    assert "allowed only there" in message
    assert "'median'" in message


def test_impute_unknown_strategy() -> None:
    message = recipe_error("steps: [{step: impute, columns: [a], strategy: average}]")

    assert "steps[0] (impute).strategy" in message
    assert "'average'" in message
    assert "'mean', 'median', 'mode' or 'constant'" in message


def test_impute_empty_columns() -> None:
    message = recipe_error("steps: [{step: impute, columns: [], strategy: mean}]")

    assert "steps[0] (impute).columns" in message
    assert "at least 1 item" in message


def test_error_path_counts_steps() -> None:
    message = recipe_error(
        "steps:\n  - step: drop_missing\n  - step: scale\n    columns: [a]\n    method: robust\n"
    )

    assert "steps[1] (scale).method" in message
    assert "'robust'" in message
    assert "'standard' or 'min_max'" in message


def test_clip_without_bounds() -> None:
    message = recipe_error("steps: [{step: clip, columns: [a]}]")

    assert "steps[0] (clip)" in message
    assert "give min, max or both" in message


def test_clip_min_above_max() -> None:
    message = recipe_error("steps: [{step: clip, columns: [a], min: 5, max: 1}]")

    assert "min 5.0 is greater than max 1.0" in message


def test_split_not_summing_to_one() -> None:
    message = recipe_error("output: {split: {train: 0.6, validation: 0.2, test: 0.1}}")

    assert "output.split" in message
    assert "must add up to 1, not 0.9" in message


def test_split_over_one() -> None:
    message = recipe_error("output: {split: {train: 0.9, test: 0.2}}")

    assert "must add up to 1, not 1.1" in message


def test_split_zero_train() -> None:
    message = recipe_error("output: {split: {train: 0, test: 1}}")

    assert "output.split.train" in message


def test_split_negative_fraction() -> None:
    message = recipe_error("output: {split: {train: 1.1, test: -0.1}}")

    assert "output.split.test" in message
    assert "-0.1" in message


@pytest.mark.parametrize("compression", ["snappy", "zstd"])
def test_parquet_compression_with_csv(compression: str) -> None:
    message = recipe_error(f"output: {{format: csv, compression: {compression}}}")

    assert "output" in message
    assert f"{compression} compression is for parquet" in message


def test_zstd_with_jsonl() -> None:
    message = recipe_error("output: {format: jsonl, compression: zstd}")

    assert "zstd compression is for parquet" in message


def test_unknown_compression() -> None:
    message = recipe_error("output: {compression: brotli}")

    assert "output.compression" in message
    assert "'brotli'" in message
    assert "'gzip'" in message


def test_per_file_with_split() -> None:
    message = recipe_error("output: {per_file: true, split: {train: 1}}")

    assert "output" in message
    assert "split needs the files combined" in message


def test_stratify_equals_partition_by() -> None:
    message = recipe_error("output: {split: {train: 1, stratify: region}, partition_by: region}")

    assert "stratify and partition_by name the same column" in message
    assert "'region'" in message


def test_bad_output_name() -> None:
    message = recipe_error("output: {name: ../escape}")

    assert "output.name" in message
    assert "'../escape'" in message


def test_unknown_step_name() -> None:
    message = recipe_error("steps: [{step: normalise}]")

    assert "steps[0]" in message
    assert "'normalise'" in message
    assert "'scale'" in message
    assert "'impute'" in message


def test_step_without_name() -> None:
    message = recipe_error("steps: [{columns: [a]}]")

    assert "steps[0]" in message
    assert "step" in message


def test_unknown_top_level_field() -> None:
    message = recipe_error("colour: red")

    assert "colour: Extra inputs are not permitted" in message
    assert "'red'" in message


def test_unknown_step_field() -> None:
    message = recipe_error("steps: [{step: scale, columns: [a], mehtod: min_max}]")

    assert "steps[0] (scale).mehtod" in message
    assert "not permitted" in message


def test_unknown_input_field() -> None:
    message = recipe_error("input: {separator: ';'}")

    assert "input.separator" in message


def test_unknown_version() -> None:
    message = recipe_error("version: 2")

    assert "version" in message
    assert "(got 2)" in message


def test_filter_syntax_error() -> None:
    message = recipe_error("steps: [{step: filter, where: 'age >'}]")

    assert "steps[0] (filter).where" in message
    assert "expected a value at the end" in message


def test_filter_python_rejected() -> None:
    message = recipe_error("""steps: [{step: filter, where: "__import__('os').system('x')"}]""")

    assert "steps[0] (filter).where" in message
    assert "unexpected character '.'" in message


def test_every_problem_listed() -> None:
    message = recipe_error(
        "input: {encoding: nope}\noutput: {compression: brotli}\nsteps: [{step: nope}]\n"
    )

    assert "3 problem(s)" in message
    assert "input.encoding" in message
    assert "output.compression" in message
    assert "steps[0]" in message


def test_long_value_is_shortened() -> None:
    message = recipe_error(f"input: {{encoding: {'x' * 500}}}")

    for line in message.splitlines():
        assert len(line) < 400


def test_message_names_source() -> None:
    with pytest.raises(RecipeError) as caught:
        parse_recipe("colour: red", source="team.yaml")

    assert str(caught.value).startswith("team.yaml is invalid")


def test_alias_expansion_fails_fast() -> None:
    # Under 500 bytes of YAML whose aliases expand to 10**8 values under one unknown key.
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 8):
        aliases = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{aliases}]")
    started = time.monotonic()

    message = recipe_error("\n".join(lines))

    assert "Extra inputs are not permitted" in message
    assert time.monotonic() - started < 1.0


# --- YAML and text errors --------------------------------------------------------------------


def test_yaml_error_names_position() -> None:
    message = recipe_error("input:\n  delimiter: ';'\n quote: x\n")

    assert "is not valid YAML" in message
    assert "line 3, column 2" in message


def test_yaml_unclosed_bracket() -> None:
    message = recipe_error("steps: [{step: scale\n")

    assert "is not valid YAML" in message
    assert "line 2, column 1" in message


def test_yaml_tab_indent() -> None:
    message = recipe_error("input:\n\tdelimiter: ';'\n")

    assert "is not valid YAML" in message
    assert "line 2" in message


def test_yaml_python_tag_rejected() -> None:
    message = recipe_error("steps: !!python/object/apply:os.system ['echo x']")

    assert "is not valid YAML" in message


def test_list_document_rejected() -> None:
    message = recipe_error("- step: impute\n")

    assert "must be a mapping" in message
    assert "not list" in message


def test_scalar_document_rejected() -> None:
    message = recipe_error("just text")

    assert "must be a mapping" in message
    assert "not str" in message


def test_number_document_rejected() -> None:
    assert "not int" in recipe_error("42")


def test_bytes_not_utf8() -> None:
    message = recipe_error(b"input: {delimiter: '\xff'}\n")

    assert message.startswith("recipe is not UTF-8 text")


# --- load_recipe -----------------------------------------------------------------------------


def test_load_recipe_file(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text("output: {format: parquet}\n", encoding="utf-8")

    assert load_recipe(path).output.format == "parquet"


def test_load_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_bytes(b"")

    assert load_recipe(path) == Recipe()


def test_load_names_file_in_error(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text("colour: red\n", encoding="utf-8")

    with pytest.raises(RecipeError) as caught:
        load_recipe(path)

    assert str(path) in str(caught.value)


def test_load_largest_file_accepted(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    body = b"version: 1\n"
    path.write_bytes(body + b"#" * (MAX_RECIPE_BYTES - len(body)))

    assert load_recipe(path) == Recipe()


def test_load_oversized_file(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    body = b"version: 1\n"
    path.write_bytes(body + b"#" * (MAX_RECIPE_BYTES - len(body) + 1))

    with pytest.raises(RecipeError) as caught:
        load_recipe(path)

    assert f"larger than {MAX_RECIPE_BYTES} bytes" in str(caught.value)


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    with pytest.raises(RecipeError) as caught:
        load_recipe(path)

    assert "cannot read recipe" in str(caught.value)
    assert str(path) in str(caught.value)
    assert "No such file" in str(caught.value)


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as caught:
        load_recipe(tmp_path)

    assert "cannot read recipe" in str(caught.value)


def test_load_error_keeps_cause(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as caught:
        load_recipe(tmp_path / "absent.yaml")

    assert isinstance(caught.value.__cause__, FileNotFoundError)
