"""Offline storage tools for the CLI: ``rebuild-stats`` and ``backup``.

Both are synchronous (the CLI runs them without a reactor).  This module is
the backend-neutral part (``contract.IStoreTools``): refusals, the raw CSV
and the bucket deltas; the configured backend's half (``store/backends.py``:
``sqlite_tools.py`` or PostgreSQL's) writes and copies.
``rebuild-stats`` refuses while a daemon holds the instance lock of a
folder it reads (on SQLite: so the daemon's reader never misses one of its
writes, docs/storage.md).  On a shared store (PostgreSQL) it reads the raw
CSV of every node that fed the machine (``--data NODE=PATH``), refuses a
day whose feeding node's folder is missing (the store's ``fed_day``) or
that is not over, while the other nodes keep running
(docs/scale-out.md, "Rebuilding statistics across nodes").
"""

import datetime
import gzip
import os
import re
import time
import zoneinfo

import numpy as np
from zope.interface import moduleProvides

from tsrmon.analytics.moments import Moments, choose_reference
from tsrmon.cluster.settings import node_name
from tsrmon.lock import lock_owner
from tsrmon.names import name_problem
from tsrmon.stats.calendar import Calendar
from tsrmon.stats.sums import PartialSums
from tsrmon.store import spool
from tsrmon.store.contract import IStoreTools, ToolError
from tsrmon.store import backends
from tsrmon.store.sqlite_tools import database_files

__all__ = ["ToolError", "backup", "database_files", "parse_raw_csv", "raw_files", "rebuild_stats"]

moduleProvides(IStoreTools)


def backup(config, dest):
    """``tsrmon backup DEST`` of the configured backend (``backends.backup``)."""
    return backends.backup(config, dest)

_CSV_NAME = re.compile(r"^(\d{8})_(.+)\.csv(\.gz)?$")
# The levels a date's raw CSV decides wholly; months and years are then
# recomputed from the counted day rows.
_REBUILT_LEVELS = ("minute", "hour", "day")




def _as_date(value, what):
    if isinstance(value, datetime.date):
        return value
    try:
        return datetime.date.fromisoformat(str(value))
    except ValueError:
        raise ToolError(f"{what}: expected a date YYYY-MM-DD, got {value!r}") from None


def _refuse_if_locked(folders):
    for folder in folders:
        owner = lock_owner(folder)
        if owner is not None:
            raise ToolError(f"a tsrmon daemon (PID {owner}) holds the lock of {folder}; "
                            f"stop it before rebuilding statistics")


def raw_files(config, machine, date_from, date_to, data_path=None):
    """``[(date, sensor, path)]`` of raw CSV files in the range, sorted, in
    ``data_path`` (a node's DATA.PATH; default: this node's)."""
    folder = os.path.join(data_path or config.data.path, machine)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found = {}
    for name in names:
        m = _CSV_NAME.match(name)
        if not m:
            continue
        try:
            day = datetime.datetime.strptime(m.group(1), "%Y%m%d").date()
        except ValueError:
            continue
        sensor = m.group(2)
        if not (date_from <= day <= date_to) or name_problem(sensor) is not None:
            continue
        # A day's file may exist plain and gzipped (compression interrupted):
        # the plain one is complete, prefer it.
        key = (day, sensor)
        if key not in found or not name.endswith(".gz"):
            found[key] = os.path.join(folder, name)
    return [(d, s, p) for (d, s), p in sorted(found.items())]


class _LocalTimes:
    """CSV time text -> epoch seconds, resolving the repeated fall-back hour
    by file order (a jump back in time selects the second occurrence)."""

    def __init__(self, calendar, day):
        self.tz = calendar.tz
        self.day = day
        self.last = None

    def __call__(self, text):
        if len(text) == 8:  # HH:MM:SS (deployed)
            naive = datetime.datetime.combine(self.day, datetime.time.fromisoformat(text))
        else:
            parsed = datetime.datetime.fromisoformat(text)
            if parsed.tzinfo is not None:
                t = parsed.timestamp()
                self.last = t
                return t
            naive = parsed
        t = naive.replace(tzinfo=self.tz, fold=0).timestamp()
        if self.last is not None and t < self.last - 1:
            t1 = naive.replace(tzinfo=self.tz, fold=1).timestamp()
            if t1 != t:
                t = t1
        self.last = t
        return t


