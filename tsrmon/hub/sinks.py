"""What the hub expects of the rooms it feeds, and of a DAQ connection.

These are structural interfaces (``typing.Protocol``): a room implements the
methods, it does not inherit from anything here.  The hub calls them on the
reactor thread; a method must not block and must not raise for bad data (it
logs and counts instead).  ``t`` is always seconds since the epoch from the
injected clock (or the frame's own time for late samples).
"""

from typing import Protocol, Sequence


class DAQConnection(Protocol):
    """A connected DAQ as the hub sees it (implemented by ``ingest/``)."""

    peer_host: str

    def takeover(self, reason: str) -> None:
        """Close this connection because the same DAQ reconnected."""

    def storage_congested(self, congested: bool) -> None:
        """Storage fell behind (True) or caught up (False): pause reading."""


class StatsSink(Protocol):
    """``stats/``: folds samples into minute..year partial sums."""

    def add(self, machine: str, sensor: str, stype: str, values: Sequence[float], t: float) -> None:
        """Samples that arrived now (the hot path: keep it cheap)."""

    def add_late(self, machine: str, sensor: str, stype: str, values: Sequence[float], t: float) -> None:
        """Samples stamped ``t`` by the DAQ itself (buffered while offline)."""


class RawSink(Protocol):
    """``store/`` raw CSV: one row per sample."""

    def write(self, machine: str, sensor: str, values: Sequence[float], t: float) -> None:
        ...


class FaultSink(Protocol):
    """``store/``: every FaultDetect (and the anomaly table when score > threshold)."""

    def fault(self, machine: str, score: float, threshold: float, t: float) -> None:
        ...


class LiveSink(Protocol):
    """``live/``: Socket.IO fan-out (reached through ``hub/bus.py``'s ``LiveBus``,
    which statistics and alarm rules are given too)."""

    def machine_status(self, machine: "object") -> None:
        """A DAQ connected or disconnected (``machine`` is a hub ``Machine``)."""

    def anomaly(self, machine: str, score: float, threshold: float, t: float) -> None:
        """Every FaultDetect, over threshold or not (the deployed event)."""

    def second(self, machine: str, sensor: str, stype: str, t: float, sums: "object") -> None:
        """The partial sums of one second of one sensor (``t`` = second start)."""

    def broadcast(self, machine: str, event: str, payload: "object") -> None:
        """A live event of ``machine`` to every client of its namespace (alarm rules)."""


class NotifySink(Protocol):
    """``notify/``: push and webhooks for faults over threshold."""

    def fault(self, machine: str, score: float, threshold: float, t: float) -> None:
        ...
