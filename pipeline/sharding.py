"""Which shard of a day scores which entity: a stable hash, the same on every worker.

A day scored as ``n`` shards gives shard ``k`` the entities whose hash falls in ``k``
(:func:`shard_of`). The hash is BLAKE2b of the entity's text, never Python's ``hash``, which is
salted per process: two workers must agree on an entity's shard, and so must a retry tomorrow.
An entity belongs to one shard, so its windows, flags and alarm episodes never span two.
Shard ``k`` reads only its own entities' rows: :func:`entity_rows` is the filter a partition's
reader applies to each Arrow batch before it becomes a pandas frame, on the day and on the
previous day's context tail alike.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# A filter a partition reader applies to each Arrow batch it decodes.
RowFilter = Callable[[pa.RecordBatch], pa.RecordBatch]


def stable_hash(entity: str) -> int:
    """A 64-bit hash of the entity's text, the same in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(entity.encode(), digest_size=8).digest(), "big")


def shard_of(entity: str, shards: int) -> int:
    """The shard (0 to ``shards - 1``) that scores ``entity``."""
    if shards < 1:
        raise ValueError(f"a day has at least one shard, got {shards}")
    return stable_hash(entity) % shards


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: what one scoring task of a sharded day scores."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"no shard {self.index} of {self.count}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/N"`` (as the CLI's ``--shard`` takes it): shard K of N, counted from 0."""
        found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not found:
            raise ValueError(f"a shard is K/N, e.g. 0/4, not {text!r}")
        return cls(int(found[1]), int(found[2]))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def entities(self, entities: Sequence[str] | np.ndarray) -> np.ndarray:
        """Those of ``entities`` this shard scores, in their order."""
        if self.count == 1:
            return np.asarray(entities, dtype=object)
        mine = [entity for entity in entities if shard_of(str(entity), self.count) == self.index]
        return np.array(mine, dtype=object)


def entity_rows(column: str, entities: Sequence[str] | np.ndarray) -> RowFilter:
    """Keep only the rows of a batch whose ``column`` names one of ``entities``.

    Entities are compared as text, as the canonical frame makes them. A column Arrow cannot
    render as the same text (floats: "1" against pandas' "1.0") is left whole, for the
    reader's caller to filter after conversion.
    """
    wanted = pa.array([str(entity) for entity in entities], pa.string())

    def keep(batch: pa.RecordBatch) -> pa.RecordBatch:
        if column not in batch.schema.names:
            return batch
        values = batch.column(column)
        kind = values.type
        if pa.types.is_dictionary(kind):
            values, kind = values.cast(kind.value_type), kind.value_type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            if not pa.types.is_integer(kind):
                return batch
            values = values.cast(pa.string())
        return batch.filter(pc.is_in(values, value_set=wanted.cast(values.type)))

    return keep
