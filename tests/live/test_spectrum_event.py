"""Issue 17: the opt-in live ``spectrum`` event, end to end: a 1 g 50 Hz tone
at 25.6 kHz through the real statistics, spectra room and SQLite store
(tests/web/analytics_db.py), read back by the real reader, sent to a raw
Socket.IO WebSocket client that sent ``subscribe_spectrum``."""

import json
import math

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from tests.live.conftest import LiveServer, make_config
from tests.live.helpers import events, sio_ws
from tests.web.analytics_db import Feeder
from tsrmon.reader.sqlite_reader import SQLiteReader

NSP = "/sio/Fan"


async def next_event(ws, name, timeout=10):
    frames = await ws.recv_until(lambda f: any(e[0] == name for e in events([f], NSP)), timeout=timeout)
    return events([frames[-1]], NSP)[0][1][0]


async def ack(ws, ack_id):
    head = f"43{NSP},{ack_id}"
    frames = await ws.recv_until(lambda f: f.startswith(head))
    return json.loads(frames[-1][len(head):])


def check_tone(payload, t0):
    assert payload["sensor_name"] == "vib" and payload["t0"] == t0
    assert payload["amplitude"] == "rms" and payload["unit"] == "g"
    lines = payload["lines"]
    assert len(lines) == 400                      # 1,600 lines in groups of 4
    k = max(range(len(lines)), key=lines.__getitem__)
    assert abs(payload["f0"] + k * payload["df"] - 50.0) <= payload["df"]
    # Each value is the RMS of its band: the tone's energy is A/√2 = 0.7071 g.
    energy = math.sqrt(sum(v * v for v in lines[max(k - 1, 0):k + 2]))
    assert abs(energy - 1 / math.sqrt(2)) < 1e-3
    assert abs(payload["velocity_rms"] - 22.07) < 0.01 and payload["iso_zone"] == "D"
    assert abs(payload["peaks"][0][0] - 50.0) < 1.0


@pytest.mark.slow  # a real process or a minute's worth of work: the fast set stays under a minute
@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_spectrum_event_is_opt_in_and_follows_new_minutes(tmp_path):
    feeder = Feeder(tmp_path / "store")
    reader = SQLiteReader(feeder.cfg, reactor)
    reader.warm_hour_cache = False
    reader.startService()
    # Pings on the driven clock would time out while minutes stream by.
    cfg = make_config(tmp_path, live={"PING_INTERVAL": 3600, "PING_TIMEOUT": 3600})
    server = LiveServer(cfg, feeder.clock, machines=("Fan",))
    server.live.spectra = feeder.spectra
    server.live.spectrum_reader = reader.spectrum
    feeder.bus.attach(server.live)               # the deployed `update` events too
    server.start()
    plain = sub = None
    try:
        feeder.stream(61)                         # minute 10:00 closes
        await feeder.flush()
        plain = await sio_ws(server.ws_url, nsp=NSP)
        sub = await sio_ws(server.ws_url, nsp=NSP)
        sub.send(f'42{NSP},1["subscribe_spectrum",["vib"]]')
        assert await ack(sub, 1) == [["vib"]]
        # At once: the newest stored minute, to the subscriber only.
        first = await next_event(sub, "spectrum")
        check_tone(first, feeder.start)
        # The next minute: sent at the first tick after it is stored.
        feeder.stream(60)                         # minute 10:01 closes
        await feeder.flush()
        feeder.clock.advance(1)                   # a LIVE.INTERVAL tick
        second = await next_event(sub, "spectrum")
        check_tone(second, feeder.start + 60)
        # The plain client got updates but never a spectrum event.
        plain.send(f'42{NSP},7["status"]')
        frames = await plain.recv_until(lambda f: f.startswith(f"43{NSP},7"))
        names = {e[0] for e in events(frames, NSP)}
        assert "update" in names and "spectrum" not in names
        # Unsubscribed: no more spectrum events, the acks say so.
        sub.send(f'42{NSP},2["unsubscribe_spectrum"]')
        assert await ack(sub, 2) == [[]]
        assert server.live.namespaces["Fan"].spectrum_subscribers == {}
        feeder.stream(60)
        await feeder.flush()
        feeder.clock.advance(1)
        sub.send(f'42{NSP},3["status"]')
        frames = await sub.recv_until(lambda f: f.startswith(f"43{NSP},3"))
        assert "spectrum" not in {e[0] for e in events(frames, NSP)}
        # A bad argument is refused in the ack.
        sub.send(f'42{NSP},4["subscribe_spectrum",{{"sensors":7}}]')
        assert "error" in (await ack(sub, 4))[0]
    finally:
        for ws in (plain, sub):
            if ws is not None:
                ws.protocol.dropConnection()
        await server.stop()
        await feeder.stop()
        await reader.stopService()
