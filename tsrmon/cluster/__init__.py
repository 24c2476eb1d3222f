"""Scale-out (issue 16): several tsrmon nodes sharing one Redis.

- ``settings``: the CLUSTER section;
- ``bus``: live events between nodes and the cluster-wide machine directory;
- ``lease``: one owner per machine across the cluster;
- ``proxy``: real client addresses behind HAProxy (PROXY protocol, X-Forwarded-For).

Nothing here is built unless ``CLUSTER.REDIS`` is set (``SERVER.TRUSTED_PROXIES``
for ``proxy``); see docs/scale-out.md.
"""
