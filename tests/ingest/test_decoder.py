"""The framer and the opcode walker, without sockets."""

import io
import pickle
import random
import struct
import tracemalloc

import numpy as np
import pytest

from tests.conftest import expected, fixture_bytes
from tests.ingest.helpers import per_frame
from tsrmon.hub.records import DataFrame, NameFrame, SensorSamples
from tsrmon.ingest import schema
from tsrmon.ingest.framing import OK, REFUSED, JsonLineFramer, PickleFramer
from tsrmon.ingest.opcodes import ALLOWED, Limits

EXPECTED = expected()


def feed_all(framer, data, step=None):
    out = []
    if step is None:
        return framer.feed(data)
    for i in range(0, len(data), step):
        out.extend(framer.feed(data[i:i + step]))
    return out


def as_expected(items):
    """Framer output in expected.json's vocabulary."""
    out = []
    for item in items:
        if item[0] == REFUSED:
            out.append({"refused": item[1]})
        else:
            out.append(item[1])
    return out


def matches(got, want):
    if isinstance(want, dict) and "refused" in want:
        return isinstance(got, dict) and want["refused"] in got["refused"]
    if isinstance(got, dict):
        return False
    event, data = want
    if got[0] != event:
        return False
    if event == "DataUpdate":
        for sensor, body in data.items():
            if "data" in body and got[1][sensor]["data"] != body["data"]:
                return False
        return True
    return list(got) == [event, data]


def test_all_fixtures_concatenated_decode_in_one_pass():
    names = list(EXPECTED)
    stream = b"".join(fixture_bytes(n) for n in names)
    want = [m for n in names for m in EXPECTED[n]["messages"]]
    framer = PickleFramer()
    got = as_expected(framer.feed(stream))
    assert framer.fatal is None and framer.buffered == 0
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert matches(g, w), (g, w)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_split_point_gives_the_same_frames(name):
    data = fixture_bytes(name)
    whole = as_expected(PickleFramer().feed(data))
    assert len(whole) == len(EXPECTED[name]["messages"])
    if len(data) > 4096:
        rng = random.Random(name)
        cuts = sorted(rng.sample(range(1, len(data)), 12))
    else:
        cuts = range(1, len(data))
    for cut in cuts:
        f = PickleFramer()
        # repr: NaN samples compare unequal to themselves
        assert repr(as_expected(f.feed(data[:cut]) + f.feed(data[cut:]))) == repr(whole), cut


def _big_frame(n_floats, protocol):
    return pickle.dumps(("DataUpdate", {"s": {"type": "VIB", "data": [i * 0.5 for i in range(n_floats)]}}),
                        protocol=protocol) + b"\x5c\x6f"


@pytest.mark.parametrize("protocol,n_floats", [(4, 120_000), (0, 20_000)])
def test_byte_by_byte_never_rewalks(protocol, n_floats):
    """A large frame fed one byte at a time walks each opcode once, as whole."""
    data = _big_frame(n_floats, protocol)
    whole = PickleFramer()
    assert len(whole.feed(data)) == 1
    pieces = PickleFramer()
    out = []
    for i in range(len(data)):
        out.extend(pieces.feed(data[i:i + 1]))
    assert len(out) == 1 and out[0][0] == OK
    assert out[0][1] == whole.feed(data)[0][1]  # second copy: known shape
    assert pieces.opcodes_walked == whole.opcodes_walked


def test_large_frames_in_pieces_take_the_shape_path():
    data = _big_frame(25_600, 4) * 3
    framer = PickleFramer()
    out = feed_all(framer, data, step=4096)
    assert [o[0] for o in out] == [OK, OK, OK]
    assert framer.shape_hits == 2


def _p5_buffer_pickle():
    buf = pickle.PickleBuffer(b"abc")
    return pickle.dumps(("DataUpdate", buf), protocol=5, buffer_callback=lambda b: False)


class _Persist(pickle.Pickler):
    def persistent_id(self, obj):
        return "x" if obj == "secret" else None


def _persid(protocol):
    f = io.BytesIO()
    _Persist(f, protocol=protocol).dump(("DataUpdate", "secret"))
    return f.getvalue()


FORBIDDEN = {
    "GLOBAL": pickle.dumps(("DataUpdate", int), protocol=0),
    "STACK_GLOBAL": pickle.dumps(("DataUpdate", int), protocol=4),
    "EMPTY_SET": pickle.dumps(("DataUpdate", {1, 2}), protocol=4),
    "FROZENSET": pickle.dumps(("DataUpdate", frozenset([1])), protocol=4),
    "BYTEARRAY8": pickle.dumps(("DataUpdate", bytearray(b"x")), protocol=5),
    "NEXT_BUFFER": _p5_buffer_pickle(),
    "PERSID": _persid(0),
    "BINPERSID": _persid(2),
    "EXT1": b"\x80\x02\x82\x01.",
    "REDUCE": b"\x80\x02N)R.",
    "BUILD": b"\x80\x02]}b.",
}


