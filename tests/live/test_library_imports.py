"""tsrmon/live/engineio/ and tsrmon/live/socketio/ are a small library: they
import nothing else from tsrmon, so they could be published on their own."""

import subprocess
import sys
import textwrap

# Run in a fresh interpreter: this test process has imported all of tsrmon.
PROBE = textwrap.dedent("""
    import sys

    LIBRARY = ("tsrmon.live.engineio", "tsrmon.live.socketio")
    # The packages above need their parents to exist as packages, nothing more.
    PARENTS = ("tsrmon", "tsrmon.live")

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.startswith("tsrmon.") and name not in PARENTS and not any(
                    name == lib or name.startswith(lib + ".") for lib in LIBRARY):
                raise ImportError("the live library imported " + name)
            return None

    sys.meta_path.insert(0, Block())
    import tsrmon.live.engineio as eio
    import tsrmon.live.socketio as sio
    from twisted.internet.task import Clock

    # Built with its defaults (no policy, no peer logger passed in) it works:
    clock = Clock()
    server = sio.SocketServer(clock, {"/": sio.Namespace("/")}.get)
    engine = eio.EngineServer(clock, server)
    session = engine.open_session(protocol=4, peer="127.0.0.1")
    session.receive_text("40")
    assert session.queue, "no CONNECT answer"
    session.receive_text("4" + "2/nowhere," + "x" * 500)  # logged through the default logger
    assert session.closed and server.counters["protocol_errors"] == 1

    own = sorted(m for m in sys.modules if m == "tsrmon" or m.startswith("tsrmon."))
    print("\\n".join(own))
""")


def test_engineio_and_socketio_import_nothing_else_from_tsrmon():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split()
    assert "tsrmon.live.engineio.server" in loaded and "tsrmon.live.socketio.server" in loaded
    outside = [m for m in loaded if m not in ("tsrmon", "tsrmon.live")
               and not m.startswith(("tsrmon.live.engineio", "tsrmon.live.socketio"))]
    assert outside == []
