import math
import random

from twisted.internet import task

from tsrmon.config import load_config
from tsrmon.hub import MachineHub, Refused
from tsrmon.stats.sums import PartialSums


def test_partial_sums_merge_exactly_like_one_bucket():
    rng = random.Random(7)
    values = [rng.gauss(0, 1) for _ in range(1000)]
    whole = PartialSums.of(values)
    merged = PartialSums()
    for i in range(0, 1000, 37):
        merged.merge(PartialSums.of(values[i:i + 37]))
    assert merged.count == whole.count == 1000
    assert math.isclose(merged.total, whole.total, rel_tol=1e-12, abs_tol=1e-12)
    assert math.isclose(merged.total_abs, whole.total_abs, rel_tol=1e-12)
    assert math.isclose(merged.total_sq, whole.total_sq, rel_tol=1e-12)
    assert merged.minimum == min(values) and merged.maximum == max(values)
    assert math.isclose(merged.mean_abs, sum(abs(v) for v in values) / 1000, rel_tol=1e-12)
    assert math.isclose(merged.rms, math.sqrt(sum(v * v for v in values) / 1000), rel_tol=1e-12)
    mean = sum(values) / 1000
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 1000)
    assert math.isclose(merged.std, std, rel_tol=1e-9)


def test_empty_sums_have_no_means():
    e = PartialSums()
    assert not e and e.mean is None and e.mean_abs is None and e.rms is None and e.std is None
    assert PartialSums.of([]).count == 0
    assert PartialSums.of([2.0]).merge(PartialSums()).as_tuple() == (1, 2.0, 2.0, 2.0, 2.0, 4.0)
    assert PartialSums.of([-1.0, 3.0]).value("ABS") == 2.0
    assert PartialSums.of([-1.0, 3.0]).value("REAL") == 1.0


class Conn:
    def __init__(self, host):
        self.peer_host = host
        self.closed = None
        self.congested = False

    def takeover(self, reason):
        self.closed = reason

    def storage_congested(self, flag):
        self.congested = flag


class Sink:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *a, **k: self.calls.append((name,) + a)


def make_hub(tmp_path, sinks=None, **daq):
    config = load_config(None, base_dir=str(tmp_path))
    config = config.replace(daq={k.lower(): v for k, v in daq.items()})
    hub = MachineHub(config, task.Clock(), **(sinks or {}))
    return hub


def test_reconnect_from_same_host_takes_over(tmp_path):
    live = Sink()
    hub = make_hub(tmp_path, {"live": live})
    a, b = Conn("10.0.0.5"), Conn("10.0.0.5")
    m = hub.claim("ShotBlast", a)
    assert hub.claim("ShotBlast", b) is m
    assert a.closed and m.connection is b and m.takeovers == 1
    hub.release(m, a)  # the old socket's late close must not take the machine offline
    assert m.connected
    hub.release(m, b)
    assert not m.connected
    assert [c[0] for c in live.calls] == ["machine_status"] * 3


def test_second_host_claiming_a_connected_name_is_refused_and_rate_limited(tmp_path):
    hub = make_hub(tmp_path)
    hub.claim("ShotBlast", Conn("10.0.0.5"))
    try:
        hub.claim("ShotBlast", Conn("10.0.0.6"))
    except Refused as e:
        assert "already connected from 10.0.0.5" in str(e) and not e.quiet
    else:
        raise AssertionError("not refused")
    try:
        hub.claim("ShotBlast", Conn("10.0.0.6"))
    except Refused as e:
        assert e.quiet
    else:
        raise AssertionError("not refused")


def test_allow_list_caps_and_bad_names(tmp_path):
    hub = make_hub(tmp_path, MACHINES=["A"], MAX_MACHINES=1)
    for bad in ("../x", "B"):
        try:
            hub.claim(bad, Conn("h"))
        except Refused:
            pass
        else:
            raise AssertionError(bad)
    hub.claim("A", Conn("h"))
    hub2 = make_hub(tmp_path, MAX_MACHINES=1)
    hub2.claim("A", Conn("h"))
    try:
        hub2.claim("B", Conn("h"))
    except Refused as e:
        assert "MAX_MACHINES" in str(e)


def test_data_fans_out_to_rooms_and_caps_sensors(tmp_path):
    stats, raw, faults, notifier = Sink(), Sink(), Sink(), Sink()
    hub = make_hub(tmp_path, dict(stats=stats, raw=raw, faults=faults, notifier=notifier), MAX_SENSORS=2)
    m = hub.claim("M", Conn("h"))
    hub.data(m, [("a", "VIB", [1.0]), ("b", "TEMP", [2.0, 3.0]), ("c", "VIB", [4.0])])
    assert m.sensors == {"a": "VIB", "b": "TEMP"} and m.dropped_sensors == 1
    assert m.samples == 3 and m.frames == 1
    assert [c[:3] for c in stats.calls] == [("add", "M", "a"), ("add", "M", "b")]
    assert [c[:3] for c in raw.calls] == [("write", "M", "a"), ("write", "M", "b")]
    hub.data(m, [("a", "VIB", [5.0])], t=100.0, late=True)
    assert stats.calls[-1] == ("add_late", "M", "a", "VIB", [5.0], 100.0)
    hub.fault(m, 3.0, 5.0)
    hub.fault(m, 7.0, 5.0)
    assert [c[0] for c in faults.calls] == ["fault", "fault"]
    assert notifier.calls == [("fault", "M", 7.0, 5.0, 0.0)]  # only over threshold


def test_congestion_reaches_every_connection_including_new_ones(tmp_path):
    hub = make_hub(tmp_path)
    a = Conn("h1")
    hub.claim("A", a)
    hub.storage_congested(True)
    b = Conn("h2")
    hub.claim("B", b)
    assert a.congested and b.congested
    hub.storage_congested(False)
    assert not a.congested and not b.congested


def test_the_store_catching_up_does_not_resume_reading_while_the_raw_log_is_behind(tmp_path):
    hub = make_hub(tmp_path)
    a = Conn("h1")
    hub.claim("A", a)
    registry = hub.registry
    registry.storage_congested(True)
    registry.raw_csv_congested(True)
    registry.storage_congested(False)  # the store caught up; the raw CSV log has not
    assert a.congested
    registry.raw_csv_congested(False)
    assert not a.congested
    registry.raw_csv_congested(True)  # the raw log alone pauses reading too
    assert a.congested


def test_a_run_of_frames_counts_each_frame_and_hands_spectra_the_run_whole(tmp_path):
    import numpy as np
    stats, raw, spectra = Sink(), Sink(), Sink()
    hub = make_hub(tmp_path, dict(stats=stats, raw=raw, spectra=spectra))
    m = hub.claim("M", Conn("h"))
    hub.data(m, [("a", "VIB", np.arange(6.0))], frames=3)
    assert m.frames == 3 and m.samples == 6
    assert [(c[0], list(c[4])) for c in stats.calls] == [("add", [0.0, 1.0, 2.0, 3.0, 4.0, 5.0])]
    assert [(c[0], len(c[3])) for c in raw.calls] == [("write", 6)]
    # The spectra room takes the run whole and splits it itself.
    assert [(list(c[4]), c[7]) for c in spectra.calls] == [([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], 3)]
