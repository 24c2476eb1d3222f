"""The twistd plugin: ``twistd -n --pidfile= tsrmon --config etc/tsrmon.yml [--demo]``.

No ``__init__.py`` beside this file: ``twisted/plugins`` is a namespace that
twistd scans on ``sys.path``.
"""

import os

# One BLAS thread: the daemon reduces on one reactor thread, and threaded
# OpenBLAS only contends with it (docs/analytics.md).  Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from twisted.application.service import IServiceMaker  # noqa: E402
from twisted.plugin import IPlugin  # noqa: E402
from twisted.python import usage  # noqa: E402
from zope.interface import implementer  # noqa: E402


class Options(usage.Options):
    synopsis = "[--config PATH] [--demo]"
    optParameters = [
        ["config", "c", None,
         "YAML configuration (default: $TSRMON_CONFIG, resources/config.yml, etc/tsrmon.yml)"],
    ]
    optFlags = [
        ["demo", None, "start simulated DAQs in-process (LIVE.INTERVAL 1 s)"],
    ]


@implementer(IServiceMaker, IPlugin)
class TsrmonServiceMaker:
    tapname = "tsrmon"
    description = "tsrmon: DAQ ingest, statistics, REST and Socket.IO for machine monitoring"
    options = Options

    def makeService(self, options):
        from tsrmon.logs import console_observer
        from tsrmon.service import service_or_exit

        top = service_or_exit(options["config"], demo=bool(options["demo"]))
        # The console honours LOGGER.LEVEL (twistd's parent options say where it logs).
        top.console_observer = console_observer(top.rooms["logfile"].predicate,
                                                getattr(options, "parent", None))
        return top


serviceMaker = TsrmonServiceMaker()
