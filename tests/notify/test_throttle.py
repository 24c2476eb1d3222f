"""The throttle alone, on a driven clock."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task

from tsrmon.notify.throttle import Throttle


def make(interval=120, cap=0):
    clock = task.Clock()
    clock.advance(1_000_000)
    return clock, Throttle(clock, interval, cap)


def test_spacing_is_per_key_and_from_the_last_send():
    clock, th = make()
    assert th.admit("A").send
    clock.advance(119.9)
    assert th.admit("A").reason == "throttled"
    assert th.admit("B").send  # another machine is not hidden by A
    clock.advance(0.1)
    d = th.admit("A")
    assert d.send and d.suppressed == 1
    clock.advance(60)
    assert not th.admit("A").send  # measured from the send at +120, not from +0
    assert th.held("A") == 1


def test_no_debt_after_a_quiet_period():
    clock, th = make()
    th.admit("A")
    clock.advance(10 * 3600)
    results = []
    for _ in range(300):
        results.append(th.admit("A").send)
        clock.advance(1)
    assert results.count(True) == 3  # at 0 s, 120 s and 240 s of the burst


def test_cap_is_a_sliding_hour_and_held_counts_carry_over():
    clock, th = make(interval=0, cap=2)
    assert th.admit("A").send
    clock.advance(1000)
    assert th.admit("B").send
    d = th.admit("C")
    assert (d.send, d.reason) == (False, "capped")
    clock.advance(2600)  # A's send is now exactly an hour old
    d = th.admit("C")
    assert d.send and d.suppressed == 1
    assert th.sent_last_hour() == 2
    assert (th.throttled, th.capped) == (0, 1)


def test_zero_means_off():
    clock, th = make(interval=0, cap=0)
    assert all(th.admit("A").send for _ in range(1000))


def test_clock_stepping_back_does_not_silence_a_machine():
    clock, th = make()
    th.admit("A")
    clock.rightNow -= 3600  # the wall clock was corrected backwards
    assert th.admit("A").send


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ABC"), st.floats(0, 400)), max_size=60),
       st.integers(0, 5))
def test_invariants(events, cap):
    """No two sends of a key closer than the interval; at most ``cap`` per hour;
    every held notification is reported by the key's next send or still held."""
    clock, th = make(interval=120, cap=cap)
    sends = {}
    all_sends = []
    reported = held = 0
    for key, gap in events:
        clock.advance(gap)
        d = th.admit(key)
        if d.send:
            now = clock.seconds()
            assert not sends.get(key) or now - sends[key][-1] >= 120
            sends.setdefault(key, []).append(now)
            all_sends.append(now)
            reported += d.suppressed
        else:
            held += 1
    if cap:
        for i, t in enumerate(all_sends):
            assert sum(1 for u in all_sends[i:] if u - t < 3600) <= cap
    assert reported + th.held_total() == held
