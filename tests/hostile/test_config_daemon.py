"""The real daemon (twistd plugin and .tac) fails whole or not at all (issue 15).

A bad file: exit status 2, one line on stderr naming file, key and problem,
no port ever open, no folder made.  A listener that cannot bind or whose
socket breaks while running: exit status 1 after one log line, every port
closed, no systemd READY=1.  The ports are probed all the while the process
runs, so a daemon that opened one for a moment would be caught.
"""

import ctypes
import os
import shutil
import socket
import subprocess
import time

import pytest

from tests.daemon.harness import Daemon, port_is_closed, wait_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TWISTD = [pytest.param(False, id="plugin"), pytest.param(True, id="tac")]


def run_to_exit(d, timeout=60.0):
    """Run the daemon command with stdout and stderr kept apart (the harness
    merges them), probing its two ports until it exits."""
    env = dict(os.environ, TSRMON_CONFIG=d.config_path, PYTHONUNBUFFERED="1")
    env.update(d.extra_env)
    io_dir = os.path.dirname(d.workdir)
    with open(os.path.join(io_dir, "out"), "wb") as out, open(os.path.join(io_dir, "err"), "wb") as err:
        proc = subprocess.Popen(d.command(), cwd=d.workdir, env=env, stdout=out, stderr=err)
        opened = set()
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait(10)
                raise AssertionError(f"the daemon still runs after {timeout} s")
            for port in (d.http_port, d.tcp_port):
                if not port_is_closed(port):
                    opened.add(port)
            time.sleep(0.01)
    with open(os.path.join(io_dir, "out"), "rb") as f:
        stdout = f.read().decode("utf-8", "replace")
    with open(os.path.join(io_dir, "err"), "rb") as f:
        stderr = f.read().decode("utf-8", "replace")
    return proc.returncode, stdout, stderr, opened


# (id, file text for the harness's two ports, key, words); every file would
# have opened at least one of the two ports on the main of issue 15.
BAD_FILES = [
    ("not UTF-8", lambda h, t: (f"SERVER:\n  HOST: 127.0.0.1\n  PORT: {h}\n  TCP_PORT: {t}\n"
                                f"FCM:\n  TITLE: 'caf\xe9'\n").encode("latin-1"),
     None, "not UTF-8 text: byte 0xe9 at line 6"),
    ("FLUSH .nan", lambda h, t: (f"SERVER:\n  HOST: 127.0.0.1\n  PORT: {h}\n  TCP_PORT: {t}\n"
                                 f"DATABASE:\n  FLUSH: .nan\n").encode(),
     "DATABASE.FLUSH", "expected a finite number, got nan"),
    ("duplicate SERVER section", lambda h, t: (f"SERVER:\n  HOST: 127.0.0.1\nDATABASE:\n  FLUSH: 1\n"
                                               f"SERVER:\n  PORT: {h}\n  TCP_PORT: {t}\n").encode(),
     "SERVER", "duplicate section at line 5 (first at line 1)"),
    ("bad host", lambda h, t: (f"SERVER:\n  HOST: 'not a host!'\n  PORT: {h}\n  TCP_PORT: {t}\n").encode(),
     "SERVER.HOST", "is neither an IP address nor a host name"),
    ("bad endpoint", lambda h, t: (f"SERVER:\n  HOST: 127.0.0.1\n  PORT: {h}\n  TCP_PORT: {t}\n"
                                   f"  TCP_ENDPOINT: 'garbage:foo'\n").encode(),
     "SERVER.TCP_ENDPOINT", "Unknown endpoint type: 'garbage'"),
    ("PORT == TCP_PORT", lambda h, t: (f"SERVER:\n  HOST: 127.0.0.1\n  PORT: {h}\n  TCP_PORT: {h}\n").encode(),
     "SERVER.TCP_PORT", f"is also the HTTP port (SERVER.PORT) on the same host"),
]


@pytest.mark.parametrize("tac", TWISTD)
@pytest.mark.parametrize("make, key, words", [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES])
def test_bad_file_exits_2_with_one_line_before_any_port_or_folder(tmp_path, tac, make, key, words):
    d = Daemon(tmp_path / "work", tac=tac)
    bad = tmp_path / "bad.yml"
    bad.write_bytes(make(d.http_port, d.tcp_port))
    d.config_path = str(bad)
    rc, stdout, stderr, opened = run_to_exit(d)
    assert rc == 2, stdout + stderr
    lines = stderr.splitlines()
    prefix = f"tsrmon: {bad}: {key}: " if key else f"tsrmon: {bad}: "
    assert len(lines) == 1 and lines[0].startswith(prefix) and words in lines[0], stderr
    assert "Traceback" not in stdout + stderr
    assert opened == set()
    assert os.listdir(tmp_path / "work") == ["tsrmon.yml"]  # the harness's file; no db/, data/, log/


def busy_port(port):
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


def critical_lines(text):
    return [line for line in text.splitlines() if "#critical]" in line]


@pytest.mark.parametrize("tac", TWISTD)
def test_http_port_in_use_stops_startup_with_one_line_and_exit_1(tmp_path, tac):
    d = Daemon(tmp_path / "work", tac=tac)
    blocker = busy_port(d.http_port)
    try:
        rc, stdout, stderr, opened = run_to_exit(d)
    finally:
        blocker.close()
    assert rc == 1, stdout + stderr
    assert critical_lines(stdout + stderr) == [line for line in (stdout + stderr).splitlines()
                                               if "cannot listen" in line]
    [line] = critical_lines(stdout + stderr)
    assert line.endswith(f"cannot listen: the HTTP listener on tcp:port={d.http_port}:interface=127.0.0.1: "
                         f"Couldn't listen on 127.0.0.1:{d.http_port}: [Errno 98] Address already in use.; "
                         f"stopping (exit status 1)")
    assert "Traceback" not in stdout + stderr
    assert d.tcp_port not in opened  # start-up stopped before the DAQ listener


