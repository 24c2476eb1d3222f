# TSRMON_CONFIG=etc/tsrmon.yml twistd -n --pidfile= -y tsrmon.tac
#     (configuration from $TSRMON_CONFIG, else etc/tsrmon.yml; --pidfile= as tsrmon locks its folders itself)
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads (docs/analytics.md)

from twisted.application import service
from twisted.logger import ILogObserver

from tsrmon.logs import console_observer, twistd_options_from_argv
from tsrmon.service import service_or_exit

application = service.Application("tsrmon")
top = service_or_exit(
    os.environ.get("TSRMON_CONFIG") or "etc/tsrmon.yml",
    demo=os.environ.get("TSRMON_DEMO") == "1",
)
top.setServiceParent(application)
# The console honours LOGGER.LEVEL (twistd uses this component instead of its own stdout observer).
console = console_observer(top.rooms["logfile"].predicate, twistd_options_from_argv())
if console is not None:
    application.setComponent(ILogObserver, console)
