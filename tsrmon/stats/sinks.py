"""What statistics expect of an aggregate store (SQLite today, PostgreSQL
later) and of the rooms that take each finished second.

Structural interface: a store implements these methods; statistics never
import a store.  Every method is called on the reactor thread and must not
block: writes are queued and committed by :meth:`AggregateStore.flush`.

A *sum row* is the flat tuple ``(sensor, level, t0, utc_offset, time, count,
sum, sum_abs, min, max, sum_sq)``: a delta to ADD to the bucket of
``sensor``/``level`` that starts at ``t0`` (see ``stats/calendar.py``),
optionally followed by the moment columns ``(mcount, ref, s1, s2, s3, s4)``:
the power sums of (x − ref) of ``mcount`` samples (``analytics/moments.py``;
mcount 0 = none).  A store keeps one reference per sensor (the first it
gets) and shifts a row about another reference to it.  The
store creates the row or adds to it (count/sums added, min/max widened,
``data`` recomputed in the sensor's mode), so restarts, late samples and
rollovers share one path.
"""

from typing import Iterable, NamedTuple, Protocol


class SumRow(NamedTuple):
    """One sum row as statistics hand it to the store (issue 19: named
    between rooms).  A tuple still, so backends bind it as SQL parameters
    and tools that build plain 11- or 17-tuples (rebuild, spool replay,
    migration) are read the same way."""

    sensor: str
    level: str
    t0: int
    utc_offset: int
    time: str
    count: int
    sum: float
    sum_abs: float
    min: float
    max: float
    sum_sq: float
    mcount: int
    ref: float
    s1: float
    s2: float
    s3: float
    s4: float


class SecondSink(Protocol):
    """The sums of each finished second of each sensor (the live bus, alarm rules)."""

    def second(self, machine: str, sensor: str, stype: str, t: float, sums: "object") -> None:
        """``t`` = the second's start; ``sums`` a ``PartialSums`` (read only)."""


class AggregateStore(Protocol):
    def ensure_sensor(self, machine: str, sensor: str, stype: str, mode: str) -> None:
        """A sensor exists with this type and mode (ABS|REAL); idempotent."""

    def upsert_sums(self, machine: str, rows: Iterable[SumRow]) -> None:
        """Queue deltas for ``machine`` (committed at the next flush)."""

    def reference(self, machine: str, sensor: str) -> "float | None":
        """Optional: the sensor's stored moment reference, when already known."""

    def record_fault(self, machine: str, score: float, threshold: float, t: float) -> None:
        """Every FaultDetect; an ``anomaly`` row too when score > threshold."""

    def flush(self) -> "object":
        """Commit everything queued so far; a Deferred firing when it is durable
        (it never errbacks: failures are logged, counted and retried)."""

    def healthy(self) -> bool:
        ...

    def counters(self) -> dict:
        ...
