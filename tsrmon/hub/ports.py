from tsrmon.hub.sinks import *  # moved; lead removes after updating callers
