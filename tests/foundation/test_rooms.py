"""Issue 19, composition: room interfaces found by walking the service tree,
checked at start-up; starts awaited one after the other."""

from twisted.application import service
from twisted.internet import defer, task
from zope.interface import implementer

from tsrmon import rooms
from tsrmon.config import build_config
from tsrmon.service import TsrmonService, makeService


def _config(tmp_path):
    return build_config({"DATABASE": {"PATH": "db"}, "DATA": {"PATH": "data"}, "LOGGER": {"PATH": "log"}},
                        base_dir=str(tmp_path))


class Recorder(service.Service):
    def __init__(self, name, log, result=None):
        self.setName(name)
        self.log = log
        self.result = result

    def startService(self):
        super().startService()
        self.log.append(self.name)
        return self.result


@implementer(rooms.IHealth)
class Liar(service.Service):
    """Declares IHealth without a health() method."""

    name = "liar"
    health_key = "liar"


@implementer(rooms.IReconfigurable)
class Declared(service.Service):
    def __init__(self, name, log):
        self.setName(name)
        self.log = log

    def reconfigure(self, config):
        self.log.append(self.name)


class Undeclared(service.Service):
    def __init__(self, name, log):
        self.setName(name)
        self.log = log

    def reconfigure(self, config):
        self.log.append(self.name)


def test_a_start_returning_a_deferred_is_awaited_before_the_next(tmp_path):
    top = TsrmonService(_config(tmp_path), task.Clock(), handle_signals=False)
    started, gate = [], defer.Deferred()
    Recorder("first", started, gate).setServiceParent(top)
    Recorder("second", started).setServiceParent(top)
    done = top.startService()
    assert started == ["first"] and not done.called
    gate.callback(None)
    assert started == ["first", "second"] and done.called and top.failure is None
    top.stopService()


def test_a_start_that_fails_later_ends_start_up_in_one_line(tmp_path):
    top = TsrmonService(_config(tmp_path), task.Clock(), handle_signals=False)
    started, gate = [], defer.Deferred()
    Recorder("first", started, gate).setServiceParent(top)
    Recorder("second", started).setServiceParent(top)
    done = top.startService()
    gate.errback(RuntimeError("disk on fire"))
    assert started == ["first"] and done.called
    assert top.failure == "cannot start: first failed: disk on fire"
    top.stopService()


def test_a_room_that_does_not_keep_its_declaration_fails_start_up(tmp_path):
    top = TsrmonService(_config(tmp_path), task.Clock(), handle_signals=False)
    started = []
    Liar().setServiceParent(top)
    Recorder("after", started).setServiceParent(top)
    top.startService()
    assert started == []
    assert top.failure.startswith("cannot start: liar declares IHealth but ")
    assert "\n" not in top.failure
    top.stopService()


def test_two_rooms_under_one_health_key_is_a_problem():
    top = service.MultiService()
    for name in ("a", "b"):
        room = Liar()
        room.setName(name)
        room.health = lambda: {"ok": True}
        room.setServiceParent(top)
    assert rooms.problems(top) == ["a and b both report IHealth as 'liar'"]


def test_reconfigure_reaches_declared_rooms_only_nested_too():
    top, inner, log = service.MultiService(), service.MultiService(), []
    Declared("outer", log).setServiceParent(top)
    inner.setName("inner")
    inner.setServiceParent(top)
    Declared("nested", log).setServiceParent(inner)
    Undeclared("plain", log).setServiceParent(top)  # has the method, declares nothing
    for room in rooms.providers(top, rooms.IReconfigurable):
        room.reconfigure(None)
    assert log == ["outer", "nested"]


def test_the_daemon_tree_keeps_every_declaration_and_the_report_names(tmp_path):
    top = makeService(_config(tmp_path), reactor=task.Clock(), lock=False)
    assert rooms.problems(top) == []
    assert set(rooms.health_checks(top)) == {"daq", "database", "notifier", "raw_csv", "live", "alarms",
                                             "clock", "reactor"}
    assert set(rooms.counter_readers(top)) == {"ingest", "store", "raw", "stats", "live", "notify",
                                               "alarms", "clock", "reactor", "spectra"}
    reconfigured = {room.name for room in rooms.providers(top, rooms.IReconfigurable)}
    # Every room that takes SIGHUP today, the plain objects (in a Part) among them.
    assert reconfigured >= {"logfile", "sensor_catalog", "http_policy", "hub", "notifier", "sqlite-reader",
                            "live", "alarms", "rest", "daq", "spectra"}


def test_make_service_builds_each_room_with_its_collaborators(tmp_path):
    top = makeService(_config(tmp_path), reactor=task.Clock(), lock=False)
    r = top.rooms
    hub = r["hub"]
    registry, bus = hub.registry, hub.live
    # The hub's data path is built last, with every room it feeds.
    assert (hub.stats, hub.faults, hub.spectra) == (r["stats"], r["store"], r["spectra"])
    assert (hub.raw, hub.notifier, hub.catalog) == (r["raw"], r["notifier"], r["sensor_catalog"])
    # Rooms that need machines got the registry, built before them.
    assert r["store"].hub is registry and r["alarms"].hub is registry and r["live"].registry is registry
    assert r["daq"].hub is hub and r["rest"].hub is registry
    # Live clients are reached through the one bus the live layer attached to.
    assert bus.sinks == (r["live"],)
    assert r["stats"].seconds == (bus, r["alarms"])
    assert r["reader"].feed is r["store"].feed
    # Bound methods between rooms, no lambdas.
    assert r["alarms"].emit == bus.broadcast and r["alarms"].notify == r["notifier"].alarm
    assert r["alarms"].catalog is r["sensor_catalog"] and r["spectra"].alarms is r["alarms"]
    live = r["live"]
    assert live.spectra is r["spectra"] and live.spectrum_reader == r["reader"].spectrum
    assert live.stored_status == live._stored_status and live.history == live._stored_history
