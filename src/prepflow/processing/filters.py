"""The filter language of the ``filter`` step: comparisons joined by and, or, not.

Examples::

    age >= 18 and department != 'HR'
    country in ['FR', 'DE'] or `postal code` is missing
    not (salary < 0)

A column is a bare name (letters, digits, ``_``) or any name in backticks. Literals are numbers,
quoted strings and ``true``/``false``. The text is parsed into a small tree and compiled to a
polars expression; nothing in it is ever evaluated as Python. A comparison with a missing value
is false, so ``x != 1`` does not keep rows where ``x`` is missing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    import polars as pl

MAX_FILTER_CHARS = 2_000
COMPARISONS = {"==": "eq", "=": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}
TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
      | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<quoted>`[^`]+`)
      | (?P<op><=|>=|==|!=|<|>|=|\(|\)|\[|\]|,)
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
KEYWORDS = {"and", "or", "not", "in", "is", "missing", "true", "false"}

Literal = str | int | float | bool


class FilterSyntaxError(ValueError):
    """Filter text that does not parse; the message names the position."""


@dataclass(frozen=True)
class Comparison:
    column: str
    operator: str
    value: Literal


@dataclass(frozen=True)
class Membership:
    column: str
    values: tuple[Literal, ...]
    negated: bool


@dataclass(frozen=True)
class MissingTest:
    column: str
    negated: bool


@dataclass(frozen=True)
class BooleanOp:
    operator: str  # "and" or "or"
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    operand: Node


Node = Comparison | Membership | MissingTest | BooleanOp | Not


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    position: int


def parse_filter(text: str) -> Node:
    """Parse filter text into a tree, raising FilterSyntaxError with the position of a fault."""
    if len(text) > MAX_FILTER_CHARS:
        raise FilterSyntaxError(f"filter is longer than {MAX_FILTER_CHARS} characters")
    parser = _Parser(text, _tokenize(text))
    node = parser.expression()
    parser.expect_end()
    return node


def columns_of(node: Node) -> set[str]:
    """Return the columns a filter reads."""
    if isinstance(node, BooleanOp):
        return set().union(*(columns_of(operand) for operand in node.operands))
    if isinstance(node, Not):
        return columns_of(node.operand)
    return {node.column}


def to_expression(node: Node, schema: Mapping[str, pl.DataType] | None = None) -> pl.Expr:
    """Compile a filter tree to a polars expression that is true for the rows to keep.

    With the columns' types (``schema``), each literal is checked against its column first,
    and a date column's text literal is read as an ISO 8601 date, so a mismatch is a
    FilterTypeError naming the column and both types instead of a polars error mid-run.
    """
    # Imported here so that validating a recipe (in the CLI) does not load polars.
    import polars as pl

    if isinstance(node, BooleanOp):
        expressions = [to_expression(operand, schema) for operand in node.operands]
        return (
            pl.all_horizontal(expressions)
            if node.operator == "and"
            else pl.any_horizontal(expressions)
        )
    if isinstance(node, Not):
        return ~to_expression(node.operand, schema)
    column = pl.col(node.column)
    if isinstance(node, MissingTest):
        return column.is_not_null() if node.negated else column.is_null()
    dtype = schema.get(node.column) if schema is not None else None
    if isinstance(node, Membership):
        values = [_literal_for(node.column, dtype, value) for value in node.values]
        # Equality per value, because is_in needs the list and the column to share a type.
        inside = pl.any_horizontal([(column == pl.lit(value)).fill_null(False) for value in values])
        return (~inside if node.negated else inside) & column.is_not_null()
    compare = getattr(column, node.operator)
    result: pl.Expr = compare(pl.lit(_literal_for(node.column, dtype, node.value)))
    return result.fill_null(False)


class FilterTypeError(ValueError):
    """A filter literal whose type cannot be compared with its column's."""