@pytest.mark.parametrize("tac", TWISTD)
def test_daq_port_in_use_stops_the_daemon_with_exit_1_and_closes_http(tmp_path, tac):
    d = Daemon(tmp_path / "work", tac=tac)
    blocker = busy_port(d.tcp_port)
    try:
        rc, stdout, stderr, _ = run_to_exit(d)
    finally:
        blocker.close()
    assert rc == 1, stdout + stderr
    ours = [line for line in critical_lines(stdout + stderr) if "tsrmon.service" in line]
    assert len(ours) == 1 and ours[0].endswith(
        f"cannot listen: the DAQ listener on tcp:port={d.tcp_port}:interface=127.0.0.1: Couldn't listen on "
        f"127.0.0.1:{d.tcp_port}: [Errno 98] Address already in use.; stopping (exit status 1)"), stdout
    assert port_is_closed(d.http_port)


def test_daq_port_in_use_is_one_line_without_traceback(tmp_path):
    d = Daemon(tmp_path / "work")
    blocker = busy_port(d.tcp_port)
    try:
        rc, stdout, stderr, _ = run_to_exit(d)
    finally:
        blocker.close()
    assert rc == 1
    assert "Traceback" not in stdout + stderr
    assert len(critical_lines(stdout + stderr)) == 1


# -- a listener that dies while the daemon runs ------------------------

SYS_pidfd_getfd = {"x86_64": 438, "aarch64": 438}.get(os.uname().machine)


def take_listening_socket(pid, port):
    """A duplicate of the daemon's own listening socket (pidfd_getfd(2)): a
    shutdown() through it breaks the daemon's listener as a kernel or
    network-stack failure would, which nothing outside the process can."""
    inode = None
    for line in open(f"/proc/{pid}/net/tcp").read().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
            inode = fields[9]
    if inode is None or SYS_pidfd_getfd is None or not hasattr(os, "pidfd_open"):
        pytest.skip("cannot find the daemon's listening socket (no pidfd_getfd here)")
    libc = ctypes.CDLL(None, use_errno=True)
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target == f"socket:[{inode}]":
            pidfd = os.pidfd_open(pid)
            try:
                n = libc.syscall(SYS_pidfd_getfd, pidfd, int(fd), 0)
            finally:
                os.close(pidfd)
            if n < 0:
                pytest.skip(f"pidfd_getfd refused: {os.strerror(ctypes.get_errno())}")
            return socket.socket(fileno=n)
    pytest.skip("the daemon's listening socket is not among its descriptors")


@pytest.mark.parametrize("tac, which", [(False, "daq"), (True, "http")], ids=["plugin-daq", "tac-http"])
def test_a_listener_lost_while_running_stops_the_daemon_with_exit_1(tmp_path, tac, which):
    d = Daemon(tmp_path / "work", tac=tac).start()
    try:
        port = d.tcp_port if which == "daq" else d.http_port
        stolen = take_listening_socket(d.proc.pid, port)
        stolen.shutdown(socket.SHUT_RDWR)
        stolen.close()
        rc = d.proc.wait(30)
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(10)
        d.output.close()
    out = d.log_text()
    assert rc == 1, out
    label = {"daq": "DAQ", "http": "HTTP"}[which]
    [line] = [line for line in critical_lines(out) if "tsrmon.service" in line]
    assert (f"listener lost: the {label} listener on tcp:port={port}:interface=127.0.0.1 "
            f"(127.0.0.1:{port}): " in line and line.endswith("; stopping (exit status 1)")), line
    assert "Traceback" not in out
    assert port_is_closed(d.http_port) and port_is_closed(d.tcp_port)


# -- socket activation -------------------------------------------------

def test_socket_activation_without_the_daq_socket_exits_1_before_ready(tmp_path):
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        pytest.skip("systemd-socket-activate is not installed (no systemd on this machine)")
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    d = Daemon(tmp_path / "work", overrides={"SERVER": {
        "HTTP_ENDPOINT": "systemd:domain=INET:index=0",
        "TCP_ENDPOINT": "systemd:domain=INET:index=1"}})
    # Only the HTTP socket is passed (a tsrmon.socket that lost its second ListenStream).
    d.wrapper = [activate, "--fdname=http", "-l", f"127.0.0.1:{d.http_port}",
                 "-E", f"NOTIFY_SOCKET={notify_path}", "-E", "PATH", "-E", "PYTHONUNBUFFERED",
                 "-E", f"TSRMON_CONFIG={d.config_path}"]
    d.start(wait=False)
    wait_port(d.http_port, timeout=20)  # systemd-socket-activate holds it from the start
    # It execs twistd on the first connection, as systemd would.
    with socket.create_connection(("127.0.0.1", d.http_port), timeout=5):
        pass
    rc = d.proc.wait(60)
    out = d.log_text()
    d.output.close()
    assert rc == 1, out
    [line] = [line for line in critical_lines(out) if "tsrmon.service" in line]
    assert "cannot listen: the DAQ listener on systemd:domain=INET:index=1: systemd passed no such socket" in line
    assert "Traceback" not in out
    notify.setblocking(False)
    with pytest.raises(BlockingIOError):
        notify.recv(4096)  # never READY=1
    notify.close()
