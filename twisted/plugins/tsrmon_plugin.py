"""The twistd plugin: ``twistd -n --pidfile= tsrmon --config etc/tsrmon.yml [--demo]``.

No ``__init__.py`` beside this file: ``twisted/plugins`` is a namespace that
twistd scans on ``sys.path``.
"""

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


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
