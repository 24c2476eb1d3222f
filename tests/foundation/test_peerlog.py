"""tsrmon.peerlog: peer text is cut short and escaped; warnings are limited per
(source, reason) and in all, with the held-back count reported once."""

from twisted.internet.task import Clock
from twisted.logger import LogLevel

from tsrmon.peerlog import PeerLog, peer_text


class Lines:
    def __init__(self):
        self.events = []

    def emit(self, level, fmt, **kw):
        self.events.append((level, fmt, kw))

    def texts(self):
        return [fmt.format(**kw) for _, fmt, kw in self.events]


def test_peer_text_cuts_escapes_and_keeps_readable_names():
    assert peer_text("x" * 5_000_000) == "x" * 64 + "…(5000000 chars)"
    assert peer_text("a\nb\x00\x1bc") == "a\\nb\\x00\\x1bc"
    assert peer_text("진공펌프1") == "진공펌프1"
    assert peer_text(b"\x00" * 100).endswith("…(100 bytes)")
    assert peer_text(("name", 1)) == "('name', 1)"


def test_burst_per_source_and_reason_then_one_count_line():
    lines, clock = Lines(), Clock()
    log = PeerLog(lines, clock, period=60, burst=3, global_burst=100)
    written = [log.warn("10.0.0.1", "bad name", "refused {name}", name=i) for i in range(10)]
    assert written == [True] * 3 + [False] * 7
    assert log.warn("10.0.0.2", "bad name", "refused {name}", name="x")  # another source
    assert log.warn("10.0.0.1", "bad token", "refused {name}", name="y")  # another reason
    clock.advance(60)
    log.warn("10.0.0.1", "bad name", "refused {name}", name="again")
    texts = lines.texts()
    assert texts[:5] == ["refused 0", "refused 1", "refused 2", "refused x", "refused y"]
    assert texts[5] == "7 more 'bad name' lines from 10.0.0.1 suppressed in 60 s"
    assert texts[6] == "refused again"
    assert all(level == LogLevel.warn for level, _, _ in lines.events)


def test_global_budget_bounds_many_sources():
    lines, clock = Lines(), Clock()
    log = PeerLog(lines, clock, period=60, burst=5, global_burst=20)
    for i in range(1000):
        log.warn(f"10.0.{i // 256}.{i % 256}", "bad name", "refused {i}", i=i)
    assert len(lines.events) == 20
    clock.advance(60)
    log.warn("10.9.9.9", "bad name", "refused {i}", i="last")
    assert "980 peer warning lines suppressed in 60 s (all sources)" in lines.texts()


def test_line_fields_may_be_called_reason_or_source():
    lines, clock = Lines(), Clock()
    PeerLog(lines, clock).info("1.2.3.4", "left", "client left: {reason} ({source})",
                              reason="ping timeout", source="ws")
    assert lines.texts() == ["client left: ping timeout (ws)"]


def test_key_table_stays_bounded():
    lines, clock = Lines(), Clock()
    log = PeerLog(lines, clock, max_keys=64, global_burst=10_000)
    for i in range(10_000):
        log.warn(str(i), "r", "x")
    assert len(log._windows) <= 64
