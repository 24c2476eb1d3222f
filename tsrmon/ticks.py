"""Epoch-aligned ticks: statistics' rollovers and the live layer's updates
fire just after calendar boundaries, not at whatever offset the daemon
happened to start."""


def next_tick_delay(now, interval, offset):
    """Seconds from ``now`` to the next ``k * interval + offset`` (epoch
    aligned), for ticks that must land just after calendar boundaries."""
    delay = (interval - now % interval + offset) % interval
    return delay if delay > 1e-6 else interval