@pytest.mark.parametrize("op", list(FORBIDDEN))
def test_forbidden_opcodes_are_refused_whole_and_the_stream_goes_on(op):
    good = pickle.dumps(("FaultDetect", {"score": 1, "threshold": 2}), protocol=4)
    framer = PickleFramer()
    out = framer.feed(FORBIDDEN[op] + b"\x5c\x6f" + good + b"\x5c\x6f")
    assert out[0][0] == REFUSED and op in out[0][1]
    assert out[1][0] == OK and out[1][1] == ("FaultDetect", {"score": 1, "threshold": 2})
    assert op not in ALLOWED


def test_memo_index_amplification_is_refused_without_allocating():
    evil = b"\x80\x04N" + b"r" + struct.pack("<I", 200_000_000) + b"."
    tracemalloc.start()
    try:
        out = PickleFramer().feed(evil + b"\x5c\x6f")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out[0][0] == REFUSED and "memo index" in out[0][1]
    assert peak < 1_000_000


def test_undefined_memo_reference_is_refused():
    out = PickleFramer().feed(b"\x80\x04h\x05.\x5c\x6f")
    assert out[0][0] == REFUSED and "undefined" in out[0][1]


def test_deep_nesting_is_refused():
    deep = b"\x80\x04" + b"]" * 100 + b"a" * 99 + b"."
    out = PickleFramer(Limits(max_depth=32)).feed(deep + b"\x5c\x6f")
    assert out[0][0] == REFUSED and "nesting" in out[0][1]


def test_memo_aliasing_cannot_hide_depth_from_the_container_cap():
    # 200 lists nested through memo references: depth is under-counted by
    # the stack simulation, the container cap still bounds the work.
    body = b"".join(b"]\x94" for _ in range(200))
    body += b"".join(b"h" + bytes([i]) + b"h" + bytes([i + 1]) + b"a0" for i in range(199))
    evil = b"\x80\x04" + body + b"h\x00."
    out = PickleFramer(Limits(max_containers=100)).feed(evil + b"\x5c\x6f")
    assert out[0][0] == REFUSED and "containers" in out[0][1]


def test_element_cap():
    data = pickle.dumps(("DataUpdate", {"s": {"type": "VIB", "data": [1.0] * 5000}}), protocol=4)
    out = PickleFramer(Limits(max_elements=1000)).feed(data + b"\x5c\x6f")
    assert out[0][0] == REFUSED and "elements" in out[0][1]


def test_frame_over_the_byte_cap_is_skipped_and_the_stream_resynchronises():
    big = _big_frame(2000, 4)
    good = pickle.dumps(("name", "M1"), protocol=4) + b"\x5c\x6f"
    framer = PickleFramer(Limits(max_frame_bytes=4096))
    out = framer.feed(big + good)
    assert out[0][0] == REFUSED and "MAX_FRAME_BYTES" in out[0][1]
    assert out[-1] == (OK, ("name", "M1"), False, len(good) - 2)


def test_stream_without_terminators_cannot_resynchronise():
    good = pickle.dumps(("name", "M1"), protocol=4)
    framer = PickleFramer(Limits(max_frame_bytes=1024))
    out = framer.feed(b"\x80\x04 not a pickle" + good * 200)
    assert out[0][0] == REFUSED and "undecodable" in out[0][1]
    assert all(o[0] == REFUSED for o in out)
    assert framer.fatal is not None and "resynchronise" in framer.fatal


@pytest.mark.parametrize("terminator", [b"\x5c\x6f", b"\x00", b""])
def test_terminators(terminator):
    frames = [pickle.dumps(("FaultDetect", {"score": i, "threshold": 5}), protocol=4) for i in range(5)]
    out = PickleFramer().feed(b"".join(f + terminator for f in frames))
    assert [o[1][1]["score"] for o in out] == list(range(5))


def test_json_lines():
    framer = JsonLineFramer(Limits(max_frame_bytes=200))
    lines = (b'{"event":"name","data":"M1","token":"t"}\n'
             b'\n'
             b'{"event":"DataUpdate","data":{"s":{"type":"VIB","data":[1,2.5]}},"time":"2026-01-02T03:04:05+09:00"}\r\n'
             b'not json\n'
             + b'{"event":"name","data":"' + b"x" * 300 + b'"}\n'
             b'{"event":"FaultDetect","data":{"score":7,"threshold":5}}\n')
    out = []
    for i in range(0, len(lines), 7):
        out.extend(framer.feed(lines[i:i + 7]))
    kinds = [o[0] for o in out]
    assert kinds == [OK, OK, REFUSED, REFUSED, OK]
    known = set()
    name = schema.from_json(out[0][1], known)
    assert name == NameFrame(name="M1", token="t")
    data = schema.from_json(out[1][1], known)
    assert type(data) is DataFrame and data.sensors == [SensorSamples("s", "VIB", [1.0, 2.5])]
    assert type(data.sensors[0].values[0]) is float
    assert data.t == 1767290645.0
    assert "longer" in out[3][1]


