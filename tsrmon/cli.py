"""The ``tsrmon`` command: tools around the daemon.

    tsrmon check-config FILE        print the effective configuration, or the error
    tsrmon simulate ...             simulated DAQs against a running daemon
    tsrmon rebuild-stats ...        recompute aggregates from raw CSV
    tsrmon backup DEST              online, consistent copy of every database
    tsrmon migrate-store DSN        copy every SQLite database into PostgreSQL
    tsrmon run [twistd args]        twistd -n --pidfile= tsrmon ... (foreground)

The daemon itself runs under twistd (``--pidfile=``: tsrmon locks its data
folders itself, so twistd need not leave a twistd.pid behind):

    twistd -n --pidfile= tsrmon --config etc/tsrmon.yml
    TSRMON_CONFIG=etc/tsrmon.yml twistd -n --pidfile= -y tsrmon.tac
"""

import argparse
import os
import sys

from tsrmon.config import ConfigError, default_config_path, load_config


def _check_config(args):
    try:
        config = load_config(args.file)
    except ConfigError as e:
        print(f"tsrmon: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(f"# effective configuration of {os.path.abspath(args.file)}\n")
    sys.stdout.write(config.to_yaml())
    from tsrmon.store.schema import case_collision_lines

    # Names that differ only in case are reported, never merged (exit stays 0).
    for line in case_collision_lines(config.database.path):
        print(f"tsrmon: warning: {line}", file=sys.stderr)
    return 0


def _load(args):
    path = args.config or default_config_path()
    return load_config(path if os.path.exists(path) or args.config else None)


def _progress_bar(done, total):
    width = 40
    frac = done / total if total else 1.0
    bar = "#" * int(frac * width)
    sys.stderr.write(f"\r[{bar:<{width}}] {frac * 100:5.1f}%")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _rebuild(args):
    from tsrmon.store.tools import ToolError, rebuild_stats

    config = _load(args)
    folders = []
    for item in args.data or ():
        node, sep, path = item.partition("=")
        if not sep or not node or not path:
            raise ToolError(f"--data {item}: expected NODE=PATH (a node's DATA.PATH folder)")
        folders.append((node, path))
    summary = rebuild_stats(config, args.machine, args.date_from, args.date_to, progress=_progress_bar,
                            folders=folders or None)
    unrecorded = summary.pop("unrecorded_days", None)
    print("rebuilt " + ", ".join(f"{k}: {v}" for k, v in summary.items()))
    if unrecorded:
        print(f"note: the store records no node feeding {args.machine} on {', '.join(unrecorded)}: "
              f"rebuilt from the raw CSV found in the folders given")
    return 0


def _backup(args):
    from tsrmon.store.tools import backup

    config = _load(args)
    for path in backup(config, args.dest):
        print(path)
    return 0


def _plain_progress(done, total):
    print(f"{done}/{total} databases copied", file=sys.stderr, flush=True)


def _migrate_store(args):
    from tsrmon.store.postgres.copy import migrate_store

    config = _load(args)
    progress = _progress_bar if sys.stderr.isatty() else _plain_progress
    summary = migrate_store(config, args.dsn, progress=progress,
                            say=lambda line: print(line, file=sys.stderr) if not sys.stderr.isatty() else None)
    print("copied and verified " + ", ".join(f"{k}: {v}" for k, v in summary.items()))
    return 0


def _run(rest):
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    argv = [twistd, "-n", "--pidfile=", "tsrmon"] + rest
    os.execv(twistd, argv)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "simulate":
        from tsrmon.simulate import main as simulate_main

        return simulate_main(argv[1:])
    if argv and argv[0] == "run":
        return _run(argv[1:])

    parser = argparse.ArgumentParser(prog="tsrmon", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("file")
    p.set_defaults(func=_check_config)

    sub.add_parser("simulate", help="simulated DAQs (see tsrmon simulate --help)")
    sub.add_parser("run", help="run the daemon in the foreground (twistd -n --pidfile= tsrmon ...)")

    p = sub.add_parser("rebuild-stats", help="recompute aggregates from raw CSV")
    p.add_argument("--config")
    p.add_argument("--machine", required=True)
    p.add_argument("--from", dest="date_from", required=True, help="YYYY-MM-DD")
    p.add_argument("--to", dest="date_to", required=True, help="YYYY-MM-DD")
    p.add_argument("--data", action="append", metavar="NODE=PATH",
                   help="a node's DATA.PATH folder of raw CSV (repeat for every node that fed the "
                   "machine; PostgreSQL store only); default: this node's DATA.PATH")
    p.set_defaults(func=_rebuild)

    p = sub.add_parser("backup", help="consistent copy of every database in DATABASE.PATH (side files too)")
    p.add_argument("--config")
    p.add_argument("dest")
    p.set_defaults(func=_backup)

    p = sub.add_parser("migrate-store", help="copy every SQLite database of DATABASE.PATH (side files "
                       "too) into a PostgreSQL store, verified; safe to rerun")
    p.add_argument("--config")
    p.add_argument("dsn", help="postgresql://user@host/db")
    p.set_defaults(func=_migrate_store)

    args = parser.parse_args(argv)
    from tsrmon.store.tools import ToolError

    try:
        return args.func(args)
    except (ConfigError, ToolError) as e:
        print(f"tsrmon: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
