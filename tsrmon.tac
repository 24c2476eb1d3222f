# twistd -ny tsrmon.tac    (configuration from $TSRMON_CONFIG, else etc/tsrmon.yml)
import os

from twisted.application import service

from tsrmon.service import service_or_exit

application = service.Application("tsrmon")
service_or_exit(
    os.environ.get("TSRMON_CONFIG") or "etc/tsrmon.yml",
    demo=os.environ.get("TSRMON_DEMO") == "1",
).setServiceParent(application)
