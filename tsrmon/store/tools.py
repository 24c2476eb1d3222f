"""Offline storage tools for the CLI: ``rebuild-stats`` and ``backup``.

Both are synchronous (the CLI runs them without a reactor).
"""

import datetime
import gzip
import os
import re
import shutil
import sqlite3

import numpy as np
from twisted.logger import Logger

from tsrmon.lock import lock_owner
from tsrmon.names import name_problem, quote_identifier
from tsrmon.stats.calendar import Calendar
from tsrmon.analytics.moments import Moments, choose_reference
from tsrmon.stats.sums import PartialSums
from tsrmon.store import migrate, schema, spool
from tsrmon.store.sqlite_upsert import SensorCatalog, apply_sum_rows

log = Logger()

_CSV_NAME = re.compile(r"^(\d{8})_(.+)\.csv(\.gz)?$")
# The levels a date's raw CSV decides wholly; months and years are then
# recomputed from the counted day rows.
_REBUILT_LEVELS = ("minute", "hour", "day")


class ToolError(Exception):
    """A refusal or a problem, worded for the operator (one line)."""


def _as_date(value, what):
    if isinstance(value, datetime.date):
        return value
    try:
        return datetime.date.fromisoformat(str(value))
    except ValueError:
        raise ToolError(f"{what}: expected a date YYYY-MM-DD, got {value!r}") from None


def _refuse_if_locked(config):
    for key in ("DATA.PATH", "DATABASE.PATH"):
        folder = config.key(key)
        owner = lock_owner(folder)
        if owner is not None:
            raise ToolError(f"a tsrmon daemon (PID {owner}) holds the lock of {folder}; "
                            f"stop it before rebuilding statistics")


def raw_files(config, machine, date_from, date_to):
    """``[(date, sensor, path)]`` of raw CSV files in the range, sorted."""
    folder = os.path.join(config["DATA"]["PATH"], machine)
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
        got = minutes.get(m0)
        if got is None:
            minutes[m0] = part
        else:
            got.merge(part)
    return minutes, bad


def _text_range(day):
    nxt = day + datetime.timedelta(days=1)
    return f"{day.isoformat()} 00:00:00", f"{nxt.isoformat()} 00:00:00"


def _recompute_parent(conn, calendar, sensor, level, below, t_start, t_end, t0, offset, text, mode):
    """Replace the counted ``level`` row starting at ``t0`` by the merge of the
    counted ``below`` rows inside it (legacy rows are left alone)."""
    src = quote_identifier(schema.stat_table(sensor, below))
    dst = quote_identifier(schema.stat_table(sensor, level))
    # Rows below share the sensor's one stored reference (the writer shifts
    # every row to it), so their moment sums add up directly.
    n, s, sa, lo, hi, sq, mc, s1, s2, s3, s4 = conn.execute(
        f'SELECT SUM("count"), SUM("sum"), SUM("sum_abs"), MIN("min"), MAX("max"), SUM("sum_sq"), '
        f'SUM(mcount), SUM(s1), SUM(s2), SUM(s3), SUM(s4) '
        f'FROM {src} WHERE "count" > 0 AND t0 >= ? AND t0 < ? ', (t_start, t_end)).fetchone()
    conn.execute(f"DELETE FROM {dst} WHERE t0 = ?", (t0,))
    if n:
        data = (sa if mode == "ABS" else s) / n
        conn.execute(f'INSERT INTO {dst} (time, data, t0, utc_offset, "count", "sum", "sum_abs", '
                     f'"min", "max", "sum_sq", mcount, s1, s2, s3, s4) '
                     f'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                     (text, data, t0, offset, n, s, sa, lo, hi, sq, mc or 0,
                      s1 or 0.0, s2 or 0.0, s3 or 0.0, s4 or 0.0))


def _refuse_if_spooled(config):
    """Rows spooled at the last stop are replayed by the next start; a rebuild
    before that replay would count them twice (once from raw CSV, once from
    the spool), so the daemon must start once first."""
    pending = spool.spool_files(spool.spool_dir(config["DATABASE"]["PATH"]))
    if pending:
        raise ToolError(f"{len(pending)} spool file(s) in {os.path.dirname(pending[0])} are not "
                        f"replayed yet: start the daemon once (it replays them), stop it, then rebuild")


