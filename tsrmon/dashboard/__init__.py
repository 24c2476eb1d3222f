"""The built-in web dashboard: built files under ``static/`` served at ``/``."""

from tsrmon.dashboard.resource import dashboard_front, dashboard_resource

__all__ = ["dashboard_front", "dashboard_resource"]