@pytest.mark.parametrize("value,why", [
    (("DataUpdate", {"s": {"type": "VIB", "data": "x"}}), "list"),
    (("DataUpdate", {"s": {"type": "VIB", "data": [1.0, "x"]}}), "not a number"),
    (("DataUpdate", {"s": {"type": "VIB", "data": [True]}}), "not a number"),
    (("DataUpdate", [1]), "dict"),
    (("FaultDetect", {"score": "1", "threshold": 1}), "number"),
    (("FaultDetect", {"score": float("nan"), "threshold": 1}), "finite"),
    (("Other", {}), "unknown event"),
    (["DataUpdate"], "pair"),
])
def test_schema_refusals(value, why):
    with pytest.raises(schema.FrameRefused, match=why):
        schema.from_pickle(value, False, set())


def test_schema_drops_bad_sensor_names_and_nonfinite_samples():
    event = schema.from_pickle(("DataUpdate", {
        "../x": {"type": "VIB", "data": [1.0]},
        "ok": {"type": "VIB", "data": [1.0, float("nan"), float("inf"), -2.0]},
        "t": {"type": "bad type", "data": [1.0]},
    }), False, set())
    assert event.sensors == [("ok", "VIB", [1.0, -2.0])]
    assert [b[0] for b in event.bad] == ["../x", "t"]
    assert event.nonfinite == 2


@pytest.mark.parametrize("t", ["2026-01-01T00:00:00", "yesterday", -5, [1]])
def test_json_time_refusals(t):
    with pytest.raises(schema.FrameRefused):
        schema.from_json({"event": "FaultDetect", "data": {"score": 1, "threshold": 2}, "time": t}, set())


def _events(framer, data, step):
    known = set()
    out = []
    for item in feed_all(framer, data, step):
        if item[0] == "event":
            event = item[1]
            if type(event) is DataFrame:
                # Long chunks come as float64 arrays on the fast path, and a
                # run of frames of one shape as one event whose arrays hold
                # every frame's samples, frame after frame: split back, the
                # same samples as the pickle path's lists, in the same order.
                k = event.frames
                for i in range(k):
                    sensors = [SensorSamples(n, t, [float(x) for x in np.asarray(v).reshape(k, -1)[i]]
                                             if isinstance(v, np.ndarray) else v)
                               for n, t, v in event.sensors]
                    out.append(event._replace(sensors=sensors, frames=1))
                continue
            out.append(event)
        elif item[0] == OK:
            out.append(schema.from_pickle(item[1], item[2], known))
        else:
            out.append(("refused", item[1]))
    return out


@pytest.mark.parametrize("name", ["session.bin", "large_chunk.bin", "nonfinite.bin", "bad_sensor_names.bin"])
def test_struct_fast_path_gives_the_schema_events(name):
    data = fixture_bytes(name) * 2  # the second copy hits the cached shapes
    plain = PickleFramer()
    fast = PickleFramer(events=True)
    assert repr(_events(fast, data, 4096)) == repr(_events(plain, data, 4096))
    assert fast.shape_hits > 0


def test_fast_path_plan_refuses_shapes_it_cannot_describe():
    from tsrmon.ingest.fastpath import plan_for
    from tsrmon.ingest.opcodes import DONE
    from tsrmon.ingest.safepickle import PickleWalk

    def plan(value):
        frame = pickle.dumps(value, protocol=4)
        walk = PickleWalk(0, Limits())
        assert walk.walk(frame) == DONE
        return plan_for(frame, walk.runs)

    assert plan(("DataUpdate", {"s": {"type": "VIB", "data": [0.25, 0.5]}})) is not None
    assert plan(("DataUpdate", {"s": {"type": "VIB", "data": [1.0, 2]}})) is None  # an int sample
    assert plan(("DataUpdate", {1.5: {"type": "VIB", "data": [1.0]}})) is None  # non-string key
    assert plan(("FaultDetect", {"score": 1.0, "threshold": 2.0})) is None
    shared = [1.0, 2.0]
    assert plan(("DataUpdate", {"a": {"type": "VIB", "data": shared},
                                "b": {"type": "VIB", "data": shared}})) is not None


