"""Run the real daemon as a subprocess (``twistd -n --pidfile= tsrmon``)."""

import glob
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import yaml

BIN = os.path.dirname(sys.executable)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port} after {timeout} s")


def port_is_closed(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


class Daemon:
    """A daemon in ``workdir`` with a config of its own (ports picked free)."""

    def __init__(self, workdir, overrides=None, config_path=None, tac=False, demo=False,
                 wrapper=None, env=None, rlimit_as=None):
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.http_port = free_port()
        self.tcp_port = free_port()
        config = {
            "SERVER": {"HOST": "127.0.0.1", "PORT": self.http_port, "TCP_PORT": self.tcp_port,
                       "SHUTDOWN_TIMEOUT": 10},
            "DATABASE": {"FLUSH": 1},
            "DATA": {"MIN_FREE_MB": 0},
            "TIME": {"ZONE": "Asia/Seoul"},
        }
        for section, keys in (overrides or {}).items():
            config.setdefault(section, {}).update(keys)
        self.config = config
        self.config_path = config_path or os.path.join(self.workdir, "tsrmon.yml")
        with open(self.config_path, "w", encoding="utf-8") as f:
            yaml.safe_dump(config, f, allow_unicode=True)
        self.tac = tac
        self.demo = demo
        self.wrapper = list(wrapper or [])  # e.g. systemd-socket-activate ... before twistd
        self.extra_env = dict(env or {})
        self.twistd_args = []  # e.g. the unit's --logger
        # Address-space limit (bytes) for the daemon and its children (the
        # CSV worker): a test that regresses into gigabytes fails with
        # MemoryError instead of taking the machine down.
        self.rlimit_as = rlimit_as
        self.proc = None
        self.output = None

    def command(self):
        if self.tac:
            return self.wrapper + [os.path.join(BIN, "twistd"), "-n", "--pidfile=", *self.twistd_args,
                                   "-y", os.path.join(ROOT, "tsrmon.tac")]
        cmd = [os.path.join(BIN, "twistd"), "-n", "--pidfile=", *self.twistd_args, "tsrmon",
               "--config", self.config_path]
        if self.demo:
            cmd.append("--demo")
        return self.wrapper + cmd

    def start(self, wait=True):
        env = dict(os.environ)
        env["TSRMON_CONFIG"] = self.config_path
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        self.output = open(os.path.join(self.workdir, "daemon.out"), "ab")
        preexec = None
        if self.rlimit_as is not None:
            limit = int(self.rlimit_as)

            def preexec():
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        self.proc = subprocess.Popen(self.command(), cwd=self.workdir, env=env,
                                     stdout=self.output, stderr=subprocess.STDOUT, preexec_fn=preexec)
        if wait:
            try:
                wait_port(self.http_port, proc=self.proc)
                wait_port(self.tcp_port, proc=self.proc)
            except BaseException:
                # Never leave a daemon behind a failed start.
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait(10)
                self.output.close()
                raise
        return self

    def url(self, path):
        return f"http://127.0.0.1:{self.http_port}{path}"

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(10)
            raise AssertionError(f"daemon did not stop within {timeout} s of {sig!r}")
        finally:
            if self.output:
                self.output.close()
        return rc

    def get(self, path, timeout=30.0):
        """(status, body bytes, seconds taken) of a GET on the REST port."""
        started = time.monotonic()
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        return status, body, time.monotonic() - started

    def metric(self, name):
        """The value of one unlabelled sample in ``/metrics`` (None if absent)."""
        _, body, _ = self.get("/metrics")
        for line in body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def _status_kb(self, pid, key):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def children(self):
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []

    def rss(self):
        """Resident bytes of the daemon process (VmRSS)."""
        return self._status_kb(self.proc.pid, "VmRSS")

    def peak_rss(self):
        """Largest resident bytes of the daemon so far (VmHWM)."""
        return self._status_kb(self.proc.pid, "VmHWM")

    def children_peak_rss(self):
        """Largest VmHWM among the daemon's children (the CSV worker)."""
        return max((self._status_kb(pid, "VmHWM") for pid in self.children()), default=0)

    def log_bytes(self, stdout=True, files=True):
        """Bytes written to stdout/stderr and/or to the daily log files so far."""
        total = os.path.getsize(os.path.join(self.workdir, "daemon.out")) if stdout else 0
        if files:
            folder = self.config.get("LOGGER", {}).get("PATH", "log")
            for path in glob.glob(os.path.join(self.workdir, folder, "*")):
                total += os.path.getsize(path)
        return total

    def log_text(self):
        with open(os.path.join(self.workdir, "daemon.out"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def send(self, data, chunk=65536):
        with socket.create_connection(("127.0.0.1", self.tcp_port)) as s:
            for i in range(0, len(data), chunk):
                s.sendall(data[i:i + chunk])
            s.shutdown(socket.SHUT_WR)
            s.settimeout(10)
            try:
                s.recv(1)  # the server never writes; wait for it to close or time out
            except OSError:
                pass
