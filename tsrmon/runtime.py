# Moved: OrderedMultiService to tsrmon.ordered, ProcessExit and tune_gc_for_a_daemon to tsrmon.daemon,
# next_tick_delay to tsrmon.ticks.  The lead removes this file after updating callers.
from tsrmon.daemon import ProcessExit, tune_gc_for_a_daemon  # noqa: F401
from tsrmon.ordered import OrderedMultiService  # noqa: F401
from tsrmon.ticks import next_tick_delay  # noqa: F401
