"""Property: random sample dicts survive pickle protocols 0-5 and JSON lines,
whatever the terminator and wherever the stream is split."""

import pickle

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ingest.helpers import per_frame
from tsrmon.ingest import schema
from tsrmon.ingest.framing import EVENT, OK, JsonLineFramer, PickleFramer

NAME_CHARS = st.sampled_from("abcxyzABC019_.-진공펌프")
names = st.text(NAME_CHARS, min_size=1, max_size=20).filter(lambda s: s[0] not in ".-")
samples = st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), max_size=40)
sensor_dicts = st.dictionaries(
    names,
    st.fixed_dictionaries({"type": st.sampled_from(["VIB", "TEMP", "PRESSURE"]), "data": samples}),
    min_size=1, max_size=4)
frames_st = st.lists(st.one_of(
    sensor_dicts.map(lambda d: ("DataUpdate", d)),
    st.tuples(st.just("FaultDetect"),
              st.fixed_dictionaries({"score": st.integers(0, 10**6), "threshold": st.integers(0, 10**6)})),
), min_size=1, max_size=6)


def split(data, cuts):
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points + [len(data)]:
        out.append(data[last:p])
        last = p
    return out


def expected_events(messages):
    known = set()
    return [schema.from_pickle(m, False, known) for m in messages]


def decoded_events(items, json_mode):
    known = set()
    out = []
    for item in items:
        if item[0] == EVENT:
            out.extend(per_frame(item[1]))
            continue
        assert item[0] == OK, item
        if json_mode:
            out.append(schema.from_json(item[1], known))
        else:
            out.append(schema.from_pickle(item[1], item[2], known))
    return out


@settings(max_examples=150, deadline=None)
@given(frames_st, st.integers(0, 5), st.sampled_from([b"\x5c\x6f", b"\x00", b""]),
       st.lists(st.integers(0, 10**6), max_size=12), st.integers(1, 3))
def test_pickle_round_trip(messages, protocol, terminator, cuts, repeat):
    # repeat: the same frames again, so the shape-cache path is exercised too
    messages = messages * repeat
    stream = b"".join(pickle.dumps(m, protocol=protocol) + terminator for m in messages)
    want = expected_events(messages)
    for events in (False, True):  # pickle values, and the daemon's struct fast path
        framer = PickleFramer(events=events)
        items = []
        for piece in split(stream, cuts):
            items.extend(framer.feed(piece))
        assert framer.finish() == []  # nothing complete was held back
        assert framer.buffered == 0
        assert decoded_events(items, False) == want


@settings(max_examples=100, deadline=None)
@given(frames_st, st.lists(st.integers(0, 10**6), max_size=12))
def test_json_round_trip(messages, cuts):
    stream = b"".join(orjson.dumps({"event": e, "data": d}) + b"\n" for e, d in messages)
    framer = JsonLineFramer()
    items = []
    for piece in split(stream, cuts):
        items.extend(framer.feed(piece))
    assert decoded_events(items, True) == expected_events(messages)
