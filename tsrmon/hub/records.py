"""The named records that cross a room boundary at the hub.

Inside the hot path the samples stay arrays or lists of floats; what names
them on the way between rooms is one of these (``typing.NamedTuple``: a
tuple's cost, fields by name).
"""

from typing import Any, NamedTuple, Optional, Sequence


class SensorSamples(NamedTuple):
    """One sensor's samples of a frame, as ingest hands them to ``hub.data``
    (``values``: a list of floats, or a float64 array for long chunks)."""

    sensor: str
    stype: str
    values: Sequence[float]


class DataFrame(NamedTuple):
    """A decoded DataUpdate: the sensors kept, the sensors refused as
    ``(sensor, why)``, how many non-finite samples were dropped, the frame's
    own time (None: now) and the DAQ's sensor metadata (JSON frames).

    ``frames`` > 1: a run of that many frames of one shape that arrived
    together, each sensor's samples of all of them in one float64 array,
    frame after frame (``ingest/fastpath.py``, ``DataPlan.decode_run``)."""

    sensors: Sequence[SensorSamples]
    bad: Sequence[tuple]
    nonfinite: int
    t: Optional[float]
    meta: Optional[dict]
    frames: int = 1


class FaultFrame(NamedTuple):
    """A decoded FaultDetect (score and threshold are floats already)."""

    score: float
    threshold: float
    t: Optional[float]


class NameFrame(NamedTuple):
    """A decoded name frame (``token``: JSON frames only)."""

    name: Any
    token: Optional[str]