def _read_text(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace")


def _second_key(text):
    # iso times carry milliseconds; samples group by their second.
    if len(text) > 19 and text[10:11] in ("T", " "):
        return text[:19] + text[23:] if text[19:20] == "." else text
    return text


def parse_raw_csv(path, calendar, day, ref=None):
    """Minute sums of one raw CSV file: ``({minute t0: PartialSums}, bad_lines)``.

    The sums carry the higher moments about ``ref`` (the sensor's stored
    reference; None: chosen from this file's samples), as the statistics
    room's do, so rebuilt rows answer skewness and kurtosis too."""
    lines = _read_text(path).splitlines()
    if lines and lines[0].strip().lower().startswith("time"):
        lines = lines[1:]
    times, values, bad = [], [], 0
    for line in lines:
        i = line.find(",")
        if i <= 0:
            if line.strip():
                bad += 1
            continue
        times.append(_second_key(line[:i].strip()))
        values.append(line[i + 1:].strip())
    try:
        arr = np.array(values, dtype=np.float64)
    except ValueError:
        keep_t, keep_v = [], []
        for t, v in zip(times, values):
            try:
                keep_v.append(float(v))
                keep_t.append(t)
            except ValueError:
                bad += 1
        times, arr = keep_t, np.array(keep_v, dtype=np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        bad += int((~finite).sum())
        times = [t for t, ok in zip(times, finite) if ok]
        arr = arr[finite]
    minutes = {}
    if not len(arr):
        return minutes, bad
    # Group consecutive samples with the same second.
    starts = [0] + [i for i in range(1, len(times)) if times[i] != times[i - 1]]
    idx = np.array(starts)
    counts = np.diff(np.append(idx, len(arr)))
    s = np.add.reduceat(arr, idx)
    sa = np.add.reduceat(np.abs(arr), idx)
    sq = np.add.reduceat(arr * arr, idx)
    lo = np.minimum.reduceat(arr, idx)
    hi = np.maximum.reduceat(arr, idx)
    if ref is None:
        ref = choose_reference(arr)
    d = arr - ref
    d2 = d * d
    p1 = np.add.reduceat(d, idx)
    p2 = np.add.reduceat(d2, idx)
    p3 = np.add.reduceat(d2 * d, idx)
    p4 = np.add.reduceat(d2 * d2, idx)
    to_epoch = _LocalTimes(calendar, day)
    for k, start in enumerate(starts):
        try:
            t = to_epoch(times[start])
        except ValueError:
            bad += int(counts[k])
            continue
        m0 = calendar.minute_start(t)
        n = int(counts[k])
        part = PartialSums(n, float(s[k]), float(sa[k]), float(lo[k]), float(hi[k]), float(sq[k]),
                           Moments(n, ref, p1[k], p2[k], p3[k], p4[k], lo[k], hi[k]))
        _merge_minute(minutes, m0, part)
    return minutes, bad


def _merge_minute(minutes, m0, part):
    have = minutes.get(m0)
    if have is None:
        minutes[m0] = part
    else:
        have.merge(part)


def _text_range(day):
    nxt = day + datetime.timedelta(days=1)
    return f"{day.isoformat()} 00:00:00", f"{nxt.isoformat()} 00:00:00"


def _refuse_if_spooled(config):
    """Rows spooled at the last stop are replayed by the next start; a rebuild
    before that replay would count them twice (once from raw CSV, once from
    the spool), so the daemon must start once first."""
    pending = spool.spool_files(spool.spool_dir(config.database.path))
    if pending:
        raise ToolError(f"{len(pending)} spool file(s) in {os.path.dirname(pending[0])} are not "
                        f"replayed yet: start the daemon once (it replays them), stop it, then rebuild")


# A day of a shared store is rebuilt only once it ended this long ago: until
# then a running node may still add rows of it (its queue until the next
# flush, the raw log's buffers, a short loss of PostgreSQL).
SETTLE_SECONDS = 3600


def data_folders(config, given=None):
    """``{node: absolute DATA.PATH}`` of ``given`` (``[(node, path)]``), or
    this node's own folder under its name as fed_day has it (CLUSTER.NODE,
    default the host name); names and folders each once."""
    if not given:
        return {config.cluster.node: os.path.abspath(config.data.path)}
    out, seen = {}, {}
    for node, path in given:
        try:
            if not node_name(node):
                raise ValueError(f"{node!r} is not a node name")
        except ValueError as e:
            raise ToolError(f"--data {node}={path}: {e}") from None
        if node in out:
            raise ToolError(f"--data names node {node} twice")
        real = os.path.realpath(path)
        if real in seen:
            raise ToolError(f"--data gives {path} for both {seen[real]} and {node}: its files "
                            f"would count twice")
        if not os.path.isdir(path):
            raise ToolError(f"--data {node}={path}: no such folder")
        seen[real] = node
        out[node] = os.path.abspath(path)
    return out


def _refuse_unfinished(config, date_to, now):
    tz = zoneinfo.ZoneInfo(config.time.zone)
    end = datetime.datetime.combine(date_to + datetime.timedelta(days=1), datetime.time(),
                                    tzinfo=tz).timestamp()
    if now < end + SETTLE_SECONDS:
        after = datetime.datetime.fromtimestamp(end + SETTLE_SECONDS, tz)
        raise ToolError(f"--to {date_to}: that day is not over, or ended less than an hour ago "
                        f"({config.time.zone}); running nodes may still add rows of it: rebuild it "
                        f"after {after:%Y-%m-%d %H:%M}")


def _days_text(days):
    days = sorted(days)
    return ", ".join(days) if len(days) <= 4 else f"{days[0]} .. {days[-1]} ({len(days)} days)"


def _check_fed(machine, fed, folders, found, date_from, date_to):
    """Refuse (one line) when a node the store records as feeding a day in
    the range has no folder given, or gave none of that day's files while
    other nodes' files would replace the day; returns the days rebuilt
    that the store records no node for."""
    if fed is None:
        return []
    rebuilt = {day.isoformat() for day, _ in found}
    has = {(node, day.isoformat()) for (day, _), files in found.items() for node, _ in files}
    missing, empty = {}, {}
    for day, nodes in fed.items():
        if not (date_from.isoformat() <= day <= date_to.isoformat()):
            continue
        for node in nodes:
            if node not in folders:
                missing.setdefault(node, []).append(day)
            elif day in rebuilt and (node, day) not in has:
                empty.setdefault(node, []).append(day)
    if missing:
        raise ToolError(f"refused: the store records {machine} fed by node(s) whose raw CSV folder is "
                        f"not given: " + "; ".join(f"{n} on {_days_text(d)}" for n, d in sorted(missing.items()))
                        + " (add --data NODE=PATH for each, or leave those days out)")
    if empty:
        raise ToolError(f"refused: " + "; ".join(f"{n} fed {machine} on {_days_text(d)} but "
                                                  f"{os.path.join(folders[n], machine)} holds no raw CSV of it"
                                                  for n, d in sorted(empty.items()))
                        + " (rebuilding from the other nodes' files would drop its samples)")
    return sorted(d for d in rebuilt if d not in fed)


def _parse_merged(files, calendar, day, ref):
    """Minute sums of one (day, sensor) over every node's file, merged (a
    machine moved between nodes mid-day has rows in both); one reference."""
    minutes, bad = {}, 0
    for _node, path in files:
        got, b = parse_raw_csv(path, calendar, day, ref)
        bad += b
        for m0, part in got.items():
            if ref is None and part.moments is not None:
                ref = part.moments.ref   # the first file's choice, for the others too
            _merge_minute(minutes, m0, part)
    return minutes, bad


def rebuild_stats(config, machine, date_from, date_to, progress=None, folders=None, now=None):
    """Recompute a machine's aggregates of local dates ``date_from..date_to``
    (inclusive) from its raw CSV files, replacing them; see docs/storage.md
    and docs/scale-out.md.  ``folders``: ``[(node, DATA.PATH)]`` of the
    nodes whose raw CSV to read (default: this node's own).

    Returns a summary dict.  Raises :class:`ToolError` (with a one-line
    reason) when a daemon holds the lock or the arguments are wrong.
    """
    backend = backends.rebuild_target(config)
    problem = name_problem(machine)
    if problem is not None:
        raise ToolError(f"bad machine name {machine!r}: {problem}")
    date_from = _as_date(date_from, "--from")
    date_to = _as_date(date_to, "--to")
    if date_to < date_from:
        raise ToolError(f"--to {date_to} is before --from {date_from}")
    local = os.path.abspath(config.data.path)
    given = list(folders or ())
    if not backend.shared and given and [os.path.realpath(p) for _, p in given] != [os.path.realpath(local)]:
        raise ToolError(f"--data: the SQLite store is fed by this node only; rebuild-stats reads its "
                        f"DATA.PATH ({local}), no other folder")
    nodes = data_folders(config, folders if backend.shared else None)
    _refuse_if_locked(list(nodes.values()) + ([] if backend.shared else [config.database.path]))
    _refuse_if_spooled(config)
    if backend.shared:
        _refuse_unfinished(config, date_to, time.time() if now is None else now)
    found = {}   # (day, sensor) -> [(node, path)]
    for node, path in sorted(nodes.items()):
        for day, sensor, file_path in raw_files(config, machine, date_from, date_to, path):
            found.setdefault((day, sensor), []).append((node, file_path))
    if not found:
        where = ", ".join(os.path.join(p, machine) for p in nodes.values())
        raise ToolError(f"no raw CSV files for {machine} between {date_from} and {date_to} in {where}")
    total = sum(os.path.getsize(p) for files in found.values() for _, p in files)
    done = 0
    calendar = Calendar(config.time.zone)
    target = backend.open(machine)
    summary = {"machine": machine}
    if backend.shared:
        summary["nodes"] = sorted(nodes)
    summary.update({"files": sum(len(f) for f in found.values()), "samples": 0, "bad_lines": 0,
                    "sensors": [], "days": 0})
    try:
        unrecorded = _check_fed(machine, target.fed_days(), nodes, found, date_from, date_to)
        touched = {}  # sensor -> set of (year, month)
        days = set()  # local dates rebuilt (several sensors share a day)
        if progress is not None:
            progress(0, total)
        default_mode, _ = config.stat_mode("DEFAULT")
        for (day, sensor), files in sorted(found.items()):
            minutes, bad = _parse_merged(files, calendar, day, target.reference(sensor))
            summary["bad_lines"] += bad
            merged = {}
            for m0 in sorted(minutes):
                sums = minutes[m0]
                for bucket in calendar.levels_of_minute(m0)[:3]:
                    k = (bucket[0], bucket[1])
                    got = merged.get(k)
                    if got is None:
                        merged[k] = (bucket, sums.copy())
                    else:
                        got[1].merge(sums)
                summary["samples"] += sums.count
            rows = [(sensor,) + tuple(b) + s.as_tuple() + s.moment_tuple()
                    for b, s in merged.values()]
            lo_text, hi_text = _text_range(day)
            target.replace_days(sensor, _REBUILT_LEVELS, lo_text, hi_text, rows, default_mode)
            touched.setdefault(sensor, set()).add((day.year, day.month))
            days.add(day)
            summary["days"] = len(days)
            done += sum(os.path.getsize(p) for _, p in files)
            if progress is not None:
                progress(done, total)
        jobs = []
        for sensor, months in sorted(touched.items()):
            for year, month in sorted(months):
                t_start, t_end = calendar.month_range(year, month)
                b = calendar.levels_of_minute(calendar.minute_start(t_start))[3]
                jobs.append((sensor, "month", "day", t_start, t_end, b[1], b[2], b[3]))
            for year in sorted({y for y, _ in months}):
                t_start, t_end = calendar.year_range(year)
                b = calendar.levels_of_minute(calendar.minute_start(t_start))[4]
                jobs.append((sensor, "year", "month", t_start, t_end, b[1], b[2], b[3]))
        target.recompute(jobs)
        summary["sensors"] = sorted(touched)
        if unrecorded:
            # No node is recorded for these days (rows from before the cluster,
            # or migrate-store): rebuilt from the files that were there.
            summary["unrecorded_days"] = unrecorded
    finally:
        target.close()
    return summary
