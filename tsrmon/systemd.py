"""systemd notification (``Type=notify``) over ``$NOTIFY_SOCKET``.

Twisted has no helper for this; the protocol is one datagram per message.
The service is the last child of the tree, so READY=1 goes out once every
listener is up, and it stops first, so STOPPING=1 goes out as shutdown
begins.  With ``WatchdogSec=`` set, systemd passes ``WATCHDOG_USEC`` and we
send WATCHDOG=1 at half that period from the reactor: a wedged reactor stops
the pings and systemd restarts the daemon.
"""

import os
import socket

from twisted.application import service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger


def notify_address(environ=None):
    environ = os.environ if environ is None else environ
    addr = environ.get("NOTIFY_SOCKET")
    if not addr:
        return None
    if addr.startswith("@"):  # abstract namespace
        return "\0" + addr[1:]
    return addr


def sd_notify(message, environ=None):
    """Send one notification; False when not running under systemd."""
    addr = notify_address(environ)
    if addr is None:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(message.encode("utf-8"))
    return True


class SystemdNotifyService(service.Service):
    name = "systemd"
    log = Logger()

    def __init__(self, clock, environ=None):
        self.clock = clock
        self.environ = os.environ if environ is None else environ
        self._watchdog = None

    def _send(self, message):
        try:
            return sd_notify(message, self.environ)
        except OSError as e:
            self.log.warn("sd_notify {message!r} failed: {error}", message=message, error=e)
            return False

    def startService(self):
        super().startService()
        if self._send(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=running"):
            self.log.info("told systemd we are ready")
        usec = self.environ.get("WATCHDOG_USEC")
        pid = self.environ.get("WATCHDOG_PID")
        if usec and (not pid or pid == str(os.getpid())):
            period = int(usec) / 1e6 / 2
            self._watchdog = LoopingCall(self._send, "WATCHDOG=1")
            self._watchdog.clock = self.clock
            self._watchdog.start(period, now=True)

    def stopService(self):
        super().stopService()
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        self._send("STOPPING=1")