def _literal_for(column: str, dtype: pl.DataType | None, value: Literal) -> object:
    """Return the literal to compare with a column of ``dtype``, or raise FilterTypeError."""
    if dtype is None:
        return value
    if isinstance(value, bool):
        kind = "boolean"
    elif isinstance(value, int | float):
        kind = "number"
    else:
        kind = "text"
    if dtype.is_numeric() and kind == "number":
        return value
    if str(dtype) in ("String", "Categorical") and kind == "text":
        return value
    if str(dtype) == "Boolean" and kind == "boolean":
        return value
    if (str(dtype) == "Date" or str(dtype).startswith("Datetime")) and kind == "text":
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            pass
        else:
            return parsed.date() if str(dtype) == "Date" else parsed
    hint = (
        "declare the column's type in the recipe's schema (columns the schema does not name "
        "are text)"
        if str(dtype) == "String"
        else "compare it with a value of its type (dates as 'YYYY-MM-DD')"
    )
    raise FilterTypeError(
        f"the filter compares column {column!r}, which is {dtype}, with the {kind} "
        f"{value!r}; {hint}"
    )


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = TOKEN.match(text, position)
        if match is None or match.lastgroup is None:
            start = len(text) - len(text[position:].lstrip())
            raise FilterSyntaxError(
                f"unexpected character {text[start]!r} at position {start + 1} of the filter"
            )
        kind = match.lastgroup
        tokens.append(_Token(kind, match.group(kind), match.start(kind)))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.index = 0

    def expression(self) -> Node:
        return self._boolean("or", self._conjunction)

    def expect_end(self) -> None:
        if self.index < len(self.tokens):
            self._fail("expected 'and', 'or' or the end of the filter")

    def _conjunction(self) -> Node:
        return self._boolean("and", self._negation)

    def _boolean(self, operator: str, parse: Callable[[], Node]) -> Node:
        operands = [parse()]
        while self._accept_word(operator):
            operands.append(parse())
        return operands[0] if len(operands) == 1 else BooleanOp(operator, tuple(operands))

    def _negation(self) -> Node:
        if self._accept_word("not"):
            return Not(self._negation())
        if self._accept_op("("):
            node = self.expression()
            self._expect_op(")")
            return node
        return self._comparison()

    def _comparison(self) -> Node:
        column = self._column()
        if self._accept_word("is"):
            negated = self._accept_word("not")
            self._expect_word("missing")
            return MissingTest(column, negated)
        if self._accept_word("not"):
            self._expect_word("in")
            return Membership(column, self._list(), negated=True)
        if self._accept_word("in"):
            return Membership(column, self._list(), negated=False)
        token = self._peek()
        if token is None or token.text not in COMPARISONS:
            self._fail("expected a comparison (==, !=, <, <=, >, >=), 'in' or 'is missing'")
        self.index += 1
        return Comparison(column, COMPARISONS[token.text], self._literal())

    def _column(self) -> str:
        token = self._peek()
        if token is not None and token.kind == "quoted":
            self.index += 1
            return token.text[1:-1]
        if token is not None and token.kind == "word" and token.text not in KEYWORDS:
            self.index += 1
            return token.text
        self._fail("expected a column name (use `backticks` for names with spaces)")

    def _list(self) -> tuple[Literal, ...]:
        self._expect_op("[")
        values = [self._literal()]
        while self._accept_op(","):
            values.append(self._literal())
        self._expect_op("]")
        return tuple(values)

    def _literal(self) -> Literal:
        token = self._peek()
        if token is None:
            self._fail("expected a value")
        self.index += 1
        if token.kind == "number":
            return float(token.text) if any(c in token.text for c in ".eE") else int(token.text)
        if token.kind == "string":
            return re.sub(r"\\(.)", r"\1", token.text[1:-1])
        if token.kind == "word" and token.text in ("true", "false"):
            return token.text == "true"
        self.index -= 1
        self._fail("expected a number, a quoted string, true or false")

    def _peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _accept_word(self, word: str) -> bool:
        token = self._peek()
        if token is not None and token.kind == "word" and token.text == word:
            self.index += 1
            return True
        return False

    def _accept_op(self, op: str) -> bool:
        token = self._peek()
        if token is not None and token.kind == "op" and token.text == op:
            self.index += 1
            return True
        return False

    def _expect_word(self, word: str) -> None:
        if not self._accept_word(word):
            self._fail(f"expected {word!r}")

    def _expect_op(self, op: str) -> None:
        if not self._accept_op(op):
            self._fail(f"expected {op!r}")

    def _fail(self, message: str) -> NoReturn:
        token = self._peek()
        where = (
            f"at position {token.position + 1} ({token.text!r})"
            if token is not None
            else "at the end"
        )
        raise FilterSyntaxError(f"{message} {where} in filter {self.text!r}")
