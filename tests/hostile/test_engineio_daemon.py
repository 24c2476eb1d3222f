"""Attack 8, the protocol suites' scenario, against the real daemon's
``/socket.io/``: a second WebSocket opened with the sid of an upgraded
session is accepted (HTTP 101) and closed by the server, and the session
on its first WebSocket goes on (engine.io-protocol and socket.io-protocol:
"should ignore WebSocket connection with same sid after upgrade").  The
same against the Engine.IO layer alone: tests/live/test_engineio_second_ws.py.
"""

import json
import re

import pytest
import websocket

from tests.daemon.harness import Daemon
from tests.hostile.ingest_peers import wait_for

PATH = "/socket.io/?EIO=4&transport="


def _counter(d, name):
    _, body, _ = d.get("/metrics")
    m = re.search(rf"^tsrmon_live_{name}(?:_total)? (\S+)$", body.decode(), re.M)
    return float(m.group(1)) if m else None


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_second_websocket_for_an_upgraded_sid_is_accepted_then_closed(tmp_path):
    d = Daemon(tmp_path, {"LIVE": {"PING_INTERVAL": 0.5, "PING_TIMEOUT": 5}}).start()
    first = second = None
    try:
        status, body, _ = d.get(PATH + "polling")
        assert status == 200 and body[:1] == b"0", body
        sid = json.loads(body[1:])["sid"]
        ws_url = f"ws://127.0.0.1:{d.http_port}{PATH}websocket&sid={sid}"
        first = websocket.create_connection(ws_url, timeout=10)
        first.send("2probe")
        assert first.recv() == "3probe"
        first.send("5")  # upgraded: polling is over for this session
        wait_for(lambda: _counter(d, "clients_websocket") == 1, 10, what="the upgrade")

        # The handshake succeeds (create_connection raises on anything but
        # 101: the HTTP 400 of before), then the server closes with 1000.
        second = websocket.create_connection(ws_url, timeout=10)
        assert second.getstatus() == 101
        opcode, frame = second.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(frame[:2], "big") == 1000
        assert _counter(d, "second_websockets") == 1

        # The session goes on over its first WebSocket: pinged and answered.
        for _ in range(3):
            assert first.recv() == "2"
            first.send("3")
        assert _counter(d, "sessions") == 1
    finally:
        for ws in (first, second):
            if ws is not None:
                ws.close()
        rc = d.stop()
    assert rc == 0
