"""DataUpdates of a known shape decoded with ``struct``, without the pickle VM.

A frame that matches a cached :class:`~tsrmon.ingest.shapes.Shape` walks
exactly like the frame the shape came from; only the 8-byte BINFLOAT
arguments differ.  Which float argument ends up in which sensor's ``data``
list is fixed by the skeleton, not by the values (the pickle VM never
branches on a float inside a list).  :func:`plan_for` finds that mapping
once per shape by decoding a copy of the frame whose floats are replaced by
distinct markers (1.0, 2.0, ...); later frames of the shape are decoded by
unpacking the float runs straight from the buffer into the event the hub
takes.  Shapes the plan cannot describe exactly (a float reached through the
memo, non-string keys, anything but whole runs in order) get no plan and
stay on the ``pickle.loads`` path.
"""

import math
import pickle
import struct

import numpy as _np

from tsrmon.hub.records import DataFrame, SensorSamples
from tsrmon.ingest.schema import DATA, sensor_problem

_isfinite = math.isfinite
_structs = {}
_BIG_F8 = _np.dtype(">f8")
_NUMPY_FROM = 256  # samples per sensor from which numpy beats struct
_FLOAT_ONLY = {float}
# The records without NamedTuple's Python-level __new__ (one call less a sensor).
_new = tuple.__new__
_min, _max = _np.minimum.reduce, _np.maximum.reduce


def all_finite(a):
    """Whether every sample of the float64 array ``a`` is finite: min and max
    propagate NaN and show ±inf, and two reductions cost about half of
    ``isfinite(a).all()`` (which writes a temporary), with no warning to
    silence (a sum could overflow)."""
    return not a.size or (_isfinite(_min(a)) and _isfinite(_max(a)))


def _run_struct(count):
    """Unpacks ``count`` BINFLOAT opcodes (``G`` + 8 big-endian bytes each)."""
    st = _structs.get(count)
    if st is None:
        st = struct.Struct(">" + "xd" * count)
        if len(_structs) < 256:
            _structs[count] = st
    return st


class DataPlan:
    __slots__ = ("sensors", "bad")

    def __init__(self, sensors, bad):
        self.sensors = sensors  # [(sensor, type, [(offset, count, Struct)], total count)]
        self.bad = bad  # [(sensor, why)] dropped from every frame of the shape

    def decode(self, buf, s):
        """The :class:`DataFrame` of the frame at ``s`` (as schema.data_event)."""
        out = []
        nonfinite = 0
        for sensor, stype, runs, total in self.sensors:
            if total >= _NUMPY_FROM:
                # Long chunks: strided views over the float arguments, read
                # and byte-swapped into one native float64 array in one pass
                # (about 1.5x pickle.loads).  Handed on as that array:
                # statistics reduce it and raw CSV formats it without a
                # Python float per sample.
                a = _np.concatenate([_np.ndarray((count,), _BIG_F8, buf, s + offset + 1, (9,))
                                     for offset, count, _ in runs], dtype=_np.float64)
                if not all_finite(a):
                    a = a[_np.isfinite(a)]
                    nonfinite += total - len(a)
                out.append(_new(SensorSamples, (sensor, stype, a)))
                continue
            if len(runs) == 1:
                offset, _, st = runs[0]
                values = list(st.unpack_from(buf, s + offset))
            else:
                values = []
                for offset, _, st in runs:
                    values.extend(st.unpack_from(buf, s + offset))
            if not _isfinite(sum(values)):
                kept = [v for v in values if _isfinite(v)]
                nonfinite += len(values) - len(kept)
                values = kept
            out.append(_new(SensorSamples, (sensor, stype, values)))
        return _new(DataFrame, (out, self.bad, nonfinite, None, None, 1))

    def decode_run(self, buf, s, k, stride):
        """One :class:`DataFrame` for ``k`` frames of this shape at ``s``,
        ``s + stride``, ...: each sensor's samples of all of them as one
        float64 array (frame after frame), read through one strided view of
        the buffer; no Python float per sample and one event, not ``k``.
        None when a sensor is refused or a sample is not finite: those frames
        are decoded one by one (their counts are per frame)."""
        if self.bad:
            return None
        out = []
        for sensor, stype, runs, total in self.sensors:
            if not runs:
                a = _np.empty(0)
            elif len(runs) == 1:
                offset, count, _ = runs[0]
                a = _np.ndarray((k, count), _BIG_F8, buf, s + offset + 1, (stride, 9)).astype(_np.float64)
            else:
                # Frame after frame, each sensor's floats read and byte-swapped
                # into one native array in one pass.
                a = _np.concatenate([_np.ndarray((k, count), _BIG_F8, buf, s + offset + 1, (stride, 9))
                                     for offset, count, _ in runs], axis=1, dtype=_np.float64)
            a = a.reshape(-1)
            if not all_finite(a):
                return None
            out.append(_new(SensorSamples, (sensor, stype, a)))
        return _new(DataFrame, (out, self.bad, 0, None, None, k))


