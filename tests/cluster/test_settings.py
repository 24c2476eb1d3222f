"""CLUSTER and SERVER.TRUSTED_PROXIES: defaults and one-line errors at load."""

import pytest

from tsrmon.config import ConfigError, build_config

pytestmark = pytest.mark.timeout(30)


def test_defaults_mean_no_cluster():
    c = build_config({})
    assert c.cluster.redis is None and not c.cluster.enabled
    assert c.cluster.lease_ttl == 10
    assert c.cluster.prefix == "tsrmon"
    assert c.cluster.node  # the host name, never empty
    assert c.server.trusted_proxies == []


def test_a_cluster_configuration():
    c = build_config({"CLUSTER": {"REDIS": "redis://:pw@10.0.0.5:6380/2", "NODE": "node-a", "LEASE_TTL": 3,
                                  "PREFIX": "site2"},
                      "SERVER": {"TRUSTED_PROXIES": ["10.0.0.0/8", "::1/128"]}})
    assert c.cluster.enabled and c.cluster.node == "node-a" and c.cluster.lease_ttl == 3
    assert c.cluster.prefix == "site2"
    assert c.cluster.connection() == ("10.0.0.5", 6380, 2, "pw")
    assert c.server.trusted_proxies == ["10.0.0.0/8", "::1/128"]
    assert build_config({"CLUSTER": {"REDIS": "redis://localhost"}}).cluster.connection() == ("localhost", 6379, 0, None)
    assert build_config({"CLUSTER": {"REDIS": ""}}).cluster.enabled is False


@pytest.mark.parametrize("raw, key, text", [
    ({"CLUSTER": {"REDIS": "http://x"}}, "CLUSTER.REDIS", "not a redis://"),
    ({"CLUSTER": {"REDIS": "redis://"}}, "CLUSTER.REDIS", "not a redis://"),
    ({"CLUSTER": {"REDIS": "redis://h/x"}}, "CLUSTER.REDIS", "must be a number"),
    ({"CLUSTER": {"REDIS": "redis://h:99999"}}, "CLUSTER.REDIS", "not a redis:// URL"),
    ({"CLUSTER": {"REDIS": 5}}, "CLUSTER.REDIS", "expected a redis:// URL"),
    ({"CLUSTER": {"NODE": "a b"}}, "CLUSTER.NODE", "not a node name"),
    ({"CLUSTER": {"NODE": "-a"}}, "CLUSTER.NODE", "not a node name"),
    ({"CLUSTER": {"LEASE_TTL": 0}}, "CLUSTER.LEASE_TTL", "at least 1"),
    ({"CLUSTER": {"PREFIX": "a:b"}}, "CLUSTER.PREFIX", "not a key prefix"),
    ({"CLUSTER": {"LEASE": 1}}, "CLUSTER.LEASE", "unknown key"),
    ({"SERVER": {"TRUSTED_PROXIES": ["10.0.0.0/33"]}}, "SERVER.TRUSTED_PROXIES", "not an IP network"),
    ({"SERVER": {"TRUSTED_PROXIES": "10.0.0.1"}}, "SERVER.TRUSTED_PROXIES", "list of strings"),
])
def test_bad_values_are_one_line_errors(raw, key, text):
    with pytest.raises(ConfigError) as e:
        build_config(raw, source="t.yml")
    message = str(e.value)
    assert "\n" not in message and key in message and text in message, message
