"""The spool: rows the store could not commit by shutdown, kept for the next start.

A spool file is ``DATABASE.PATH/spool/<UTC stamp>-<pid>-<n>.jsonl``: JSON
lines, UTF-8, no machine name in the file name (a name that cannot become a
file name is one reason rows end up here).  The first line is a header,
every other line one record::

    {"tsrmon_spool": 1, "written": "2026-12-07T01:50:00Z", "records": 3}
    {"kind": "sensor", "machine": "M", "sensor": "vib", "type": "VIB", "mode": "ABS", "first_seen": 1.7e9}
    {"kind": "sums", "machine": "M", "sensor": "vib", "level": "hour", "t0": 1796025600,
     "utc_offset": 32400, "time": "2026-12-01 10:00:00", "count": 30, "sum": 1.5,
     "sum_abs": 9.0, "min": -1.0, "max": 2.0, "sum_sq": 4.25}
    {"kind": "fault", "machine": "M", "time": "2026-12-01 10:00:01", "t": 1796025601.0,
     "score": 0.9, "threshold": 0.5}

Since issue 17 (same header version: readers skip unknown keys) a ``sums`` record may also carry the moment columns
``mcount, ref, s1, s2, s3, s4`` (added like the others, about ``ref``), and
spectra rows are records too::

    {"kind": "spectrum", "machine": "M", "sensor": "vib", "table": "spectrum_minute",
     "t0": 1796025600, "utc_offset": 32400, "time": "2026-12-01 10:00:00", "blocks": 92,
     "rate": 25600.0, "f0": 6.25, "df": 6.25, "lines": "<base64 of float32 LE>"}
    {"kind": "features", "machine": "M", "sensor": "vib", "t0": ..., "utc_offset": ...,
     "time": ..., "blocks": 92, "velocity_rms": 22.07, "json": "{...}"}

Older files (no moment keys, no spectra) are read the same way.

A ``sums`` record is a delta, the same additive upsert as a live flush
(count, sum, sum_abs, sum_sq added; min/max widened; ``data`` recomputed),
so any backend can replay it with its normal upsert and the result equals
writing the rows directly.  ``sensor`` records come first.  Floats are
written with ``repr`` precision (exact round trip); a sum that overflowed is
``Infinity`` (Python's json extension, read back as such).

Files are written to ``*.jsonl.part``, fsynced and renamed, so a ``.jsonl``
file is always complete; a ``.part`` left by a crash mid-write is replayed
too (its complete lines).
"""

import base64
import binascii
import datetime
import json
import os

from tsrmon.store import schema

SPOOL_DIR = "spool"
FORMAT_VERSION = 1  # issue 17 only added keys and kinds (below): still 1
SUFFIX = ".jsonl"
PART = ".part"

_SUM_KEYS = ("sensor", "level", "t0", "utc_offset", "time") + schema.SUM_COLUMNS
_MOMENT_KEYS = ("mcount", "ref", "s1", "s2", "s3", "s4")


class SpoolError(ValueError):
    """A line that is not a spool record."""


def spool_dir(db_folder):
    return os.path.join(db_folder, SPOOL_DIR)


# -- operations <-> records ------------------------------------------------------
# Store operations (``sqlite.MachineDatabase.queue``):
#   ("sums", [sum row, ...])  ("sensor", sensor, stype, mode, t)
#   ("fault", time text, t, score, threshold)  ("prune", before)  (not spooled)

def records_of(machine, ops):
    """Spool records (dicts) of one machine's queued operations; sensors first."""
    sensors, others = [], []
    for op in ops:
        kind = op[0]
        if kind == "sensor":
            _, sensor, stype, mode, t = op
            sensors.append({"kind": "sensor", "machine": machine, "sensor": sensor,
                            "type": stype, "mode": mode, "first_seen": t})
        elif kind == "sums":
            for r in op[1]:
                rec = {"kind": "sums", "machine": machine}
                rec.update(zip(_SUM_KEYS, r))
                if len(r) >= 17 and r[11]:
                    rec.update(zip(_MOMENT_KEYS, r[11:17]))
                others.append(rec)
        elif kind == "spectrum":
            _, sensor, table, t0, off, text, blocks, rate, f0, df, blob = op
            others.append({"kind": "spectrum", "machine": machine, "sensor": sensor,
                           "table": table, "t0": t0, "utc_offset": off, "time": text,
                           "blocks": blocks, "rate": rate, "f0": f0, "df": df,
                           "lines": base64.b64encode(blob).decode("ascii")})
        elif kind == "features":
            _, sensor, t0, off, text, blocks, vrms, doc = op
            others.append({"kind": "features", "machine": machine, "sensor": sensor,
                           "t0": t0, "utc_offset": off, "time": text, "blocks": blocks,
                           "velocity_rms": vrms, "json": doc})
        elif kind == "fault":
            _, text, t, score, threshold = op
            others.append({"kind": "fault", "machine": machine, "time": text, "t": t,
                           "score": score, "threshold": threshold})
    return sensors + others


