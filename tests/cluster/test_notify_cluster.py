"""Two nodes' notifiers with the cluster throttle on real Redis: one fault
seen by both is pushed once (a local webhook receiver counts the POSTs)."""

import inspect

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from tests.cluster.helpers import until
from tests.notify.conftest import T0, receiver  # noqa: F401 (the receiver fixture)
from tests.notify.fakes import make_config, settle
from tsrmon.cluster.redis import RedisLink
from tsrmon.notify.service import NotifierService
from tsrmon.notify.throttle import ClusterThrottle

pytestmark = pytest.mark.timeout(30)


@pytest_twisted.inlineCallbacks
def test_one_webhook_per_fault_across_two_nodes(tmp_path, redis_where, prefix, receiver):  # noqa: F811
    if "throttle" not in inspect.signature(NotifierService.__init__).parameters:
        pytest.skip("NotifierService has no throttle= parameter yet (issue 16 wiring request)")
    clock = task.Clock()
    clock.advance(T0)
    nodes, links = [], []
    for name in "ab":
        link = RedisLink(reactor, clock, redis_where, "throttle")
        link.start()
        links.append(link)
        yield until(lambda: link.connected)
        config = make_config(tmp_path / name, notify={"WEBHOOKS": [receiver.base + "/hook"]})
        svc = NotifierService(config, clock, reactor,
                              throttle=ClusterThrottle(clock, 0, 0, link, prefix=prefix, node=name))
        svc.startService()
        nodes.append(svc)
    try:
        for svc in nodes:
            svc.fault("M1", 7.0, 5.0, T0)
        yield until(lambda: sum(svc.counters()["throttled"] for svc in nodes) == 1)
        for svc in nodes:
            yield settle(svc)
        assert [r.path for r in receiver.log] == ["/hook"]
        clock.advance(120)  # FCM.TIMEOUT later: the next fault goes out, with the held count
        nodes[1].fault("M1", 8.0, 5.0, T0 + 120)
        yield until(lambda: len(receiver.log) == 2)
        assert receiver.log[1].json()["suppressed"] == 1
    finally:
        for svc in nodes:
            yield svc.stopService()
        for link in links:
            yield link.stop()
