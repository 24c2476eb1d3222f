"""Storage: SQLite aggregates (through adbapi) and raw CSV files."""
