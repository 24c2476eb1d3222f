"""The frames a DAQ PC writes (docs/protocol.md), standard library only.

``encode_pickle`` writes exactly what the deployed DAQ writes (pickle
protocol 4 plus the ``5C 6F`` terminator); ``encode_json`` one line of the
JSON lines encoding, which carries a ``time`` so samples buffered while the
server was unreachable keep their own time.  Used by the blocking client
(:mod:`tsrmon.daqside.client`) and the simulators alike.
"""

import datetime
import json
import math
import pickle

TERMINATOR = b"\x5c\x6f"


def encode_pickle(event, data):
    """One frame exactly as the deployed DAQ writes it."""
    return pickle.dumps((event, data), protocol=4) + TERMINATOR


def encode_json(event, data, t=None, token=None):
    """One JSON line; ``t`` is epoch seconds (sent as ISO 8601 with offset)."""
    message = {"event": event, "data": data}
    if t is not None:
        message["time"] = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat()
    if token is not None:
        message["token"] = token
    return json.dumps(message, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode("utf-8") + b"\n"


def finite_only(data):
    """JSON cannot carry NaN/inf: drop such samples (the server would anyway)."""
    out = {}
    for sensor, entry in data.items():
        values = entry["data"]
        if not math.isfinite(sum(values)):
            values = [v for v in values if math.isfinite(v)]
        out[sensor] = {"type": entry["type"], "data": values}
    return out
