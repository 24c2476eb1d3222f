"""The machine hub: the one place a DAQ frame fans out to the other rooms."""

from tsrmon.hub.machines import Machine, MachineHub, Refused

__all__ = ["Machine", "MachineHub", "Refused"]