def rebuild_stats(config, machine, date_from, date_to, progress=None):
    """Recompute a machine's aggregates of local dates ``date_from..date_to``
    (inclusive) from its raw CSV files, replacing them; see docs/storage.md.

    Returns a summary dict.  Raises :class:`ToolError` (with a one-line
    reason) when a daemon holds the lock or the arguments are wrong.
    """
    problem = name_problem(machine)
    if problem is not None:
        raise ToolError(f"bad machine name {machine!r}: {problem}")
    date_from = _as_date(date_from, "--from")
    date_to = _as_date(date_to, "--to")
    if date_to < date_from:
        raise ToolError(f"--to {date_to} is before --from {date_from}")
    _refuse_if_locked(config)
    _refuse_if_spooled(config)
    files = raw_files(config, machine, date_from, date_to)
    if not files:
        raise ToolError(f"no raw CSV files for {machine} between {date_from} and {date_to} "
                        f"in {os.path.join(config['DATA']['PATH'], machine)}")
    total = sum(os.path.getsize(p) for _, _, p in files)
    done = 0
    calendar = Calendar(config["TIME"]["ZONE"])
    os.makedirs(config["DATABASE"]["PATH"], exist_ok=True)
    path = os.path.join(config["DATABASE"]["PATH"], f"{machine}.db")
    try:
        conn = migrate.open_database(path, log=log)
    except migrate.DatabaseBroken as e:
        raise ToolError(str(e)) from None
    summary = {"machine": machine, "files": len(files), "samples": 0, "bad_lines": 0,
               "sensors": [], "days": 0}
    try:
        catalog = SensorCatalog()
        catalog.load(conn)
        touched = {}  # sensor -> set of (year, month)
        days = set()  # local dates rebuilt (several sensors share a day)
        if progress is not None:
            progress(0, total)
        for day, sensor, file_path in files:
            minutes, bad = parse_raw_csv(file_path, calendar, day, catalog.refs.get(sensor))
            summary["bad_lines"] += bad
            conn.execute("BEGIN IMMEDIATE")
            try:
                if sensor not in catalog.modes:
                    mode, _ = config.stat_mode("DEFAULT")
                    catalog.ensure(conn, sensor, None, mode, None)
                mode = catalog.mode(conn, sensor)
                lo_text, hi_text = _text_range(day)
                for level in _REBUILT_LEVELS:
                    conn.execute(f"DELETE FROM {quote_identifier(schema.stat_table(sensor, level))} "
                                 f"WHERE time >= ? AND time < ?", (lo_text, hi_text))
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
                apply_sum_rows(conn, catalog, rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            touched.setdefault(sensor, set()).add((day.year, day.month))
            days.add(day)
            summary["days"] = len(days)
            done += os.path.getsize(file_path)
            if progress is not None:
                progress(done, total)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sensor, months in touched.items():
                mode = catalog.mode(conn, sensor)
                for year, month in sorted(months):
                    t_start, t_end = calendar.month_range(year, month)
                    b = calendar.levels_of_minute(calendar.minute_start(t_start))[3]
                    _recompute_parent(conn, calendar, sensor, "month", "day", t_start, t_end,
                                      b[1], b[2], b[3], mode)
                for year in sorted({y for y, _ in months}):
                    t_start, t_end = calendar.year_range(year)
                    b = calendar.levels_of_minute(calendar.minute_start(t_start))[4]
                    _recompute_parent(conn, calendar, sensor, "year", "month", t_start, t_end,
                                      b[1], b[2], b[3], mode)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        summary["sensors"] = sorted(touched)
    except sqlite3.DatabaseError as e:
        raise ToolError(f"{path}: {e}") from None
    finally:
        conn.close()
    return summary


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _is_sqlite(path):
    try:
        with open(path, "rb") as f:
            return f.read(16) == _SQLITE_MAGIC
    except OSError:
        return False


def database_files(folder):
    """Every SQLite database directly in ``folder``, sorted: the machine
    databases (``<machine>.db``) and the daemon's side files
    (``.alarms.sqlite``, ``.notifications.sqlite``, and any added later),
    found by their SQLite header rather than by name."""
    out = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(("-wal", "-shm", "-journal", ".part")):
            continue
        path = os.path.join(folder, name)
        if os.path.isfile(path) and _is_sqlite(path):
            out.append(name)
    return out


def backup(config, dest):
    """Online, consistent copies of every SQLite database in
    ``DATABASE.PATH`` (machine databases and side files) into folder
    ``dest`` (SQLite backup API: safe while the daemon writes).  Returns the
    list of files written.  A missing source folder or an unusable
    destination is a :class:`ToolError` with a one-line reason."""
    src_folder = os.path.abspath(config["DATABASE"]["PATH"])
    dest = os.path.abspath(dest)
    if dest == src_folder:
        raise ToolError(f"backup destination {dest} is the database folder itself")
    try:
        names = database_files(src_folder)
    except FileNotFoundError:
        raise ToolError(f"no database folder at {src_folder}") from None
    except OSError as e:
        raise ToolError(f"cannot read the database folder {src_folder}: {e.strerror or e}") from None
    try:
        os.makedirs(dest, exist_ok=True)
        if not os.access(dest, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        raise ToolError(f"backup destination {dest} is unusable: {e.strerror or e}") from None
    written = []
    for name in names:
        src_path = os.path.join(src_folder, name)
        dest_path = os.path.join(dest, name)
        try:
            src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True)
        except sqlite3.Error as e:
            raise ToolError(f"{src_path}: cannot open for backup ({e})") from None
        try:
            written.append(migrate.backup_copy(src, dest_path))
        except OSError as e:
            raise ToolError(f"backup destination {dest} is unusable: {e.strerror or e}") from None
        except sqlite3.Error as e:
            # The copy is made into dest_path.part: an error opening that is the
            # destination's fault, anything else the source's.
            if not os.access(dest, os.W_OK):
                raise ToolError(f"backup destination {dest} is unusable: {e}") from None
            raise ToolError(f"{src_path}: backup failed ({e})") from None
        finally:
            src.close()
    # Rows spooled at the last stop are part of the store until replayed.
    pending = spool.spool_files(spool.spool_dir(src_folder))
    if pending:
        spool_dest = spool.spool_dir(dest)
        try:
            os.makedirs(spool_dest, exist_ok=True)
            for path in pending:
                written.append(shutil.copy2(path, os.path.join(spool_dest, os.path.basename(path))))
        except OSError as e:
            raise ToolError(f"backup destination {dest} is unusable: {e.strerror or e}") from None
    return written
