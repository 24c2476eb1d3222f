"""The store contract: what the aggregate store, its change feed, its reader
and the side tables promise their callers (``docs/storage.md``, "Contract").

SQLite implements every interface today (``store/sqlite*.py``,
``tsrmon/reader/``, ``store/sidecar.py``); a PostgreSQL backend (one set of
tables for all machines, machine and sensor as columns, ``INSERT … ON
CONFLICT … DO UPDATE SET count = t.count + excluded.count …``) is a new
module implementing the same interfaces.  Backend-neutral logic (bucket
keys and calendar: ``stats/``; the merge of partial sums and the queue:
``store/deltas.py``; serving rules' figures: ``reader/series.py``; the
spool format: ``store/spool.py``; changes: ``store/feed.py``) stays outside
the backend files.  Tests check the SQLite implementations with
``zope.interface.verify.verifyObject``.

Threads: writes and feed subscriptions are called on the reactor thread;
reads return Deferreds and run on the reader's own threads.
"""

from zope.interface import Attribute, Interface


class IAggregateStore(Interface):
    """The statistics' store (``stats/sinks.py`` ``AggregateStore``).

    **An upsert adds a delta.**  A sum row ``(sensor, level, t0, utc_offset,
    time, count, sum, sum_abs, min, max, sum_sq[, mcount, ref, s1, s2, s3,
    s4])`` is a mergeable partial sum of the samples of the bucket of
    ``sensor``/``level`` starting at ``t0``: the store creates the bucket or
    ADDS to it (``count, sum, sum_abs, sum_sq, mcount, s1..s4`` added,
    ``min``/``max`` widened, ``data`` recomputed in the sensor's mode),
    with the moment sums shifted to the sensor's one stored reference.  So
    restarts, late samples, rollovers and the spool replay share one path
    and writing two deltas equals writing their merge
    (``deltas.merge_rows``).  Calls only queue; :meth:`flush` commits.
    """

    feed = Attribute("The IChangeFeed a Change is published to after each commit.")

    def ensure_sensor(machine, sensor, stype, mode):
        """The sensor exists with this type and mode (ABS|REAL); idempotent."""

    def upsert_sums(machine, rows):
        """Queue sum-row deltas of ``machine`` (added at the next commit)."""

    def reference(machine, sensor):
        """The sensor's stored moment reference c, or None before it is known."""

    def record_fault(machine, score, threshold, t):
        """One FaultDetect: a ``fault_detect`` row; an ``anomaly`` row too
        when ``score > threshold`` strictly."""

    def flush():
        """Commit everything queued; a Deferred that never errbacks."""

    def known_machines():
        """Machines that have stored data (the hub remembers them)."""

    def known_sensors(machine):
        """The sensor names stored for ``machine`` (read at start-up)."""

    def healthy():
        """False when a machine's storage is broken."""


class ISpectraStore(Interface):
    """Spectra and features rows (issue 17), queued like the sums."""

    def upsert_spectrum(machine, sensor, kind, t0, utc_offset, text, blocks, rate, f0, df, blob):
        """A spectrum row; a row of the same ``t0`` merges (power average by blocks)."""

    def upsert_features(machine, sensor, t0, utc_offset, text, blocks, velocity_rms, doc):
        """A minute's features; replaces a row of no more blocks."""

    def prune_spectra(minute_before, hour_before):
        """Drop spectra rows older than these bucket starts."""


class ISpool(Interface):
    """Rows that could not be committed at stop are kept, replayed at start.

    The file format is backend-neutral (``store/spool.py``, version 1): its
    records map one-to-one onto :class:`IAggregateStore` and
    :class:`ISpectraStore` calls, so any backend replays any spool.
    """

    def spool_queued():
        """Write every still-queued row to one spool file (at stop); logged with counts."""

    def replay_spool():
        """Replay every spool file, one transaction per machine and file,
        ahead of anything queued later; a Deferred firing when done."""


class IChangeFeed(Interface):
    """The one source of cache invalidation: a ``store.feed.Change`` per commit.

    In process (``feed.LocalChangeFeed``) the writer publishes after each
    commit; a shared PostgreSQL store would publish through LISTEN/NOTIFY;
    ``filefeed.FileChangeFeed`` notices writers that publish nothing
    (``Change.everything``).  Subscribers must be thread-safe and quick.
    """

    def subscribe(callback):
        """Call ``callback(change)`` for every change from now on."""

    def unsubscribe(callback):
        """Stop calling ``callback``."""

    def publish(change):
        """Tell every subscriber about ``change``."""

    def catch_up(machine):
        """Before a read of ``machine``: publish whatever changed that was
        not pushed (a polling feed looks now; a pushing feed does nothing).
        May run on a reader thread."""

    def close():
        """Release what the feed holds (connections, subscriptions)."""


