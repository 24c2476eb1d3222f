"""Serve RestAPI over a database filled from session.bin (for schemathesis and by hand).

    python -m tests.web.serve_rest FOLDER   # prints "PORT <n>" once listening

FOLDER gets ``db/ShotBlast.db`` (the session), a deployed-layout
``db/VacuumPump1.db`` with NULL and duplicate rows, and a connected machine
in the hub.  SIGTERM/SIGINT stop it.
"""

import os
import sys

from twisted.internet import reactor
from twisted.web.server import Site

from tests.conftest import expected
from tests.web.conftest import FakeDAQ, make_config
from tests.web.dbs import fill_from_messages, make_deployed_db
from tsrmon.hub.machines import MachineHub
from tsrmon.reader.sqlite_reader import SQLiteReader
from tsrmon.web.rest import RestAPI

T0 = 1_795_571_940  # 2026-11-25 10:59:00 Asia/Seoul


def populate(folder, config):
    db = config.database.path
    os.makedirs(db, exist_ok=True)
    shot = os.path.join(db, "ShotBlast.db")
    if not os.path.exists(shot):
        fill_from_messages(shot, expected()["session.bin"]["messages"][1:], T0, config.time.zone)
        make_deployed_db(os.path.join(db, "VacuumPump1.db"), ["pump1_vib"], [
            ("pump1_vib", "hour", "2026-11-24 10:00:00", 0.5),
            ("pump1_vib", "hour", "2026-11-24 10:00:00", 0.7),
            ("pump1_vib", "hour", "2026-11-24 11:00:00", None),
            ("pump1_vib", "day", "2026-11-24 00:00:00", 0.6),
        ], anomalies=[("2026-11-24 10:30:00.5", 5, 7), ("2026-11-24 10:31:00", None, 1)])
        open(os.path.join(db, "ShotBlast.db-journal"), "wb").close()


def main(folder):
    config = make_config(folder)
    populate(folder, config)
    hub = MachineHub(config, reactor)
    hub.remember(["ShotBlast"])
    machine = hub.claim("ShotBlast", FakeDAQ())
    hub.data(machine, [("shot_blast_vib1", "VIB", [0.5, -0.25])])
    reader = SQLiteReader(config, reactor)
    reader.startService()
    api = RestAPI(config, reactor, hub, reader,
                  health={"daq": lambda: {"ok": True}, "database": lambda: {"ok": True},
                          "notifier": lambda: {"ok": True, "enabled": False}},
                  counters={"ingest": lambda: {"frames": machine.frames}})
    port = reactor.listenTCP(0, Site(api.resource()), interface="127.0.0.1")
    reactor.addSystemEventTrigger("before", "shutdown", reader.stopService)
    print(f"PORT {port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1])
