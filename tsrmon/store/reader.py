"""Moved to ``tsrmon/reader/`` (issue 19); lead removes after updating callers."""
from tsrmon.reader.series import StatSeries, _item, align_series, encode_items, legacy_item  # noqa: F401
from tsrmon.reader.sqlite_reader import SQLiteReader  # noqa: F401
