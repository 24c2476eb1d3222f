"""The REST/live reader of ``DATABASE.BACKEND``, following the store's change
feed (``tsrmon.store.backends.build_store`` returns it)."""


def build_reader(config, reactor, feed):
    """``SQLiteReader`` (sqlite) or ``PgReader`` (postgresql) following ``feed``."""
    if config.database.backend == "postgresql":
        from tsrmon.reader.pg_reader import PgReader

        return PgReader(config, reactor, feed)
    from tsrmon.reader.sqlite_reader import SQLiteReader

    return SQLiteReader(config, reactor, feed=feed)
