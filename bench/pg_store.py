"""Benchmark: the PostgreSQL store (``DATABASE.BACKEND: postgresql``).

    .venv/bin/python bench/pg_store.py [--quick]

Needs a reachable PostgreSQL (``TSRMON_BENCH_PG_DSN``, else
``TSRMON_TEST_PG_DSN``, else the local server as user postgres); works in
a database of its own, dropped at the end.

Rows:

* upsert throughput (buckets/s): a year of hourly rows × 8 sensors written
  with the store's own writer code (``postgres/writes.py``, one transaction
  per batch of 2,000 buckets), first as new buckets, then again onto the
  same buckets (the additive ``ON CONFLICT … DO UPDATE`` path), then by two
  connections at once onto the same buckets;
* ``/stat/hour`` over a year × 8 sensors, warm p50/p99, right after
  another node's commit (heard over LISTEN/NOTIFY), and the app's 2-day
  query p50/p99, over real HTTP from ``RestAPI`` served by
  ``PgReader`` in a subprocess (its own reactor, as a node would).
"""

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ZONE = "Asia/Seoul"
ADMIN_DSN = os.environ.get("TSRMON_BENCH_PG_DSN") or os.environ.get(
    "TSRMON_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
BATCH = 2000


def _config(folder, dsn):
    from tests.web.conftest import make_config

    return make_config(folder).replace(database={"backend": "postgresql", "dsn": dsn})


def serve(folder, dsn):
    from twisted.internet import reactor
    from twisted.web.server import Site

    from tsrmon.hub.machines import MachineHub
    from tsrmon.reader.pg_reader import PgReader
    from tsrmon.store.postgres.feed import PgChangeFeed
    from tsrmon.web.rest import RestAPI

    config = _config(folder, dsn)
    feed = PgChangeFeed(dsn, reactor)
    reader = PgReader(config, reactor, feed)
    reader.startService()
    api = RestAPI(config, reactor, MachineHub(config, reactor), reader)
    port = reactor.listenTCP(0, Site(api.resource()), interface="127.0.0.1")
    reactor.addSystemEventTrigger("before", "shutdown", reader.stopService)
    reactor.addSystemEventTrigger("before", "shutdown", feed.close)
    print(f"PORT {port.getHost().port}", flush=True)
    reactor.run()


def pct(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


def year_rows(sensors, days):
    zone = ZoneInfo(ZONE)
    end = datetime.now(zone).replace(minute=0, second=0, microsecond=0)
    t_end = int(end.timestamp())
    rows = []
    for t0 in range(t_end - days * 86400, t_end, 3600):
        local = datetime.fromtimestamp(t0, zone)
        text = local.strftime("%Y-%m-%d %H:00:00")
        off = int(local.utcoffset().total_seconds())
        for s in sensors:
            rows.append((s, "hour", t0, off, text, 60, 6.0, 30.0, -1.0, 1.0, 20.0))
    return rows


def write_all(dsn, catalog, rows):
    """Upsert ``rows`` (machine Bench) in batches; returns seconds."""
    import psycopg

    from tsrmon.store.postgres import schema, writes

    known = set()
    with psycopg.connect(dsn, autocommit=False) as conn:
        schema.ensure_for(conn, {(r[1], r[2]) for r in rows}, known)
        t = time.perf_counter()
        for i in range(0, len(rows), BATCH):
            with conn.cursor() as cur:
                if not catalog.loaded:
                    catalog.load(cur)
                writes.apply_sum_rows(cur, catalog, "Bench", rows[i:i + BATCH])
            conn.commit()
        return time.perf_counter() - t


def measure(quick=False, log=print):
    import psycopg

    from tsrmon.store.postgres import schema, writes

    name = f"tsrmon_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    params = psycopg.conninfo.conninfo_to_dict(ADMIN_DSN)
    params["dbname"] = name
    dsn = psycopg.conninfo.make_conninfo(**params)
    out = {}
    try:
        import tempfile

        with tempfile.TemporaryDirectory() as folder, psycopg.connect(dsn, autocommit=False) as conn:
            schema.prepare(conn, ZONE)
            sensors = [f"vib{i + 1}" for i in range(8)]
            catalog = writes.Catalog()
            with conn.cursor() as cur:
                catalog.load(cur)
                for s in sensors:
                    catalog.ensure(cur, "Bench", s, "VIB", "ABS", time.time())
            conn.commit()
            rows = year_rows(sensors, 365)
            n = len(rows)
            dt = write_all(dsn, writes.Catalog(), rows)
            out["insert"] = n / dt
            log(f"new buckets: {n} in {dt:.2f} s = {n / dt:,.0f}/s")
            sub = rows[: (n // 4 if quick else n)]
            dt = write_all(dsn, writes.Catalog(), sub)
            out["upsert"] = len(sub) / dt
            log(f"additive upserts onto existing buckets: {len(sub)} in {dt:.2f} s = {len(sub) / dt:,.0f}/s")
            # Two nodes at once onto the same buckets (row locks serialise them).
            part = sub[: len(sub) // 2]
            times = []

            def node():
                times.append(write_all(dsn, writes.Catalog(), part))
            t = time.perf_counter()
            threads = [threading.Thread(target=node) for _ in range(2)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            dt = time.perf_counter() - t
            out["two_nodes"] = 2 * len(part) / dt
            log(f"two connections onto the same buckets: {2 * len(part)} in {dt:.2f} s = {out['two_nodes']:,.0f}/s")
            got = conn.execute("SELECT sum(count) FROM stat_hour").fetchone()[0]
            out["exact"] = got == 60 * (n + len(sub) + 2 * len(part))
            conn.commit()

            server = subprocess.Popen([sys.executable, __file__, "--serve", folder, dsn], cwd=ROOT,
                                      stdout=subprocess.PIPE, text=True)
            try:
                port = int(server.stdout.readline().split()[1])
                client = http.client.HTTPConnection("127.0.0.1", port)
                today = datetime.now(ZoneInfo(ZONE)).date()

                def timed(start):
                    target = f"/stat/hour?machine=Bench&start={start.isoformat()}&end={today.isoformat()}"
                    t0 = time.perf_counter()
                    client.request("GET", target)
                    r = client.getresponse()
                    body = r.read()
                    assert r.status == 200, body[:200]
                    return time.perf_counter() - t0, body

                cold, body = timed(today - timedelta(days=365))
                out["items"] = body.count(b'"name"')
                out["bytes"] = len(body)
                out["cold"] = cold
                k = 50 if quick else 300
                year = [timed(today - timedelta(days=365))[0] for _ in range(k)]
                two = [timed(today - timedelta(days=1))[0] for _ in range(k)]
                out["year"] = (pct(year, 50), pct(year, 99), statistics.mean(year))
                # Another node commits the current hour (with its NOTIFY): the
                # server's feed marks the day and the next request re-serves it.
                from tsrmon.store.feed import change_of

                after = []
                latest = rows[-len(sensors):]
                cat = writes.Catalog()
                for i in range(10 if quick else 30):
                    with conn.cursor() as cur:
                        if not cat.loaded:
                            cat.load(cur)
                        r = [latest[i % len(latest)]]
                        writes.apply_sum_rows(cur, cat, "Bench", r)
                        cur.execute("SELECT pg_notify(%s, %s)", (schema.CHANNEL, writes.encode_change(
                            change_of("Bench", [("sums", r)]), "bench-writer")))
                    conn.commit()
                    time.sleep(0.05)   # the notification's way to the server's feed
                    after.append(timed(today - timedelta(days=365))[0])
                out["after_commit"] = (pct(after, 50), pct(after, 99))
                out["two_day"] = (pct(two, 50), pct(two, 99))
                log(f"year: {out['items']} items, cold {cold * 1e3:.0f} ms, warm p50 {out['year'][0] * 1e3:.1f} "
                    f"p99 {out['year'][1] * 1e3:.1f} ms; 2-day p50 {out['two_day'][0] * 1e3:.2f} "
                    f"p99 {out['two_day'][1] * 1e3:.2f} ms")
            finally:
                server.terminate()
                server.wait(10)
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return out


def bench_rows(quick=False, workdir=None):
    return rows_of(measure(quick=quick, log=lambda *_: None))


def rows_of(r):
    ms = 1e3
    return [
        {"row": "pg-upsert", "figure": "PostgreSQL upserts (buckets/s): new / additive / two connections same buckets",
         "value": f"{r['insert']:,.0f} / {r['upsert']:,.0f} / {r['two_nodes']:,.0f}", "target": "(no bar)",
         "pass": r["exact"], "detail": f"batches of {BATCH} buckets per transaction; totals exact: {r['exact']}"},
        {"row": "pg-rest-hour", "figure": "/stat/hour on PostgreSQL, a year x 8 sensors: p50 / p99 (warm)",
         "value": f"{r['year'][0] * ms:.1f} / {r['year'][1] * ms:.1f} ms", "target": "p99 < 50 ms",
         "pass": r["year"][1] < 0.05, "detail": f"{r['items']} items, {r['bytes'] / 1e6:.1f} MB, cold {r['cold'] * ms:.0f} ms"},
        {"row": "pg-rest-hour-commit", "figure": "/stat/hour a year x 8 sensors right after another node's commit: p50 / p99",
         "value": f"{r['after_commit'][0] * ms:.1f} / {r['after_commit'][1] * ms:.1f} ms", "target": "(no bar)",
         "pass": True, "detail": "LISTEN/NOTIFY marks the day; the request re-serves it"},
        {"row": "pg-rest-2day", "figure": "the app's 2-day /stat/hour on PostgreSQL: p50 / p99",
         "value": f"{r['two_day'][0] * ms:.2f} / {r['two_day'][1] * ms:.2f} ms", "target": "p99 < 10 ms",
         "pass": r["two_day"][1] < 0.01, "detail": "8 sensors x 48 hours"},
    ]


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    rows = rows_of(measure(quick=args.quick))
    print()
    print("| row | figure | value | target | pass | detail |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['row']} | {row['figure']} | {row['value']} | {row['target']} | "
              f"{'pass' if row['pass'] else 'miss'} | {row['detail']} |")


if __name__ == "__main__":
    main()
