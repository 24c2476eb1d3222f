"""A configuration fails whole or not at all (issue 15): every bad file is
one line naming the file, the key and the problem, refused by ``load_config``
(so by ``tsrmon check-config`` and by the daemon before anything starts),
and nothing is created on the way.  Acceptance tests for the config refactor.
"""

import os
import socket

import pytest
import pytest_twisted
from twisted.application import service
from twisted.internet import reactor, task
from twisted.internet.protocol import Factory, Protocol

from tsrmon.cli import main as cli_main
from tsrmon.config import ConfigError, build_config, load_config
from tsrmon.service import EndpointListener, TsrmonService, listener_problem

# (name, file bytes, key named in the refusal or None, words in the refusal)
REFUSED = [
    ("latin-1 file", "SERVER:\n  HOST: 127.0.0.1\nFCM:\n  TITLE: '{machine} café'\n".encode("latin-1"),
     None, "not UTF-8 text: byte 0xe9 at line 4"),
    ("NUL in the file", b"SERVER:\n  HOST: a\x00b\n", None, "control character U+0000"),
    ("FLUSH .nan", b"DATABASE:\n  FLUSH: .nan\n", "DATABASE.FLUSH", "expected a finite number, got nan"),
    ("SHUTDOWN_TIMEOUT .inf", b"SERVER:\n  SHUTDOWN_TIMEOUT: .inf\n", "SERVER.SHUTDOWN_TIMEOUT",
     "expected a finite number, got inf"),
    ("LIVE.INTERVAL -.inf", b"LIVE:\n  INTERVAL: -.inf\n", "LIVE.INTERVAL", "finite number"),
    ("NaN in a webhook", b"NOTIFY:\n  WEBHOOKS:\n    - url: http://127.0.0.1:9/\n      timeout: .NaN\n",
     "NOTIFY.WEBHOOKS[0].timeout", "finite number"),
    ("NaN in an alarm rule", b"ALARM:\n  RULES:\n    - {name: hot, metric: rms, above: .nan}\n",
     "ALARM.RULES[0].above", "finite number"),
    ("integer beyond 64 bits", b"DAQ:\n  MAX_CONNECTIONS: 123456789012345678901234567890\n",
     "DAQ.MAX_CONNECTIONS", "at most 9223372036854775807"),
    ("duplicate SERVER section", b"SERVER:\n  HOST: 127.0.0.1\n  PORT: 9001\nDATABASE:\n  FLUSH: 1\n"
     b"SERVER:\n  TCP_PORT: 9002\n", "SERVER", "duplicate section at line 6 (first at line 1)"),
    ("duplicate key", b"SERVER:\n  HOST: 127.0.0.1\n  HOST: 0.0.0.0\n", "SERVER.HOST",
     "duplicate key at line 3 (first at line 2)"),
    ("duplicate quoted key", b"DAQ:\n  TOKENS:\n    Press: a\n    'Press': b\n", "DAQ.TOKENS.Press",
     "duplicate key at line 4"),
    ("host with a space", b"SERVER:\n  HOST: 'not a host!'\n", "SERVER.HOST",
     "'not a host!' is neither an IP address nor a host name"),
    ("bad IPv4", b"SERVER:\n  HOST: 10.0.0.256\n", "SERVER.HOST", "'10.0.0.256' is not an IPv4 address"),
    ("bracketed IPv6", b"SERVER:\n  HOST: '[::1]'\n", "SERVER.HOST", "without brackets"),
    ("empty host", b"SERVER:\n  HOST: ''\n", "SERVER.HOST", "empty (use 0.0.0.0"),
    ("label over 63", b"SERVER:\n  HOST: " + b"a" * 64 + b".example\n", "SERVER.HOST", "RFC 1123"),
    ("unknown endpoint type", b"SERVER:\n  TCP_ENDPOINT: 'garbage:foo'\n", "SERVER.TCP_ENDPOINT",
     "Unknown endpoint type: 'garbage'"),
    ("endpoint port not a number", b"SERVER:\n  HTTP_ENDPOINT: 'tcp:http'\n", "SERVER.HTTP_ENDPOINT",
     "not a usable endpoint description"),
    ("endpoint port out of range", b"SERVER:\n  HTTP_ENDPOINT: 'tcp:70000'\n", "SERVER.HTTP_ENDPOINT",
     "port must be 0..65535, got 70000"),
    ("endpoint unknown argument", b"SERVER:\n  HTTP_ENDPOINT: 'tcp:8080:interfce=127.0.0.1'\n",
     "SERVER.HTTP_ENDPOINT", "interfce"),
    ("endpoint bad interface", b"SERVER:\n  TCP_ENDPOINT: 'tcp:8082:interface=not a host'\n",
     "SERVER.TCP_ENDPOINT", "interface 'not a host'"),
    ("systemd without index or name", b"SERVER:\n  TCP_ENDPOINT: 'systemd:domain=INET'\n",
     "SERVER.TCP_ENDPOINT", "exactly one of index= or name="),
    ("systemd bad domain", b"SERVER:\n  TCP_ENDPOINT: 'systemd:domain=IPX:index=1'\n",
     "SERVER.TCP_ENDPOINT", "domain must be INET, INET6 or UNIX"),
    ("ssl key missing", b"SERVER:\n  HTTP_ENDPOINT: 'ssl:8443:privateKey=/nonexistent/key.pem'\n",
     "SERVER.HTTP_ENDPOINT", "No such file or directory"),
    ("PORT == TCP_PORT", b"SERVER:\n  PORT: 9000\n  TCP_PORT: 9000\n", "SERVER.TCP_PORT",
     "port 9000 is also the HTTP port (SERVER.PORT) on the same host"),
    ("endpoint on TCP_PORT", b"SERVER:\n  HOST: 127.0.0.1\n  TCP_PORT: 9000\n"
     b"  HTTP_ENDPOINT: 'tcp:9000:interface=0.0.0.0'\n", "SERVER.TCP_PORT", "also the HTTP port"),
    ("one systemd socket for both", b"SERVER:\n  HTTP_ENDPOINT: 'systemd:domain=INET:index=0'\n"
     b"  TCP_ENDPOINT: 'systemd:domain=INET:index=0'\n", "SERVER.TCP_ENDPOINT", "the same socket as"),
    ("log name with a slash", b"LOGGER:\n  NAME: ../../etc/x\n", "LOGGER.NAME", "file name prefix"),
    ("bad FCM template", b"FCM:\n  TITLE: '{machine'\n", "FCM.TITLE", "bad template"),
    ("recursive alias", b"NOTIFY: &n\n  WEBHOOKS: [*n]\n", "NOTIFY.WEBHOOKS", "item 0"),
]


