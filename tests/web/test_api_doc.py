"""docs/api.md names every route Klein registers, with its methods (issue 14, item 6)."""

import os
import re

from tsrmon.web.rest import RestAPI

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def documented_routes():
    """``{route: set of methods}`` from the "Every route" table of docs/api.md."""
    with open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Every route", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        m = re.match(r"^\|\s*([A-Z, ]+?)\s*\|\s*`([^`]+)`\s*\|", line)
        if m:
            out[m.group(2)] = {x.strip() for x in m.group(1).split(",")}
    return out


def klein_routes():
    """``{route: set of methods or None (any)}`` as Klein registered them; werkzeug's
    ``<string:level>`` written ``<level>``, branch sub-paths folded into their route."""
    out = {}
    for rule in RestAPI.app.url_map.iter_rules():
        if rule.rule.endswith("<path:__rest__>"):
            continue  # the branch=True twin of the route above it
        route = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"<\1>", rule.rule)
        methods = set(rule.methods or ()) - {"HEAD", "OPTIONS"} or None
        out[route] = methods
    return out


def test_docs_api_lists_every_route_with_its_methods():
    documented = documented_routes()
    routes = klein_routes()
    assert len(routes) >= 15  # the table is read, not empty
    missing = sorted(set(routes) - set(documented))
    assert not missing, f"routes missing from docs/api.md: {missing}"
    for route, methods in routes.items():
        if methods is not None:  # a branch route (socket.io) takes what its resource takes
            assert methods <= documented[route], (route, methods, documented[route])
    # The dashboard in front of the API (tsrmon/dashboard/resource.py) is listed too.
    assert {"/index.html", "/assets/<name>"} <= set(documented)
    assert documented["/alarms/<alarm_id>/ack"] == {"POST"}


def test_docs_api_lists_no_route_or_method_that_is_not_there():
    """The other direction: a row for a route that was removed or renamed, or a
    method a route does not take, is a stale claim."""
    documented = documented_routes()
    routes = klein_routes()
    dashboard = {"/index.html", "/assets/<name>"}  # served in front of Klein (tsrmon/dashboard/resource.py)
    assert sorted(set(documented) - set(routes) - dashboard) == []
    for route, methods in documented.items():
        if routes.get(route) is not None:
            assert methods == routes[route], (route, methods, routes[route])


def test_docs_api_has_no_stale_claims():
    with open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8") as f:
        text = f.read()
    assert "future dashboard" not in text
    assert "All routes are `GET`" not in text
    assert "`/alarms`" in text
