"""DATABASE.BACKEND and DATABASE.DSN are checked together at load."""

import pytest

from tsrmon.config import ConfigError, load_config


def _load(tmp_path, text):
    path = tmp_path / "tsrmon.yml"
    path.write_text(text)
    return load_config(str(path))


@pytest.mark.timeout(30)
def test_sqlite_is_the_default_and_needs_no_dsn(tmp_path):
    config = _load(tmp_path, "DATABASE: {PATH: db}\n")
    assert config.database.backend == "sqlite"
    assert config.database.dsn is None


@pytest.mark.timeout(30)
def test_postgresql_takes_a_dsn(tmp_path):
    config = _load(tmp_path, "DATABASE: {BACKEND: postgresql, DSN: 'postgresql://tsrmon@db/tsrmon'}\n")
    assert (config.database.backend, config.database.dsn) == ("postgresql", "postgresql://tsrmon@db/tsrmon")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("text, words", [
    ("DATABASE: {BACKEND: postgresql}\n", "DATABASE.DSN: required"),
    ("DATABASE: {DSN: 'postgresql://x@h/db'}\n", "DATABASE.DSN: only used with"),
    ("DATABASE: {BACKEND: postgresql, DSN: 'just words'}\n", "DATABASE.DSN: expected"),
    ("DATABASE: {BACKEND: mysql}\n", "DATABASE.BACKEND"),
])
def test_refused_with_one_line(tmp_path, text, words):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, text)
    assert words in str(e.value)
    assert "\n" not in str(e.value)
