"""The filter language: parsing, error positions, and the rows each expression keeps."""

from __future__ import annotations

import builtins

import polars as pl
import pytest

from prepflow.processing.filters import (
    MAX_FILTER_CHARS,
    BooleanOp,
    Comparison,
    FilterSyntaxError,
    Membership,
    MissingTest,
    Not,
    columns_of,
    parse_filter,
    to_expression,
)


@pytest.fixture
def frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": [1, 2, 3, 4, 5, 6],
            "x": [1, 2, None, 4, 1, 7],
            "f": [0.5, 1500.0, -3.0, None, 2.0, 1e-3],
            "s": ["a", "b", None, "it's", "a b", 'back\\slash "q"'],
            "flag": [True, False, None, True, False, True],
            "postal code": ["75001", None, "10115", None, "1000", "75001"],
        }
    )


def kept(frame: pl.DataFrame, text: str) -> list[int]:
    """Return the ids of the rows the filter keeps, in order."""
    return frame.filter(to_expression(parse_filter(text)))["id"].to_list()


# --- Tree shape ------------------------------------------------------------------------------


def test_and_binds_tighter_than_or() -> None:
    node = parse_filter("a == 1 or b == 2 and c == 3")

    assert node == BooleanOp(
        "or",
        (
            Comparison("a", "eq", 1),
            BooleanOp("and", (Comparison("b", "eq", 2), Comparison("c", "eq", 3))),
        ),
    )


def test_parentheses_override_precedence() -> None:
    node = parse_filter("(a == 1 or b == 2) and c == 3")

    assert node == BooleanOp(
        "and",
        (
            BooleanOp("or", (Comparison("a", "eq", 1), Comparison("b", "eq", 2))),
            Comparison("c", "eq", 3),
        ),
    )


def test_not_binds_tighter_than_and() -> None:
    node = parse_filter("not a == 1 and b == 2")

    assert node == BooleanOp("and", (Not(Comparison("a", "eq", 1)), Comparison("b", "eq", 2)))


def test_double_not_nests() -> None:
    assert parse_filter("not not a == 1") == Not(Not(Comparison("a", "eq", 1)))


def test_chained_or_is_flat() -> None:
    node = parse_filter("a == 1 or a == 2 or a == 3")

    assert node == BooleanOp(
        "or", (Comparison("a", "eq", 1), Comparison("a", "eq", 2), Comparison("a", "eq", 3))
    )


@pytest.mark.parametrize(
    ("text", "operator"),
    [
        ("a == 1", "eq"),
        ("a = 1", "eq"),
        ("a != 1", "ne"),
        ("a < 1", "lt"),
        ("a <= 1", "le"),
        ("a > 1", "gt"),
        ("a >= 1", "ge"),
    ],
)
def test_comparison_operators_map(text: str, operator: str) -> None:
    assert parse_filter(text) == Comparison("a", operator, 1)


def test_in_list_values() -> None:
    node = parse_filter("x in [1, 2.5, 'q', true]")

    assert node == Membership("x", (1, 2.5, "q", True), negated=False)


def test_not_in_list_values() -> None:
    assert parse_filter("x not in ['a']") == Membership("x", ("a",), negated=True)


def test_is_missing() -> None:
    assert parse_filter("x is missing") == MissingTest("x", negated=False)


def test_is_not_missing() -> None:
    assert parse_filter("x is not missing") == MissingTest("x", negated=True)


def test_backtick_name_with_spaces() -> None:
    assert parse_filter("`postal code` == '1'") == Comparison("postal code", "eq", "1")


def test_backtick_keyword_is_a_column() -> None:
    assert parse_filter("`and` == 1") == Comparison("and", "eq", 1)


def test_whitespace_is_optional() -> None:
    assert parse_filter("a>=1") == Comparison("a", "ge", 1)


def test_newlines_count_as_whitespace() -> None:
    assert parse_filter("a ==\n 1\n") == Comparison("a", "eq", 1)


# --- Literals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("7", 7),
        ("-7", -7),
        ("0", 0),
        ("2.5", 2.5),
        ("-2.5", -2.5),
        ("1e3", 1000.0),
        ("1E3", 1000.0),
        ("-1.5e3", -1500.0),
        ("2.5e-2", 0.025),
        ("1e+2", 100.0),
    ],
)
def test_number_literals(literal: str, value: int | float) -> None:
    node = parse_filter(f"a == {literal}")

    assert isinstance(node, Comparison)
    assert node.value == value
    assert type(node.value) is type(value)


def test_true_literal() -> None:
    node = parse_filter("a == true")

    assert isinstance(node, Comparison)
    assert node.value is True


