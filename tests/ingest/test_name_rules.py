"""Names bounded in UTF-8 bytes; machine and sensor names that differ only
in case refused at their first appearance."""

import pytest
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from tests.ingest.helpers import Recorder
from tsrmon.config import build_config
from tsrmon.hub.machines import MachineHub, Refused
from tsrmon.names import MAX_NAME_BYTES, is_valid_name, name_problem


@pytest.mark.parametrize("name", ["\U00010400" * 50, "진공펌프" * 16, "a" * 64])
def test_names_within_200_bytes(name):
    assert len(name.encode()) <= MAX_NAME_BYTES
    assert is_valid_name(name) and name_problem(name) is None


def test_64_four_byte_characters_refused():
    name = "\U00010400" * 64  # 64 characters, 256 bytes: no file name can hold it with a suffix
    assert not is_valid_name(name)
    assert name_problem(name) == "name of 256 bytes in UTF-8, longer than 200"
    assert not is_valid_name("\U00010400" * 51)


class Conn:
    def __init__(self, host="10.0.0.1"):
        self.peer_host = host
        self.closed = None

    def takeover(self, reason):
        self.closed = reason

    def storage_congested(self, congested):
        pass


@pytest.fixture
def hub(tmp_path):
    rec = Recorder()
    return MachineHub(build_config({}, None, str(tmp_path)), Clock(), stats=rec, raw=rec)


@pytest.fixture
def lines():
    seen = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


def test_machine_differing_in_case_refused(hub):
    hub.claim("Press", Conn())
    with pytest.raises(Refused) as e:
        hub.claim("press", Conn("10.0.0.2"))
    assert e.value.kind == "case" and "'press'" in str(e.value) and "'Press'" in str(e.value)
    assert set(hub.machines) == {"Press"}


def test_remembered_machine_differing_in_case_refused(hub):
    hub.remember(["ShotBlast"])
    with pytest.raises(Refused) as e:
        hub.claim("shotblast", Conn())
    assert e.value.kind == "case"
    assert hub.claim("ShotBlast", Conn()).name == "ShotBlast"


def test_sensor_differing_in_case_refused_with_one_line(hub, lines):
    machine = hub.claim("M1", Conn())
    for _ in range(3):
        hub.data(machine, [("Vib", "VIB", [1.0]), ("vib", "VIB", [2.0])])
    assert [a[1] for a in hub.stats.added] == ["Vib"] * 3
    assert list(machine.sensors) == ["Vib"]
    assert hub.counters["refused_sensor_case"] == 3 and machine.dropped_sensors == 3
    text = [formatEvent(e) for e in lines if "differs only in case" in formatEvent(e)]
    assert len(text) == 1 and "'vib'" in text[0] and "'Vib'" in text[0]


def test_remembered_sensor_differing_in_case_refused(hub):
    hub.remember(["M1"])
    hub.remember_sensors("M1", ["Temp"])
    machine = hub.claim("M1", Conn())
    hub.data(machine, [("TEMP", "TMP", [20.0]), ("Temp", "TMP", [21.0])])
    assert [a[1] for a in hub.stats.added] == ["Temp"]


def test_first_appearance_wins_within_one_frame(hub):
    machine = hub.claim("M1", Conn())
    hub.data(machine, [("vib", "VIB", [2.0]), ("Vib", "VIB", [1.0])])
    assert list(machine.sensors) == ["vib"]
