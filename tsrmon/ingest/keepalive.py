"""TCP keepalive on DAQ connections, with the deployed DAQ's timings.

The server never writes on the DAQ link, so a DAQ PC that vanished without
a FIN (power cut, cable pulled) is noticed only by the kernel's keepalive
probes: idle 60 s, then 3 probes 60 s apart, a dead peer after ~240 s.
"""

import socket

KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 60
KEEPALIVE_COUNT = 3


def set_keepalive(transport):
    """SO_KEEPALIVE with the deployed DAQ's timings (dead peer after ~240 s);
    False for a transport without TCP keepalive (a UNIX socket endpoint)."""
    try:
        transport.setTcpKeepAlive(1)
    except AttributeError:  # not a TCP transport (a UNIX socket endpoint)
        return False
    sock = transport.getHandle()
    for opt, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                       ("TCP_KEEPCNT", KEEPALIVE_COUNT)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
    return True
