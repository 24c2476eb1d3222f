"""The decoder bounds what a frame expands to (memo references unfolded),
before ``pickle.loads`` allocates anything."""

import pickle

from tests.hostile.ingest_attacks import (legit_frame, memo_amplification, memo_grow_after_reference,
                                          self_containing)
from tsrmon.config import build_config
from tsrmon.ingest import framing
from tsrmon.ingest.framing import EVENT, OK, REFUSED, PickleFramer
from tsrmon.ingest.admission import limits_of
from tsrmon.ingest.opcodes import DONE, Limits
from tsrmon.ingest.safepickle import PickleWalk


class CountingLoads:
    """Wraps the real ``loads`` to count the frames that reached it."""

    def __init__(self, monkeypatch):
        self.calls = 0
        real = framing.loads

        def loads(frame):
            self.calls += 1
            return real(frame)

        monkeypatch.setattr(framing, "loads", loads)


def test_memo_amplification_refused_before_loads(monkeypatch):
    spy = CountingLoads(monkeypatch)
    frame = memo_amplification()
    items = PickleFramer(Limits(), events=True).feed(frame)
    assert len(items) == 1 and items[0][0] == REFUSED and items[0][2] == len(frame)
    reason = items[0][1]
    # 64 x 1.5 M floats + 64 x (3 keys/type strings + sensor key) + "DataUpdate"
    assert "expands to 96000257 samples" in reason, reason
    assert "MAX_SAMPLES_PER_FRAME (2000000)" in reason
    assert spy.calls == 0


def test_growth_after_the_references_is_counted(monkeypatch):
    spy = CountingLoads(monkeypatch)
    frame = memo_grow_after_reference(sensors=64, samples=100_000)
    items = PickleFramer(Limits()).feed(frame)
    assert [i[0] for i in items] == [REFUSED]
    assert "expands to 6400257 samples" in items[0][1], items[0][1]
    assert spy.calls == 0
    # The same bytes with fewer samples are legal and decode as they walk.
    small = memo_grow_after_reference(sensors=4, samples=10)
    items = PickleFramer(Limits()).feed(small)
    assert items[0][0] == OK and items[0][1][1]["s3"]["data"] == [1.5] * 10


def test_shared_list_within_the_bound_is_accepted():
    frame = memo_amplification(sensors=64, samples=1000)
    items = PickleFramer(Limits()).feed(frame)
    assert items[0][0] == OK
    assert sum(len(e["data"]) for e in items[0][1][1].values()) == 64_000


def test_self_containing_container_refused(monkeypatch):
    spy = CountingLoads(monkeypatch)
    items = PickleFramer(Limits()).feed(self_containing())
    assert items[0][0] == REFUSED and "contains itself" in items[0][1]
    assert spy.calls == 0


def test_largest_legal_frame_fits_the_default():
    frame = legit_frame(64, 25_600)
    walk = PickleWalk(0, Limits())
    assert walk.walk(frame) == DONE and walk.refused is None
    assert walk.expanded[0] == 64 * 25_600 + 64 * 4 + 1
    items = PickleFramer(Limits(), events=True).feed(frame)
    # Large first frames are decoded by their plan (no pickle.loads of 14 MB).
    assert items[0][0] == EVENT and len(items[0][1].sensors) == 64
    assert all(len(values) == 25_600 for _, _, values in items[0][1].sensors)


def test_bound_comes_from_the_config_key(tmp_path):
    config = build_config({"DAQ": {"MAX_SAMPLES_PER_FRAME": 1000}}, base_dir=str(tmp_path))
    limits = limits_of(config)
    assert limits.max_samples == 1000
    ok = pickle.dumps(("DataUpdate", {"v": {"type": "VIB", "data": [1.0] * 990}}), protocol=4)
    big = pickle.dumps(("DataUpdate", {"v": {"type": "VIB", "data": [1.0] * 1000}}), protocol=4)
    items = PickleFramer(limits).feed(ok + big)
    assert [i[0] for i in items] == [OK, REFUSED]
    assert "expands to 1005 samples" in items[1][1]


def test_expanded_containers_bounded():
    # One memoized empty dict referenced 3,000 times by each of 40 lists:
    # 120,000 containers unfolded from ~3,000 opcodes' worth of structure.
    out = [b"\x80\x04}q\x000(", b"]q\x01(" + b"h\x00" * 3000 + b"e"]
    out += [b"h\x01"] * 39
    out.append(b"l.")
    items = PickleFramer(Limits()).feed(b"".join(out))
    assert items[0][0] == REFUSED and "120041 containers" in items[0][1], items[0][1]


def test_refused_frame_does_not_cost_the_next_one():
    good = pickle.dumps(("DataUpdate", {"v": {"type": "VIB", "data": [2.0]}}), protocol=4)
    items = PickleFramer(Limits()).feed(memo_amplification(64, 40_000) + good)
    assert [i[0] for i in items] == [REFUSED, OK]
    assert items[1][1][1]["v"]["data"] == [2.0]


def _plans_agree(frame):
    from tsrmon.ingest.fastpath import plan_for, plan_from_skeleton
    walk = PickleWalk(0, Limits())
    assert walk.walk(frame) == DONE and walk.refused is None
    assert walk.whole
    quick = plan_from_skeleton(frame, walk.runs, walk.frames_at)
    slow = plan_for(frame, walk.runs)
    assert quick is not None and slow is not None
    a, b = quick.decode(frame, 0), slow.decode(frame, 0)
    assert [(s, t, list(v)) for s, t, v in a.sensors] == [(s, t, list(v)) for s, t, v in b.sensors]
    assert a.bad == b.bad and a.nonfinite == b.nonfinite
    return a


