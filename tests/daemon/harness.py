"""Run the real daemon as a subprocess (``twistd -n --pidfile= tsrmon``)."""

import os
import signal
import socket
import subprocess
import sys
import time

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
                 wrapper=None, env=None):
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
        self.proc = subprocess.Popen(self.command(), cwd=self.workdir, env=env,
                                     stdout=self.output, stderr=subprocess.STDOUT)
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
