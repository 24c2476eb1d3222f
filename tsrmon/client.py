"""``tsrmon.client``: the DAQ client's public name (it lives in :mod:`tsrmon.daqside`).

Kept for DAQ PCs that ``from tsrmon.client import DAQClient``; importing it
needs neither Twisted nor numpy (tests/foundation/test_daq_client_alone.py).
"""

from tsrmon.daqside.client import DAQClient  # noqa: F401
from tsrmon.daqside.wire import TERMINATOR, encode_json, encode_pickle  # noqa: F401

__all__ = ["DAQClient", "TERMINATOR", "encode_json", "encode_pickle"]
