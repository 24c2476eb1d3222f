"""The machine hub: the machine registry (``registry.py``), the live bus
(``bus.py``) and the one place a DAQ frame fans out to the other rooms
(``machines.py``)."""

from tsrmon.hub.bus import LiveBus
from tsrmon.hub.machines import MachineHub
from tsrmon.hub.registry import Machine, MachineRegistry, Refused

__all__ = ["LiveBus", "Machine", "MachineHub", "MachineRegistry", "Refused"]
