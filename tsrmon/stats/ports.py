from tsrmon.stats.sinks import *  # moved; lead removes after updating callers
