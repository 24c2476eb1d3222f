import pytest

from tsrmon.names import is_valid_name, name_problem, quote_identifier
from tests.conftest import expected


@pytest.mark.parametrize("name", ["ShotBlast", "진공펌프1", "펌프_vib", "a.b-c_d", "x" * 64, "_x", "1"])
def test_valid_names(name):
    assert is_valid_name(name)
    assert name_problem(name) is None


@pytest.mark.parametrize("name", ["", "../x", "a/b", "a b", "a\\b", ".hidden", "-rf", "x" * 65,
                                  "line\nbreak", "con\x00sole", 'x"; DROP TABLE anomaly; --', None, 3])
def test_invalid_names(name):
    assert not is_valid_name(name)
    assert name_problem(name)


def test_fixture_bad_names_are_all_refused():
    data = expected()
    for name in data["bad_names.bin"]["other_bad_names"]:
        assert not is_valid_name(name), name
    for name in data["bad_sensor_names.bin"]["refused_sensors"]:
        assert not is_valid_name(name), name


def test_quote_identifier_doubles_quotes():
    assert quote_identifier('a"b') == '"a""b"'
