import pytest
import pytest_twisted
from twisted.internet import defer, task

from tests.notify.fakes import FakeGoogle, Receiver, listen, service_account

T0 = 1_700_000_000.0  # 2023-11-15 07:13:20 in Asia/Seoul


@pytest.fixture
def clock():
    c = task.Clock()
    c.advance(T0)
    return c


@pytest_twisted.async_yield_fixture
async def receiver():
    """A local HTTP server; hanging requests are dropped at teardown."""
    rec = Receiver()
    port, base = listen(rec)
    rec.base = base
    yield rec
    for request in rec.hanging:
        if request.channel is not None and request.channel.transport is not None:
            request.channel.transport.abortConnection()
    await defer.maybeDeferred(port.stopListening)


@pytest.fixture
def google(receiver, tmp_path):
    path = tmp_path / "fcm-credentials.json"
    public_pem, email = service_account(str(path), receiver.base + "/token")
    fake = FakeGoogle(receiver, receiver.base, public_pem, email)
    fake.cred_path = str(path)
    return fake
