"""A sensor name stored by an earlier run refuses its case twin after a
restart: makeService hands the stored sensor names to the hub."""

import os
import sqlite3

from twisted.internet.task import Clock

from tsrmon.config import build_config
from tsrmon.service import makeService
from tsrmon.store import schema


class Conn:
    peer_host = "10.0.0.1"

    def takeover(self, reason):
        pass

    def storage_congested(self, congested):
        pass


def test_stored_sensor_names_reach_the_hub(tmp_path):
    db = tmp_path / "db"
    db.mkdir()
    conn = sqlite3.connect(db / "M1.db")
    conn.execute(f"CREATE TABLE {schema.SENSORS_TABLE} (name TEXT PRIMARY KEY, type TEXT, "
                 f"mode TEXT, first_seen REAL, ord INTEGER)")
    conn.execute(f"INSERT INTO {schema.SENSORS_TABLE} (name, ord) VALUES ('Vib', 0)")
    conn.commit()
    conn.close()
    assert schema.stored_sensor_names(str(db), "M1") == ["Vib"]
    assert schema.stored_sensor_names(str(db), "absent") == []
    config = build_config({"DATABASE": {"PATH": str(db)}, "DATA": {"PATH": str(tmp_path / "data")},
                           "LOGGER": {"PATH": str(tmp_path / "log")}}, None, str(tmp_path))
    top = makeService(config, reactor=Clock(), lock=False)
    hub = top.rooms["hub"]
    machine = hub.claim("M1", Conn())
    before = hub.counters.get("refused_sensor_case", 0)
    hub.data(machine, [("vib", "VIB", [1.0])])
    assert hub.counters["refused_sensor_case"] == before + 1
    assert "vib" not in machine.sensors
    assert os.path.exists(db / "M1.db")