def _num(rec, key, kind=float):
    v = rec[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SpoolError(f"{key} is not a number")
    return kind(v)


def op_of(rec):
    """``(machine, operation, rows)`` of one record; SpoolError if malformed."""
    try:
        kind = rec["kind"]
        machine = rec["machine"]
        if not isinstance(machine, str):
            raise SpoolError("machine is not a string")
        if kind == "sums":
            if rec["level"] not in schema.LEVELS or not isinstance(rec["sensor"], str) \
                    or not isinstance(rec["time"], str):
                raise SpoolError("bad sensor, level or time")
            row = (rec["sensor"], rec["level"], _num(rec, "t0", int), _num(rec, "utc_offset", int),
                   rec["time"], _num(rec, "count", int), _num(rec, "sum"), _num(rec, "sum_abs"),
                   _num(rec, "min"), _num(rec, "max"), _num(rec, "sum_sq"))
            if "mcount" in rec:
                row += (_num(rec, "mcount", int), _num(rec, "ref"), _num(rec, "s1"),
                        _num(rec, "s2"), _num(rec, "s3"), _num(rec, "s4"))
            return machine, ("sums", [row]), 1
        if kind == "spectrum":
            if rec["table"] not in schema.SPECTRUM_KINDS or not isinstance(rec["sensor"], str) \
                    or not isinstance(rec["time"], str):
                raise SpoolError("bad sensor, table or time")
            try:
                blob = base64.b64decode(rec["lines"], validate=True)
            except (binascii.Error, ValueError, TypeError):
                raise SpoolError("lines is not base64") from None
            if len(blob) % 4:
                raise SpoolError("lines is not float32")
            return machine, ("spectrum", rec["sensor"], rec["table"], _num(rec, "t0", int),
                             _num(rec, "utc_offset", int), rec["time"], _num(rec, "blocks", int),
                             _num(rec, "rate"), _num(rec, "f0"), _num(rec, "df"), blob), 1
        if kind == "features":
            if not isinstance(rec["sensor"], str) or not isinstance(rec["time"], str) \
                    or not isinstance(rec["json"], str):
                raise SpoolError("bad sensor, time or json")
            v = rec["velocity_rms"]
            return machine, ("features", rec["sensor"], _num(rec, "t0", int),
                             _num(rec, "utc_offset", int), rec["time"], _num(rec, "blocks", int),
                             None if v is None else _num(rec, "velocity_rms"), rec["json"]), 1
        if kind == "sensor":
            if not isinstance(rec["sensor"], str) or rec["mode"] not in ("ABS", "REAL"):
                raise SpoolError("bad sensor or mode")
            return machine, ("sensor", rec["sensor"], rec.get("type"), rec["mode"],
                             rec.get("first_seen")), 1
        if kind == "fault":
            return machine, ("fault", str(rec["time"]), _num(rec, "t"), _num(rec, "score"),
                             _num(rec, "threshold")), 1
    except (KeyError, TypeError) as e:
        raise SpoolError(f"missing or bad field: {e}") from None
    raise SpoolError(f"unknown kind {kind!r}")


# -- files -------------------------------------------------------------------------

def write_records(folder, records, now, name=None):
    """Write a spool file atomically; returns its path.  Raises OSError."""
    os.makedirs(folder, exist_ok=True)
    if name is None:
        stamp = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        n = 0
        while True:
            name = f"{stamp}-{os.getpid()}-{n}{SUFFIX}"
            if not os.path.exists(os.path.join(folder, name)):
                break
            n += 1
    path = os.path.join(folder, name)
    part = path + PART
    header = {"tsrmon_spool": FORMAT_VERSION,
              "written": datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
              .strftime("%Y-%m-%dT%H:%M:%SZ"),
              "records": len(records)}
    with open(part, "w", encoding="utf-8") as f:
        f.write(json.dumps(header) + "\n")
        for rec in records:
            f.write(_line(rec))
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, path)
    _fsync_dir(folder)
    return path


def _line(rec):
    # Sums of huge samples can overflow (sum_sq = inf): written as Infinity /
    # NaN, which Python's json reads back, rather than losing the file.
    line = json.dumps(rec, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escape it, still exact
        line = json.dumps(rec)
    return line + "\n"


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def spool_files(folder):
    """Spool files to replay, oldest first (``.jsonl`` and leftover ``.jsonl.part``)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    out = [n for n in names if n.endswith(SUFFIX) or n.endswith(SUFFIX + PART)]
    return [os.path.join(folder, n) for n in sorted(out)]


def read_file(path):
    """``(records, bad_lines)``: the records of a spool file and how many lines
    were not records (a header is neither).  Raises OSError."""
    records, bad = [], 0
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        bad += 1  # a line cut short by a crash while writing a .part
        lines.pop()
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if not isinstance(rec, dict):
            bad += 1
        elif "tsrmon_spool" in rec:
            continue
        else:
            records.append(rec)
    return records, bad


def remove(path):
    os.remove(path)
    _fsync_dir(os.path.dirname(path))