def write(tmp_path, data, name="tsrmon.yml"):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def made(tmp_path):
    """Whatever the loader left in the folder besides the file itself."""
    return sorted(set(os.listdir(tmp_path)) - {"tsrmon.yml"})


@pytest.mark.parametrize("data, key, words", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_bad_file_is_one_line_naming_file_key_and_problem(tmp_path, data, key, words):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path, base_dir=str(tmp_path))
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    prefix = f"{path}: {key}: " if key else f"{path}: "
    assert message.startswith(prefix), message
    assert words in message, message
    assert made(tmp_path) == []  # no db/, data/ or log/


@pytest.mark.parametrize("data, key, words", [r[1:] for r in REFUSED[::4]], ids=[r[0] for r in REFUSED[::4]])
def test_check_config_prints_the_same_line_and_exits_2(tmp_path, capsys, data, key, words):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path, base_dir=str(tmp_path))
    capsys.readouterr()
    assert cli_main(["check-config", path]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"tsrmon: {info.value}\n"


ACCEPTED = [
    ("IPv6 literal", b"SERVER:\n  HOST: '::1'\n", ("SERVER", "HOST"), "::1"),
    ("IPv6 any", b"SERVER:\n  HOST: '::'\n", ("SERVER", "HOST"), "::"),
    ("host name", b"SERVER:\n  HOST: localhost\n", ("SERVER", "HOST"), "localhost"),
    ("FQDN with trailing dot", b"SERVER:\n  HOST: daq-gw.plant.example.\n", ("SERVER", "HOST"),
     "daq-gw.plant.example."),
    ("systemd endpoints (checked without LISTEN_FDS)",
     b"SERVER:\n  HTTP_ENDPOINT: 'systemd:domain=INET:index=0'\n  TCP_ENDPOINT: 'systemd:domain=INET:index=1'\n",
     ("SERVER", "TCP_ENDPOINT"), "systemd:domain=INET:index=1"),
    ("named systemd sockets", b"SERVER:\n  HTTP_ENDPOINT: 'systemd:domain=INET6:name=http'\n"
     b"  TCP_ENDPOINT: 'systemd:domain=INET6:name=daq'\n", ("SERVER", "HTTP_ENDPOINT"),
     "systemd:domain=INET6:name=http"),
    ("both ports picked by the kernel", b"SERVER:\n  PORT: 0\n  TCP_PORT: 0\n", ("SERVER", "TCP_PORT"), 0),
    ("same port, other interfaces", b"SERVER:\n  HTTP_ENDPOINT: 'tcp:9000:interface=127.0.0.1'\n"
     b"  TCP_ENDPOINT: 'tcp:9000:interface=127.0.0.2'\n", ("SERVER", "TCP_ENDPOINT"),
     "tcp:9000:interface=127.0.0.2"),
    ("IPv6 endpoint", b"SERVER:\n  TCP_ENDPOINT: 'tcp6:8082:interface=\\:\\:1'\n", ("SERVER", "TCP_ENDPOINT"),
     "tcp6:8082:interface=\\:\\:1"),
]


@pytest.mark.parametrize("data, where, value", [r[1:] for r in ACCEPTED], ids=[r[0] for r in ACCEPTED])
def test_valid_files_still_load(tmp_path, data, where, value):
    config = load_config(write(tmp_path, data), base_dir=str(tmp_path))
    assert getattr(getattr(config, where[0].lower()), where[1].lower()) == value


def test_yaml_merge_keys_may_be_overridden_without_a_duplicate_refusal(tmp_path):
    # A mapping's own key beside a << merge is YAML's override, not a duplicate.
    path = write(tmp_path, b"LIVE: &live\n  INTERVAL: 30\n  CACHE: 10\nNOTIFY:\n  WEBHOOKS:\n"
                           b"    - &hook {url: 'http://127.0.0.1:9/a', retries: 1}\n"
                           b"    - {<<: *hook, url: 'http://127.0.0.1:9/b'}\n")
    config = load_config(path, base_dir=str(tmp_path))
    assert [h["url"] for h in config.notify.webhooks] == ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"]
    assert config.notify.webhooks[1]["retries"] == 1


def test_sighup_reload_refuses_a_duplicate_section_and_keeps_the_running_config(tmp_path):
    path = write(tmp_path, b"SERVER:\n  HOST: 127.0.0.1\n")
    config = load_config(path, base_dir=str(tmp_path))
    top = TsrmonService(config, task.Clock(), handle_signals=False)
    (tmp_path / "tsrmon.yml").write_bytes(b"SERVER:\n  HOST: 127.0.0.1\nSERVER:\n  PORT: 1\n")
    assert top.reload() is None
    assert top.config is config


# -- listeners ---------------------------------------------------------

def test_listener_problem_sees_a_socket_that_stopped_listening():
    port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    try:
        assert listener_problem(port) is None
        port.socket.shutdown(socket.SHUT_RDWR)
        assert listener_problem(port) == "the socket no longer listens (shut down)"
    finally:
        port.stopListening()


class Recorder(service.Service):
    name = "after"
    started = False

    def startService(self):
        super().startService()
        self.started = True


@pytest_twisted.inlineCallbacks
def test_a_listener_that_cannot_bind_stops_startup_there(tmp_path):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    busy = blocker.getsockname()[1]
    config = build_config({"SERVER": {"HOST": "127.0.0.1"}}, base_dir=str(tmp_path))
    top = TsrmonService(config, reactor, handle_signals=False)
    first = EndpointListener(reactor, "tcp:0:interface=127.0.0.1", Factory.forProtocol(Protocol), "first")
    first.setServiceParent(top)
    EndpointListener(reactor, f"tcp:{busy}:interface=127.0.0.1", Factory.forProtocol(Protocol), "http",
                     label="HTTP").setServiceParent(top)
    after = Recorder()
    after.setServiceParent(top)
    try:
        top.startService()
        assert top.failure == (f"cannot listen: the HTTP listener on tcp:{busy}:interface=127.0.0.1: "
                               f"Couldn't listen on 127.0.0.1:{busy}: [Errno 98] Address already in use.")
        assert not after.started  # nothing after it (systemd READY=1 among them) starts
        opened = first.port.getHost().port
    finally:
        yield top.stopService()
        blocker.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", opened), timeout=1).close()


@pytest_twisted.inlineCallbacks
def test_a_listener_lost_while_running_is_noticed(tmp_path):
    config = build_config({"SERVER": {"HOST": "127.0.0.1"}}, base_dir=str(tmp_path))
    top = TsrmonService(config, reactor, handle_signals=False)
    http = EndpointListener(reactor, "tcp:0:interface=127.0.0.1", Factory.forProtocol(Protocol), "http",
                            label="HTTP")
    http.setServiceParent(top)
    top.startService()
    try:
        assert top.failure is None
        port = http.port.getHost().port
        http.port.socket.shutdown(socket.SHUT_RDWR)
        for _ in range(100):  # checked every LISTENER_CHECK_INTERVAL (1 s)
            if top.failure is not None:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        assert top.failure is not None and top.failure.startswith(
            f"listener lost: the HTTP listener on tcp:0:interface=127.0.0.1 (127.0.0.1:{port}): ")
    finally:
        yield top.stopService()