def test_large_frame_diverging_after_its_first_frame_is_not_lost():
    a = _big_frame(25_600, 4)
    b = _big_frame(25_000, 4)  # same first FRAME, shorter pickle
    framer = PickleFramer(events=True)
    out = feed_all(framer, a + b, step=4096)
    out += framer.finish()  # what the protocol does when the connection ends
    assert [o[0] for o in out] == [OK, OK]
    assert len(out[1][1][1]["s"]["data"]) == 25_000


def test_fast_path_long_chunks_with_nonfinite_samples():
    values = [float(i) for i in range(3000)]
    values[5] = float("nan")
    values[2999] = float("-inf")
    data = pickle.dumps(("DataUpdate", {"a": {"type": "VIB", "data": values},
                                        "b": {"type": "TEMP", "data": values[:10]}}), protocol=4) + b"\x5c\x6f"
    plain = _events(PickleFramer(), data * 3, 1000)
    fast_framer = PickleFramer(events=True)
    fast = _events(fast_framer, data * 3, 1000)
    assert fast_framer.shape_hits == 2
    assert fast == plain
    assert fast[2].nonfinite == 3 and len(fast[2].sensors[0].values) == 2998  # a: NaN, -inf; b: NaN


def test_fast_path_follows_memo_references_by_provenance():
    """A float memoized and fetched again (BINGET) lands in the plan twice."""
    def frame(f):
        return (b"\x80\x04\x8c\nDataUpdate}\x8c\x01s}(\x8c\x04type\x8c\x03VIB\x8c\x04data]"
                b"(G" + struct.pack(">d", f) + b"\x94h\x00eus\x86.")
    framer = PickleFramer(events=True)
    first = framer.feed(frame(0.5) + b"\x5c\x6f")
    assert first[0][0] == OK and first[0][1] == ("DataUpdate", {"s": {"type": "VIB", "data": [0.5, 0.5]}})
    second = framer.feed(frame(-2.0) + b"\x5c\x6f")
    assert second[0][0] == "event"
    assert second[0][1].sensors == [("s", "VIB", [-2.0, -2.0])]
    assert pickle.loads(frame(-2.0))[1]["s"]["data"] == [-2.0, -2.0]


def test_a_run_of_frames_of_one_shape_is_one_event():
    """Frames of a known shape that arrive together are decoded by one strided
    view: one DataFrame with ``frames`` = their count, each sensor's samples
    frame after frame; a run with a non-finite sample goes frame by frame."""
    def data(k, bad=False):
        vib = [k + i / 100 for i in range(30)]
        if bad:
            vib[3] = float("nan")
        return pickle.dumps(("DataUpdate", {"a": {"type": "VIB", "data": vib},
                                            "b": {"type": "TEMP", "data": [float(k)] * 3}}), protocol=4) + b"\\o"
    framer = PickleFramer(events=True)
    items = framer.feed(b"".join(data(k) for k in range(20)))
    assert [i[0] for i in items] == [OK, "event"]  # the first frame is walked, the other 19 are one run
    run = items[1][1]
    assert type(run) is DataFrame and run.frames == 19 and run.nonfinite == 0
    assert items[1][2] == 19 * (len(data(0)) - 2)
    a, b = run.sensors
    assert (a.sensor, a.stype, b.sensor, b.stype) == ("a", "VIB", "b", "TEMP")
    assert a.values.dtype == np.float64 and a.values.tolist() == [k + i / 100 for k in range(1, 20) for i in range(30)]
    assert b.values.tolist() == [float(k) for k in range(1, 20) for _ in range(3)]
    items = framer.feed(b"".join(data(k, bad=k == 5) for k in range(10)))
    assert [i[1].frames for i in items] == [1] * 10  # not all finite: frame by frame
    assert items[5][1].nonfinite == 1 and len(items[5][1].sensors[0].values) == 29


def test_a_run_stops_at_a_frame_of_another_shape_and_keeps_the_order():
    def data(k, n=30):
        return pickle.dumps(("DataUpdate", {"a": {"type": "VIB", "data": [k + i / 100 for i in range(n)]}}),
                            protocol=4) + b"\\o"
    framer = PickleFramer(events=True)
    framer.feed(data(-1) + data(-1, 31))  # both shapes known (walked once each)
    stream = b"".join(data(k) for k in range(10)) + data(10, 31) + b"".join(data(k) for k in range(11, 40))
    items = framer.feed(stream)
    assert all(i[0] == "event" for i in items)
    frames = [f for i in items for f in per_frame(i[1])]
    assert len(frames) == 40 and len(items) < 10  # runs, not one event a frame
    assert [f.sensors[0].values[0] for f in frames] == [float(k) for k in range(40)]
    assert [len(f.sensors[0].values) for f in frames] == [30] * 10 + [31] + [30] * 29
