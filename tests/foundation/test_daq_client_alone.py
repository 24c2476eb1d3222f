"""The DAQ client runs on a DAQ PC without Twisted (issue 19): ``tsrmon.client``
and ``tsrmon.daqside.client`` import with Twisted made unimportable, pull in
none of the server's numpy-heavy rooms, and still encode and send frames."""

import subprocess
import sys
import textwrap

# A fresh interpreter: this test process has imported Twisted and all of tsrmon.
PROBE = textwrap.dedent("""
    import socket
    import sys

    BLOCKED = ("twisted", "zope", "klein", "autobahn", "numpy", "orjson")

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError("the DAQ client imported " + name)
            return None

    sys.meta_path.insert(0, Block())
    from tsrmon.client import DAQClient, encode_json, encode_pickle
    import tsrmon.daqside.client

    assert encode_pickle("name", "M1").endswith(b"\\x5c\\x6f")
    assert encode_json("name", "M1", token="t") == b'{"event":"name","data":"M1","token":"t"}\\n'

    # It sends through a real socket: the name frame, then one JSON line.
    server = socket.create_server(("127.0.0.1", 0))
    daq = DAQClient("127.0.0.1", server.getsockname()[1], "M1", encoding="json")
    assert daq.send_data({"vib": {"type": "VIB", "data": [0.5, float("nan"), 1.5]}})
    peer, _ = server.accept()
    peer.settimeout(5)
    got = b""
    while got.count(b"\\n") < 2:
        got += peer.recv(4096)
    daq.close()
    print(got.decode())
    print("MODULES", " ".join(sorted(m for m in sys.modules if m == "tsrmon" or m.startswith("tsrmon."))))
""")


def test_the_daq_client_imports_and_sends_without_twisted_or_numpy():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == '{"event":"name","data":"M1"}'
    assert lines[1] == '{"event":"DataUpdate","data":{"vib":{"type":"VIB","data":[0.5,1.5]}}}'
    modules = lines[-1].split()[1:]
    assert modules == ["tsrmon", "tsrmon.client", "tsrmon.daqside", "tsrmon.daqside.client",
                       "tsrmon.daqside.wire"]
