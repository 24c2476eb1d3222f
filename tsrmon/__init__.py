"""tsrmon: a Twisted daemon that monitors industrial machines."""

__version__ = "0.1.0"