def test_false_literal() -> None:
    node = parse_filter("a == false")

    assert isinstance(node, Comparison)
    assert node.value is False


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("'plain'", "plain"),
        ('"double"', "double"),
        ("''", ""),
        ("'it\\'s'", "it's"),
        ('"say \\"hi\\""', 'say "hi"'),
        ("'back\\\\slash'", "back\\slash"),
        ("'a \"b\"'", 'a "b"'),
        ("\"a 'b'\"", "a 'b'"),
        ("'and or not'", "and or not"),
    ],
)
def test_string_literals(literal: str, value: str) -> None:
    node = parse_filter(f"s == {literal}")

    assert isinstance(node, Comparison)
    assert node.value == value


# --- columns_of ------------------------------------------------------------------------------


def test_columns_of_collects_all() -> None:
    node = parse_filter("a == 1 or (`b c` is missing and not d in [1]) or a > 2")

    assert columns_of(node) == {"a", "b c", "d"}


def test_columns_of_single_comparison() -> None:
    assert columns_of(parse_filter("x != 'y'")) == {"x"}


# --- Rows kept -------------------------------------------------------------------------------


def test_equality_keeps_matches(frame: pl.DataFrame) -> None:
    assert kept(frame, "x == 1") == [1, 5]


def test_inequality_drops_missing(frame: pl.DataFrame) -> None:
    assert kept(frame, "x != 1") == [2, 4, 6]


def test_less_than_drops_missing(frame: pl.DataFrame) -> None:
    assert kept(frame, "x < 3") == [1, 2, 5]


def test_greater_equal_drops_missing(frame: pl.DataFrame) -> None:
    assert kept(frame, "x >= 4") == [4, 6]


def test_not_of_comparison_keeps_missing(frame: pl.DataFrame) -> None:
    # The comparison is false on a missing value, so its negation is true there.
    assert kept(frame, "not (x == 1)") == [2, 3, 4, 6]


def test_precedence_rows(frame: pl.DataFrame) -> None:
    assert kept(frame, "x == 1 or x == 2 and s == 'zzz'") == [1, 5]


def test_parentheses_rows(frame: pl.DataFrame) -> None:
    assert kept(frame, "(x == 1 or x == 2) and s == 'a'") == [1]


def test_in_list_rows(frame: pl.DataFrame) -> None:
    assert kept(frame, "x in [1, 4]") == [1, 4, 5]


def test_not_in_drops_missing(frame: pl.DataFrame) -> None:
    assert kept(frame, "x not in [1, 4]") == [2, 6]


def test_not_before_in_keeps_missing(frame: pl.DataFrame) -> None:
    assert kept(frame, "not x in [1, 4]") == [2, 3, 6]


def test_string_in_list_rows(frame: pl.DataFrame) -> None:
    assert kept(frame, "s in ['a', 'a b']") == [1, 5]


def test_float_column_int_list(frame: pl.DataFrame) -> None:
    assert kept(frame, "f in [2]") == [5]


def test_int_column_mixed_number_list(frame: pl.DataFrame) -> None:
    assert kept(frame, "x in [1, 2.5]") == [1, 5]


def test_is_missing_rows(frame: pl.DataFrame) -> None:
    assert kept(frame, "x is missing") == [3]


def test_is_not_missing_rows(frame: pl.DataFrame) -> None:
    assert kept(frame, "x is not missing") == [1, 2, 4, 5, 6]


def test_backtick_column_rows(frame: pl.DataFrame) -> None:
    assert kept(frame, "`postal code` is missing") == [2, 4]


def test_escaped_quote_rows(frame: pl.DataFrame) -> None:
    assert kept(frame, "s == 'it\\'s'") == [4]


def test_escaped_backslash_rows(frame: pl.DataFrame) -> None:
    assert kept(frame, "s == 'back\\\\slash \"q\"'") == [6]


def test_exponent_rows(frame: pl.DataFrame) -> None:
    assert kept(frame, "f == 1.5e3") == [2]


def test_negative_exponent_rows(frame: pl.DataFrame) -> None:
    assert kept(frame, "f <= 1e-3 and f > -1") == [6]


def test_negative_number_rows(frame: pl.DataFrame) -> None:
    assert kept(frame, "f < -2") == [3]


def test_int_literal_on_float_column(frame: pl.DataFrame) -> None:
    assert kept(frame, "f == 2") == [5]


def test_float_literal_on_int_column(frame: pl.DataFrame) -> None:
    assert kept(frame, "x > 1.5") == [2, 4, 6]


def test_true_rows(frame: pl.DataFrame) -> None:
    assert kept(frame, "flag == true") == [1, 4, 6]


def test_false_rows(frame: pl.DataFrame) -> None:
    assert kept(frame, "flag == false") == [2, 5]


def test_not_true_drops_missing(frame: pl.DataFrame) -> None:
    assert kept(frame, "flag != true") == [2, 5]


def test_or_with_missing_operand(frame: pl.DataFrame) -> None:
    assert kept(frame, "x == 1 or `postal code` == '10115'") == [1, 3, 5]


def test_and_with_missing_operand(frame: pl.DataFrame) -> None:
    assert kept(frame, "flag == true and `postal code` == '75001'") == [1, 6]


