"""Fields of JSON objects as text: one typed decode, or Python where polars' decode cannot.

The schema check and the extract_json step share these, so that a column the schema check
already decoded is not parsed again by the step (see ``predecoded_names``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import polars as pl

# Columns the schema check adds beside a JSON column that extract_json reads first: the
# step's fields as text, one column each. Names starting with "__" never reach the outputs.
PREDECODED_PREFIX = "__fields:"


@dataclass(frozen=True)
class Predecoded:
    """A JSON column the schema check decodes for the extract_json step that reads it first."""

    fields: dict[str, str]  # output name -> path, as the step has them
    keep_text: bool  # False: passing rows carry no text, as no step before extract_json reads it


def predecoded_names(column: str, fields: dict[str, str]) -> dict[str, str]:
    """Map the hidden column of each extracted field to the field's output name."""
    return {f"{PREDECODED_PREFIX}{column}:{name}": name for name in fields}


def fields_of_objects(column: pl.Series, fields: dict[str, str]) -> dict[str, pl.Series]:
    """Extract fields from a column of JSON objects or nulls: with polars' typed decode, or,
    when a field contains an array or an object, in Python with the same text for numbers.
    """
    decoded = decode_fields(column, fields)
    if decoded is not None:
        return decoded
    objects = [None if text is None else json.loads(text) for text in column.to_list()]
    return {
        name: pl.Series(name, [field_text(value, path) for value in objects], dtype=pl.String)
        for name, path in fields.items()
    }


def field_text(document: Any, path: str) -> str | None:
    """Return a field of a parsed JSON object as text, as polars' decode writes it."""
    value = document
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # polars writes 1.5e3 as 1500
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def decode_fields(column: pl.Series, fields: dict[str, str]) -> dict[str, pl.Series] | None:
    """Decode JSON objects once and return each requested field as text, or None when some
    value is not an object or a requested field contains an array or object.
    """
    dtype = fields_dtype(list(fields.values()))
    if dtype is None:
        return None
    try:
        decoded = column.str.json_decode(dtype)
    except pl.exceptions.PolarsError:
        return None
    if (column.is_not_null() & decoded.is_null()).any():
        return None  # the text "null" decodes to a missing object without an error
    result: dict[str, pl.Series] = {}
    for name, path in fields.items():
        value = decoded
        for part in path.split("."):
            value = value.struct.field(part)
        result[name] = value.alias(name)
    return result


def fields_dtype(paths: list[str]) -> pl.Struct | None:
    """Build the struct type of the dotted paths as text, or None if they conflict."""
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        parts = path.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                return None
            node = child
        if isinstance(node.get(parts[-1]), dict):
            return None
        node[parts[-1]] = None

    def build(node: dict[str, Any]) -> pl.Struct:
        return pl.Struct(
            {key: pl.String if child is None else build(child) for key, child in node.items()}
        )

    return build(tree)
