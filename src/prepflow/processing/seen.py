"""Remember the values seen in earlier batches, for ``unique`` columns and ``deduplicate``.

Values are kept as 64-bit hashes in a Python set: checking a batch is linear in its size,
however many batches came before. Two different values with the same hash would be taken as
a repeat; at a billion distinct values that chance is about 3 in 100 (the birthday bound),
and the repeat is still reported, never lost.
"""

from __future__ import annotations

import polars as pl

HASH_SEED = 0


class SeenValues:
    def __init__(self) -> None:
        self.hashes: set[int] = set()

    def first_occurrences(self, values: pl.Series | pl.DataFrame) -> pl.Series:
        """Return a mask that is true where a value (or row) occurs for the first time.

        Missing values (a null Series entry) are never repeats; whole rows are compared as
        they are, nulls included.
        """
        if isinstance(values, pl.DataFrame):
            hashes = values.hash_rows(seed=HASH_SEED).to_list()
            present = [True] * len(hashes)
        else:
            hashes = values.hash(seed=HASH_SEED).to_list()
            present = values.is_not_null().to_list()
        seen = self.hashes
        first: list[bool] = []
        for value, is_present in zip(hashes, present, strict=True):
            if not is_present:
                first.append(True)
            elif value in seen:
                first.append(False)
            else:
                seen.add(value)
                first.append(True)
        return pl.Series("first", first, dtype=pl.Boolean)
