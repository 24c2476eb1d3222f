"""Anomaly and fault reads of the SQLite reader (``anomaly``, ``fault_detect``).

A mixin of :class:`~tsrmon.reader.sqlite_reader.SQLiteReader` (its
threads and connections).  Rows with a missing or non-finite score or
threshold are never served; deployed anomaly tables have no ``t`` column.
"""

import sqlite3

from tsrmon.reader.series import _finite
from tsrmon.store import schema


class ScoreReads:
    """The private halves of ``anomalies``, ``all_anomalies`` and ``faults``."""

    def _anomalies(self, machine, start, end):
        conn, path = self._connect(machine)
        if conn is None:
            return []
        return self._anomaly_rows(conn, machine, start, end)

    def _anomaly_rows(self, conn, machine, start, end):
        return [(machine, t, score, threshold)
                for t, _epoch, score, threshold in self._score_rows(conn, machine, schema.ANOMALY_TABLE,
                                                                    start, end)]

    def _score_rows(self, conn, machine, table, start, end):
        """``[(time, epoch or None, score, threshold)]`` of the anomaly or
        fault table in a local date range, oldest first; rows with a missing
        or non-finite score or threshold are never served."""
        if table not in self._tables(conn):
            return []
        cols = self._columns(conn, table)
        if not {"time", "score", "threshold"} <= cols:
            return []
        tcol = "t" if "t" in cols else "NULL"  # deployed anomaly tables have no t
        where, args = self._date_where(start, end)
        where.append("typeof(time) = 'text'")
        sql = (f"SELECT time, {tcol}, score, threshold FROM {table} "
               f"WHERE {' AND '.join(where)} ORDER BY time, id")
        out = []
        try:
            for t, epoch, score, threshold in conn.execute(sql, args):
                score, threshold = _finite(score), _finite(threshold)
                if score is None or threshold is None:
                    continue
                out.append((t, _finite(epoch), score, threshold))
        except sqlite3.DatabaseError as e:
            self._warn_once((machine, table, str(e)), "cannot read {machine} {table}: {error}",
                            machine=machine, table=table, error=e)
        return out

    def _all_anomalies(self, start, end):
        out = []
        for machine in self.list_machines():
            try:
                out.extend(self._anomalies(machine, start, end))
            except sqlite3.DatabaseError as e:
                self._warn_once(("anomalies", machine, str(e)), "{machine}: unreadable database: {error}",
                                machine=machine, error=e)
        out.sort(key=lambda r: (r[1], r[0]), reverse=True)
        return out

    def _faults(self, machine, start, end):
        conn, path = self._connect(machine)
        if conn is None:
            return []
        return self._score_rows(conn, machine, schema.FAULTS_TABLE, start, end)