def test_skeleton_plan_matches_the_marker_plan():
    import random
    rng = random.Random(7)
    for protocol in (2, 3, 4, 5):
        data = {f"s{i}": {"type": "VIB" if i % 2 else "TEMP",
                          "data": [rng.uniform(-1e3, 1e3) for _ in range(rng.choice((1, 7, 999, 1001, 3000)))]}
                for i in range(6)}
        data["bad name"] = {"type": "VIB", "data": [1.0, 2.0]}
        frame = pickle.dumps(("DataUpdate", data), protocol=protocol)
        event = _plans_agree(frame)
        assert [s for s, _, _ in event.sensors] == [f"s{i}" for i in range(6)]
        assert [list(v) for _, _, v in event.sensors] == [data[f"s{i}"]["data"] for i in range(6)]


def test_partly_taken_runs_use_the_marker_plan():
    # A float taken by TUPLE2 / a text FLOAT opcode: not "whole".
    for frame in (pickle.dumps(("DataUpdate", {"v": {"type": "VIB", "data": [1.0], "x": (2.0, 3.0)}}), protocol=4),
                  pickle.dumps(("DataUpdate", {"v": {"type": "VIB", "data": [1.0, 2.0]}}), protocol=0)):
        walk = PickleWalk(0, Limits())
        assert walk.walk(frame) == DONE and walk.refused is None
        assert not walk.whole


def test_json_line_bounded_before_it_is_parsed():
    import orjson

    from tsrmon.ingest.framing import JsonLineFramer
    limits = Limits(max_samples=10_000)
    small = orjson.dumps({"event": "DataUpdate", "data": {"v": {"type": "VIB", "data": [0.5] * 9_000}}})
    big = orjson.dumps({"event": "DataUpdate", "data": {"v": {"type": "VIB", "data": [0] * 20_000}}})
    items = JsonLineFramer(limits).feed(small + b"\n" + big + b"\n")
    assert [i[0] for i in items] == [OK, REFUSED]
    assert items[1][1].startswith("frame expands to up to 20002 values (JSON)"), items[1][1]


def test_json_long_chunks_checked_in_c():
    import numpy as np
    import pytest

    from tsrmon.ingest import schema
    values = [1, 2.5] * 200
    event = schema.from_json({"event": "DataUpdate", "data": {"v": {"type": "VIB", "data": values}}}, set())
    arr = event.sensors[0].values
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float64 and arr.tolist() == [float(v) for v in values]
    with pytest.raises(schema.FrameRefused, match="sample 299 is a str"):
        schema.from_json({"event": "DataUpdate",
                          "data": {"v": {"type": "VIB", "data": [0.5] * 299 + ["x"]}}}, set())
    with pytest.raises(schema.FrameRefused, match="sample 300 out of range"):
        schema.from_json({"event": "DataUpdate",
                          "data": {"v": {"type": "VIB", "data": [0.5] * 300 + [10 ** 400]}}}, set())


def test_dict_entries_bounded():
    # 49,000 one-sample sensors: each would cost a name check on the reactor.
    many = {f"sensor_{i:05d}": {"type": "VIB", "data": [0.5]} for i in range(49_000)}
    for protocol in (2, 4):
        items = PickleFramer(Limits(), events=True).feed(pickle.dumps(("DataUpdate", many), protocol=protocol))
        assert items[0][0] == REFUSED and items[0][1] == "a dict of more than 1024 entries"
    fits = {f"s{i}": {"type": "VIB", "data": [0.5]} for i in range(1024)}
    items = PickleFramer(Limits(), events=True).feed(pickle.dumps(("DataUpdate", fits), protocol=4))
    assert items[0][0] == OK and len(items[0][1][1]) == 1024
    # DICT (MARK ... DICT, protocol 0/1) counts the same way.
    items = PickleFramer(Limits(max_dict_entries=2)).feed(pickle.dumps({1: 2, 3: 4, 5: 6}, protocol=0))
    assert items[0][0] == REFUSED and "more than 2 entries" in items[0][1]


def test_unshared_frames_are_sized_without_the_graph_walk():
    walk = PickleWalk(0, Limits())
    frame = legit_frame(4, 100)
    assert walk.walk(frame) == DONE and not walk.shared
    assert walk.expanded == (4 * 100 + 4 * 4 + 1, 1 + 1 + 4 * 2, 4)
    walk = PickleWalk(0, Limits())
    assert walk.walk(memo_amplification(4, 100)) == DONE and walk.shared
    assert walk.expanded == (4 * 100 + 4 * 4 + 1, 1 + 1 + 4 * 2, 4)


def test_walk_in_turns_gives_the_same_frames():
    from tsrmon.ingest.framing import PickleFramer as Framer
    ints = pickle.dumps(("DataUpdate", {"v": {"type": "VIB", "data": list(range(20_000))}}), protocol=4)
    floats = legit_frame(2, 300)
    data = ints + b"\x5c\x6f" + floats + ints
    whole = Framer(Limits(), events=True)
    want = whole.feed(data)
    turns = Framer(Limits(), events=True, budget=1000)
    got = turns.feed(data)
    rounds = 1
    while turns.yielded:
        got += turns.feed(b"")
        rounds += 1
    assert rounds >= 20  # 20,000 ints walked 1,000 opcodes at a time (the repeat matches its shape)
    assert [i[0] for i in got] == [i[0] for i in want] == [OK, OK, OK]
    assert got[0][1] == want[0][1] and got[2][1] == want[2][1]
    assert turns.opcodes_walked == whole.opcodes_walked  # nothing walked twice
