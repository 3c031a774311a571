"""Remember the values seen in earlier batches, for ``unique`` columns and ``deduplicate``.

Values are kept as 64-bit hashes in a few sorted numpy arrays (8 bytes a value), merged the
way a log-structured merge tree merges its levels, so checking a batch costs a binary search
per level and memory stays at 8 bytes per distinct value. Two different values with the same
hash would be taken as a repeat; at a billion distinct values that chance is about 3 in 100
(the birthday bound), and such a row is still reported as a repeat, never lost.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

HASH_SEED = 0


class SeenValues:
    def __init__(self) -> None:
        # Sorted arrays of distinct hashes, each at most half the size of the one before.
        self.levels: list[np.ndarray[Any, Any]] = []

    def first_occurrences(self, values: pl.Series | pl.DataFrame) -> pl.Series:
        """Return a mask that is true where a value (or row) occurs for the first time.

        Missing values (a null Series entry) are never repeats; whole rows are compared as
        they are, nulls included.
        """
        if isinstance(values, pl.DataFrame):
            hashes = values.hash_rows(seed=HASH_SEED).to_numpy()
            present = np.ones(hashes.size, dtype=bool)
        else:
            hashes = values.hash(seed=HASH_SEED).to_numpy()
            present = values.is_not_null().to_numpy()
        candidates = hashes[present]
        # Sorted distinct hashes make the binary searches below walk memory in order.
        distinct, first_index = np.unique(candidates, return_index=True)
        new = ~self._contains(distinct)
        fresh = np.zeros(candidates.size, dtype=bool)
        fresh[first_index[new]] = True
        self._add(distinct[new])
        result = np.ones(hashes.size, dtype=bool)
        result[present] = fresh
        return pl.Series("first", result, dtype=pl.Boolean)

    def _contains(self, hashes: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        found = np.zeros(hashes.size, dtype=bool)
        for level in self.levels:
            positions = np.minimum(np.searchsorted(level, hashes), level.size - 1)
            found |= level[positions] == hashes
        return found

    def _add(self, hashes: np.ndarray[Any, Any]) -> None:
        if hashes.size == 0:
            return
        self.levels.append(hashes)
        while len(self.levels) > 1 and self.levels[-1].size * 2 > self.levels[-2].size:
            newer = self.levels.pop()
            older = self.levels.pop()
            merged = np.concatenate((older, newer))
            merged.sort(kind="stable")
            self.levels.append(merged)
