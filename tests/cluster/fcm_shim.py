"""Run ``twistd`` with FCM's send URL pointed at a local fake.

    python tests/cluster/fcm_shim.py /path/to/twistd -n ... tsrmon --config X

The daemon's notifier takes the send URL only as a constructor argument
(production always talks to Google), so a test that runs real daemon
processes sets it here, from ``TSRMON_TEST_FCM_SEND_URL``, before twistd
builds the service: the notifier, the OAuth exchange (the credential file's
``token_uri``) and the retries are the production code, only the address
differs.  Used by tests/cluster/test_three_nodes.py through the daemon
harness's ``wrapper``.
"""

import os
import sys

from tsrmon.notify import fcm

fcm.FCM_SEND_URL = os.environ["TSRMON_TEST_FCM_SEND_URL"]

if __name__ == "__main__":
    from twisted.scripts.twistd import run

    sys.argv = sys.argv[1:]
    run()
