"""``/notifications`` and ``/healthz`` give one answer to "is the notifier
enabled?" (issue 14, item 6), with and without a channel configured."""

import orjson
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor

from tests.web.conftest import make_config
from tsrmon.notify.service import NotifierService


async def get_json(server, path):
    r = await treq.get(server.url + path, persistent=False)
    return r.code, orjson.loads(await r.content())


@pytest.fixture
def config(tmp_path, request):
    # A webhook nobody listens at: configured is what makes it enabled; no
    # notification is sent in this test.
    hooks = [{"url": "http://127.0.0.1:9/hook", "retries": 0}] if request.param else []
    return make_config(tmp_path, NOTIFY={"WEBHOOKS": hooks})


@pytest.mark.parametrize("config", [False, True], ids=["no channel", "a webhook"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_notifications_and_healthz_agree(config, clock, hub, serve):
    notifier = NotifierService(config, clock, reactor)
    notifier.startService()
    try:
        await notifier._opened
        api = serve(notifier=notifier, health={"notifier": notifier.health})
        code, health = await get_json(api, "/healthz")
        assert code in (200, 503)
        code, listed = await get_json(api, "/notifications")
        assert code == 200
        expected = bool(config.notify.webhooks)
        assert health["checks"]["notifier"]["enabled"] is expected
        assert listed["enabled"] is expected
    finally:
        await notifier.stopService()