_MARKER = struct.Struct(">d")


def _skeleton_entries(value):
    """``([(sensor, type, data list)], [(sensor, why refused)])`` of a decoded
    skeleton frame ``("DataUpdate", {sensor: {"type", "data"}})``, or None
    when it is not of that shape (the frame then takes the slow path)."""
    if type(value) is not tuple or len(value) != 2 or value[0] != DATA or type(value[1]) is not dict:
        return None
    good, bad = [], []
    for sensor, entry in value[1].items():
        if type(sensor) is not str or type(entry) is not dict:
            return None
        if any(type(k) is not str for k in entry):
            return None
        stype = entry.get("type")
        data = entry.get("data")
        if type(data) is not list:
            return None
        problem = sensor_problem(sensor, stype)
        if problem is None:
            good.append((sensor, stype, data))
        else:
            bad.append((sensor, problem))
    return good, bad


def plan_from_skeleton(frame, runs, frames_at):
    """:func:`plan_for` for a frame whose float runs are each taken whole by
    one MARK opcode (``PickleWalk.whole``): the layout is learnt from a copy
    with one marker float per run and without FRAME opcodes, so learning it
    costs a small ``pickle.loads`` instead of one of the whole frame."""
    if not runs:
        return None
    cuts = [(offset, 9 * count, r) for r, (offset, count) in enumerate(runs)]
    cuts += [(offset, 9, None) for offset in frames_at]
    cuts.sort()
    parts = []
    at = 0
    for offset, size, r in cuts:
        parts.append(frame[at:offset])
        if r is not None:
            parts.append(b"G" + _MARKER.pack(float(r + 1)))
        at = offset + size
    parts.append(frame[at:])
    try:
        value = pickle.loads(b"".join(parts))
    except Exception:
        return None
    entries = _skeleton_entries(value)
    if entries is None:
        return None
    good, bad = entries
    nruns = len(runs)
    sensors = []
    for sensor, stype, data in good:
        plan_runs = []
        for v in data:
            # Every float is a marker: no FLOAT text opcode, no float outside a run.
            if type(v) is not float or not 1 <= v <= nruns or v != int(v):
                return None
            offset, count = runs[int(v) - 1]
            plan_runs.append((offset, count, _run_struct(count)))
        sensors.append((sensor, stype, plan_runs, sum(r[1] for r in plan_runs)))
    return DataPlan(sensors, bad)


def plan_for(frame, runs):
    """A :class:`DataPlan` for frames shaped like ``frame``, or None."""
    if not runs:
        return None
    synthetic = bytearray(frame)
    first_marker = []  # run number -> marker of its first float
    run_of = {}  # first marker -> run number
    marker = 0
    view = _np.frombuffer(synthetic, _np.uint8)
    try:
        for r, (offset, count) in enumerate(runs):
            first_marker.append(marker + 1)
            run_of[marker + 1] = r
            # The run's float arguments as a strided big-endian view, filled in C.
            args = _np.ndarray((count,), _BIG_F8, view, offset + 1, (9,))
            args[:] = _np.arange(marker + 1, marker + count + 1, dtype=_np.float64)
            marker += count
        del args
    finally:
        del view  # releases the export, so ``synthetic`` is a plain bytearray again
    try:
        # Same skeleton as a frame the walker accepted: plain data only.
        value = pickle.loads(synthetic)
    except Exception:
        return None
    entries = _skeleton_entries(value)
    if entries is None:
        return None
    good, bad = entries
    sensors = []
    for sensor, stype, data in good:
        plan_runs = []
        # Floats only (an int equal to a marker must not pass for it), then
        # the markers compared run by run in C.
        if data and set(map(type, data)) != _FLOAT_ONLY:
            return None
        values = _np.array(data, dtype=_np.float64)
        i = 0
        n = len(values)
        while i < n:
            v = float(values[i])
            r = run_of.get(v)
            if r is None:
                return None
            offset, count = runs[r]
            first = first_marker[r]
            if i + count > n or not _np.array_equal(values[i:i + count],
                                                    _np.arange(first, first + count, dtype=_np.float64)):
                return None
            plan_runs.append((offset, count, _run_struct(count)))
            i += count
        sensors.append((sensor, stype, plan_runs, sum(r[1] for r in plan_runs)))
    return DataPlan(sensors, bad)