def test_expression_on_empty_frame(frame: pl.DataFrame) -> None:
    assert kept(frame.head(0), "x == 1") == []


# --- Errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a ! 1", "unexpected character '!' at position 3"),
        ("a == 1; b == 2", "unexpected character ';' at position 7"),
        ("x == 1.", "unexpected character '.' at position 7"),
        ("x == .5", "unexpected character '.' at position 6"),
        ("'abc", 'unexpected character "\'" at position 1'),
        ("`a == 1", "unexpected character '`' at position 1"),
        ("a == -", "unexpected character '-' at position 6"),
        ("é == 1", "unexpected character 'é' at position 1"),
        ("a == b", "expected a number, a quoted string, true or false at position 6 ('b')"),
        ("a == TRUE", "expected a number, a quoted string, true or false at position 6"),
        ("a <> 1", "expected a number, a quoted string, true or false at position 4 ('>')"),
        ("x in []", "expected a number, a quoted string, true or false at position 7 (']')"),
        ("x in [1,]", "at position 9 (']')"),
        ("a == ", "expected a value at the end"),
        ("(a == 1", "expected ')' at the end"),
        ("x in [1", "expected ']' at the end"),
        ("x in 1", "expected '[' at position 6 ('1')"),
        ("a == 1)", "expected 'and', 'or' or the end of the filter at position 7 (')')"),
        ("x == 1 b == 2", "expected 'and', 'or' or the end of the filter at position 8 ('b')"),
        ("a == 0x10", "at position 7 ('x10')"),
        ("a == 1_000", "at position 7 ('_000')"),
        ("a == 'x' 'y'", "at position 10"),
        ("", "expected a column name"),
        ("   ", "expected a column name"),
        ("a == 1 and", "expected a column name (use `backticks` for names with spaces) at the end"),
        (
            "and == 1",
            "expected a column name (use `backticks` for names with spaces) at position 1",
        ),
        ("a == 1 or or b == 2", "expected a column name (use `backticks` for names with spaces)"),
        ("missing is missing", "expected a column name"),
        ("a", "expected a comparison (==, !=, <, <=, >, >=), 'in' or 'is missing' at the end"),
        ("a 1", "expected a comparison (==, !=, <, <=, >, >=), 'in' or 'is missing' at position 3"),
        ("a is", "expected 'missing' at the end"),
        ("a is not", "expected 'missing' at the end"),
        ("a is null", "expected 'missing' at position 6 ('null')"),
        ("a not 1", "expected 'in' at position 7 ('1')"),
        ("not", "expected a column name"),
        ("()", "expected a column name (use `backticks` for names with spaces) at position 2"),
    ],
)
def test_bad_filter_names_position(text: str, fragment: str) -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter(text)

    assert fragment in str(caught.value)


def test_parse_error_quotes_filter() -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter("a == b")

    assert "in filter 'a == b'" in str(caught.value)


def test_filter_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        parse_filter("a ==")


def test_longest_filter_accepted() -> None:
    text = "a == 1" + " " * (MAX_FILTER_CHARS - len("a == 1"))

    assert parse_filter(text) == Comparison("a", "eq", 1)


def test_overlong_filter_rejected() -> None:
    text = "a == 1" + " " * (MAX_FILTER_CHARS - len("a == 1") + 1)

    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter(text)

    assert f"longer than {MAX_FILTER_CHARS} characters" in str(caught.value)


# --- Python-looking text is rejected, never run ----------------------------------------------

PYTHON_TEXTS = [
    "__import__('os').system('x')",
    "lambda: 1",
    "lambda x: x",
    "a.b == 1",
    "a == b.c",
    "os.system('touch /tmp/x')",
    "a == 1 if True else 2",
    "a == (1)",
    "a == [1]",
    "a == {}",
    "a == f'x'",
    "exec('1')",
    "eval('1') == 1",
    "a == 1 + 1",
    "a == 2 * 3",
    "a[0] == 1",
]


@pytest.mark.parametrize("text", PYTHON_TEXTS)
def test_python_text_rejected(text: str) -> None:
    with pytest.raises(FilterSyntaxError):
        parse_filter(text)


@pytest.mark.parametrize("text", PYTHON_TEXTS)
def test_python_text_never_evaluated(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def record(name: str) -> object:
        def forbidden(*args: object, **kwargs: object) -> object:
            calls.append(name)
            raise AssertionError(f"{name} was called")

        return forbidden

    for name in ("eval", "exec", "compile", "__import__"):
        monkeypatch.setattr(builtins, name, record(name))

    with pytest.raises(FilterSyntaxError):
        parse_filter(text)

    assert calls == []


def test_import_text_stays_a_literal() -> None:
    # Inside quotes the text is only a string value to compare with.
    node = parse_filter("a == \"__import__('os').system('x')\"")

    assert node == Comparison("a", "eq", "__import__('os').system('x')")