class IStatsReader(Interface):
    """The reads of the REST API and the live layer (each a Deferred).

    Served by the rules of ``docs/storage.md``; a cache of served rows
    follows :attr:`feed` and nothing else."""

    feed = Attribute("The IChangeFeed this reader's cache follows.")

    def machines():
        """Valid machine names with stored data, sorted."""

    def stats(machine, level, start=None, end=None, align=True, then=None):
        """``[StatSeries]`` of ``hour|day|month|year`` in a local date range."""

    def minutes(machine, since_t, until_t=None, then=None):
        """``[StatSeries]`` of minute rows with ``since_t <= t0 < until_t``."""

    def recent_minutes(machine, since_t):
        """``[(sensor, stype, t0, PartialSums)]`` oldest first (live cache rebuild)."""

    def anomalies(machine, start=None, end=None):
        """``[(machine, time, score, threshold)]`` oldest first."""

    def all_anomalies(start=None, end=None):
        """Every machine's anomalies, newest first."""

    def faults(machine, start=None, end=None):
        """``[(time, t, score, threshold)]`` of ``fault_detect``, oldest first."""


class IAnalyticsReader(Interface):
    """Issue 17 reads: moments, spectra, features (each a Deferred)."""

    def moment_stats(machine, level, start=None, end=None, sensors=None):
        """``{sensor: [row]}`` of the counted rows with their moment figures."""

    def spectrum(machine, sensor, t=None, level="minute"):
        """The stored spectrum holding epoch ``t`` (newest if None), or None."""

    def waterfall(machine, sensor, start_t, end_t, rows=None, lines=None, level="minute"):
        """Stored spectra in a range, decimated to ``rows`` × ``lines``."""

    def features(machine, sensor, start_t=None, end_t=None, level="minute"):
        """Stored features (minute rows or hour summaries), ascending."""


class ISideTable(Interface):
    """A side table beside the machine data (alarms, notification attempts):
    its own versioned file today (``store/sidecar.py``), a table of the
    shared database tomorrow."""

    def open(now):
        """Open (and migrate) it; a Deferred."""

    def query(start_t, end_t, machine=None, limit=None):
        """A Deferred list of rows in ``[start_t, end_t]``, newest first."""

    def close():
        """Finish pending writes and close; a Deferred."""


class IAlarmTable(ISideTable):
    """Alarm history (``alarms/store.py``)."""

    def insert(alarm):
        """Store a new alarm."""

    def update(alarm, *columns):
        """Store these columns of an alarm."""

    def update_many(alarms, *columns):
        """Store these columns of several alarms in one transaction."""

    def machine_state(machine, ids=()):
        """Deferred[list of Alarm]: ``machine``'s active alarms and the rows
        of ``ids`` (alarms this node holds) whatever their state, so a
        cluster's new owner adopts them and drops the ones cleared meanwhile."""

    def update_active(alarms, *columns):
        """Like ``update_many``, but only over rows still active: a stopping
        node never writes its stale copy over an alarm another node cleared."""


class IAttemptTable(ISideTable):
    """Notification attempts (``notify/records.py``)."""

    def add(row):
        """Store one attempt."""


class IStoreTools(Interface):
    """Offline tools (``tsrmon rebuild-stats``, ``tsrmon backup``).  On SQLite
    they run while no daemon holds the instance lock (they refuse otherwise),
    so no change feed needs to hear of them.  On PostgreSQL, ``rebuild-stats``
    runs beside the other nodes and notifies the change feed
    (``store/postgres/rebuild.py``)."""

    def rebuild_stats(config, machine, date_from, date_to, progress=None, folders=None, now=None):
        """Rewrite the statistics of ``machine`` in a date range from raw CSV.
        ``folders``: ``[(node, DATA.PATH)]`` whose raw CSV to merge."""

    def backup(config, dest):
        """A consistent copy of every machine's data into ``dest``."""


class ToolError(Exception):
    """A tool's refusal or problem, worded for the operator (one line)."""
