"""``tsrmon backup DEST`` with ``DATABASE.BACKEND: postgresql``: PostgreSQL's
own logical backup, ``pg_dump -Fc`` of the store's database (one snapshot,
consistent while every node writes), into ``DEST/tsrmon-<UTC stamp>.dump``.
Restore with ``pg_restore -d <empty database> FILE``.  Continuous backups
(base backups with WAL archiving, a streaming standby) are the PostgreSQL
server's set-up: ``docs/scale-out.md``, "Backup".
"""

import datetime
import os
import shutil
import subprocess

from tsrmon.store.contract import ToolError


def backup(config, dest, pg_dump=None, now=None):
    """Dump the store into folder ``dest``; returns ``[path]``.  A missing
    ``pg_dump`` or a failed dump is a :class:`ToolError` (one line)."""
    pg_dump = pg_dump or shutil.which("pg_dump")
    if pg_dump is None:
        raise ToolError("pg_dump is not installed (Debian: postgresql-client); back the PostgreSQL "
                        "store up with pg_dump or base backups, see docs/scale-out.md")
    try:
        os.makedirs(dest, exist_ok=True)
    except OSError as e:
        raise ToolError(f"cannot create {dest}: {e.strerror}") from None
    stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(os.path.abspath(dest), f"tsrmon-{stamp}.dump")
    part = path + ".part"
    done = subprocess.run([pg_dump, "--format=custom", f"--file={part}", f"--dbname={config.database.dsn}"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        if os.path.exists(part):
            os.remove(part)
        lines = done.stderr.strip().splitlines()
        raise ToolError(f"pg_dump failed: {lines[-1] if lines else f'exit {done.returncode}'}")
    os.replace(part, path)
    return [path]
