"""``tsrmon simulate``: simulated DAQ PCs streaming to a running tsrmon.

The command line of :class:`tsrmon.daqside.simulator.SimulatorService`:
arguments, progress lines, the summary and the exit status.  What the
simulators send is in :mod:`tsrmon.daqside` (``waveforms``, ``simulator``);
the daemon's ``--demo`` feed is :mod:`tsrmon.daqside.demo`.
"""

import argparse
import signal
import sys

from twisted.internet import defer, task

from tsrmon.analytics import signals as _signals
from tsrmon.daqside.simulator import SimulatorService
from tsrmon.daqside.waveforms import sensors_for

HELP = """Simulated DAQ PCs streaming to a running tsrmon.

Progress (frames sent, connection state and reconnects per machine) goes to
stderr every --progress seconds; a summary goes to stdout at the end (after
--duration, or on Ctrl-C).

The DAQ link carries no acknowledgements: "sent" counts frames written to
the socket, not frames the server accepted.  A refused frame shows only in
the daemon's log (and its refused_frames counters); a refused machine name or
token shows here as the server closing the connection.

Exit status: 0 when every machine connected and kept its connection, 1 when a
machine could not connect or the server closed a connection, 2 on bad
arguments."""


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="tsrmon simulate", description=HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="127.0.0.1:8082", help="HOST:PORT of the DAQ port")
    parser.add_argument("--machines", type=int, default=1)
    parser.add_argument("--sensors", type=int, default=2, help="sensors per machine")
    parser.add_argument("--rate", type=float, default=1.0, help="DataUpdates per second per machine")
    parser.add_argument("--chunk", type=int, default=30, help="samples per sensor per DataUpdate")
    parser.add_argument("--json", action="store_true", help="use the JSON lines encoding")
    parser.add_argument("--token", default=None,
                        help="DAQ.TOKENS token sent in the name frame (implies --json)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--fault-every", type=float, default=10.0, help="seconds between FaultDetects (0: none)")
    parser.add_argument("--prefix", default="SimMachine", help="machine name prefix")
    parser.add_argument("--full-rate", type=float, default=None, metavar="HZ",
                        help="vibration sensors send full-rate signals of HZ samples/s "
                             "(HZ / --rate samples per frame; e.g. 25600 or 8192)")
    parser.add_argument("--fault", action="append", choices=_signals.KINDS, default=None,
                        help="fault in the full-rate signal (repeatable; default unbalance)")
    parser.add_argument("--rpm", type=float, default=1480.0, help="running speed of the full-rate signal")
    parser.add_argument("--progress", type=float, default=5.0,
                        help="seconds between progress lines on stderr (0: none)")
    args = parser.parse_args(argv)
    host, sep, port = args.server.rpartition(":")
    if not sep or not port.isdigit():
        parser.error("--server must be HOST:PORT")
    args.host = host.strip("[]") or "127.0.0.1"
    args.port = int(port)
    for name in ("machines", "sensors", "chunk"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.rate <= 0:
        parser.error("--rate must be positive")
    if args.full_rate is not None and args.full_rate <= 0:
        parser.error("--full-rate must be positive")
    if args.rpm <= 0:
        parser.error("--rpm must be positive")
    if args.fault and args.full_rate is None:
        parser.error("--fault needs --full-rate")
    if args.progress < 0:
        parser.error("--progress must not be negative")
    if args.token is not None:
        args.json = True  # only the JSON name frame carries a token
    return args


def simulator_from_args(reactor, args):
    machines = {f"{args.prefix}{i + 1}": sensors_for(i + 1, args.sensors) for i in range(args.machines)}
    full = None
    if getattr(args, "full_rate", None):
        spec = {"rate": args.full_rate, "rpm": args.rpm, "faults": tuple(args.fault or ("unbalance",))}
        full = {m: spec for m in machines}
    return SimulatorService(reactor, lambda: (args.host, args.port), machines, rate=args.rate,
                            chunk=args.chunk, use_json=args.json, fault_every=args.fault_every,
                            token=getattr(args, "token", None), full_rate=full)


@defer.inlineCallbacks
def run(reactor, args, stop=None, out=None):
    """Run until ``args.duration``, or until ``stop`` (a Deferred) fires, or
    forever; returns the service.  Progress lines go to ``out``."""
    sim = simulator_from_args(reactor, args)
    started = reactor.seconds()
    progress = None
    if out is not None and getattr(args, "progress", 0):
        def report():
            out.write(sim.progress_line(reactor.seconds() - started) + "\n")
            out.flush()
        progress = task.LoopingCall(report)
        progress.clock = reactor
        progress.start(args.progress, now=False)
    sim.startService()
    waits = [stop if stop is not None else defer.Deferred()]
    if args.duration is not None:
        waits.append(task.deferLater(reactor, args.duration, lambda: None))
    yield defer.DeferredList(waits, fireOnOneCallback=True, consumeErrors=True)
    for d in waits:
        if not d.called:
            d.cancel()
    if progress is not None and progress.running:
        progress.stop()
    yield sim.stopService()
    return sim


def summary(sim, args):
    """(exit status, lines for stdout)."""
    lines = [f"sent {sim.frames_sent()} frames from {args.machines} machines "
             f"(written to the socket; the link has no acknowledgements)"]
    for f in sim.factories:
        lines.append(f"  {f.machine}: {f.frames_sent} frames, {f.connections} connections, "
                     f"{f.reconnects} reconnects")
    troubles = sim.troubles()
    if len(sim.factories) < args.machines:
        troubles.append(("*", f"never got to connect to {args.host}:{args.port}"))
    for machine, why in troubles:
        lines.append(f"tsrmon simulate: {machine}: {why}")
    return (1 if troubles else 0), lines


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def _run(reactor):
        interrupted = defer.Deferred()

        def on_signal(*_):
            reactor.callFromThread(lambda: interrupted.called or interrupted.callback(None))

        # Ctrl-C / SIGTERM end the run with the summary and its exit status.
        reactor.callWhenRunning(signal.signal, signal.SIGINT, on_signal)
        reactor.callWhenRunning(signal.signal, signal.SIGTERM, on_signal)
        d = run(reactor, args, stop=interrupted, out=sys.stderr)

        def report(sim):
            status, lines = summary(sim, args)
            for line in lines:
                print(line, file=sys.stdout if not line.startswith("tsrmon simulate:") else sys.stderr)
            sys.stdout.flush()
            if status:
                raise SystemExit(status)
        return d.addCallback(report)

    task.react(_run)


if __name__ == "__main__":
    main()
