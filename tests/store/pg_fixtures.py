"""A PostgreSQL database of its own for each test module (not a conftest:
imported by the PostgreSQL tests, so nothing else depends on the service).

``TSRMON_TEST_PG_DSN`` names the admin connection (default: the local
server, user postgres); each call of :func:`fresh_database` creates a
uniquely named database and returns its DSN and a function dropping it.
"""

import os
import uuid

from tests.conftest import require_service

ADMIN_DSN = os.environ.get("TSRMON_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _with_dbname(dsn, name):
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    params["dbname"] = name
    return make_conninfo(**params)


def fresh_database():
    """``(dsn, drop)`` of a new empty database; skips (or fails under
    TSRMON_REQUIRE_SERVICES=1) when PostgreSQL is not reachable."""
    try:
        import psycopg
    except ImportError:
        require_service(False, "psycopg is not installed (the 'cluster' extra)")
    name = f"tsrmon_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as e:
        require_service(False, f"PostgreSQL not reachable at {ADMIN_DSN} ({str(e).strip()[:120]})")

    def drop():
        with psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return _with_dbname(ADMIN_DSN, name), drop
