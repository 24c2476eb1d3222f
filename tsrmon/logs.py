"""Logging with ``twisted.logger``: daily files named as the deployed server's.

The deployed server wrote ``log/<name>.YYYYMMDD.log`` (Python's
TimedRotatingFileHandler with suffix ``%Y%m%d.log``).  Twisted's
``DailyLogFile`` names rotated files ``<name>.YYYY_MM_DD``, so this module
keeps its own small observer: every day's lines go straight to that day's
file (local date of the event), and files older than LOGGER.RETENTION_DAYS
are pruned at start-up and at each day change.
"""

import datetime
import os
import re

from twisted.application import service
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEventAsClassicLogText,
    globalLogPublisher,
)
from zope.interface import implementer

from tsrmon.rooms import IReconfigurable

_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}


def log_level(name):
    return _LEVELS[name]


def stdout_observer():
    """For ``twistd --logger=tsrmon.logs.stdout_observer`` (the systemd unit):
    the journal gets info and above, as the dated files do by default."""
    import sys

    from twisted.logger import textFileLogObserver

    return FilteringLogObserver(textFileLogObserver(sys.stdout),
                                [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)])


def console_is_stdout(twistd_options):
    """Whether twistd, run with ``twistd_options`` (its ServerOptions), would
    log to stdout: ``-n`` without ``--logfile``/``--syslog``/``--logger``, or
    ``--logfile=-``."""
    if twistd_options is None:
        return False
    try:
        if twistd_options.get("logger") or twistd_options.get("syslog"):
            return False
        logfile = twistd_options.get("logfile")
        return logfile == "-" or (bool(twistd_options.get("nodaemon")) and not logfile)
    except AttributeError:
        return False


def console_observer(predicate, twistd_options, stream=None):
    """The console observer for twistd, filtered by ``predicate`` (the
    LogFileService's LOGGER.LEVEL predicate, so SIGHUP changes both), or None
    when twistd does not log to stdout (``--logfile``, ``--syslog`` and
    ``--logger`` keep twistd's own choice).

    twistd asks the application for an ``ILogObserver`` component before it
    builds its own, unfiltered, stdout observer; the plugin and the .tac set
    this one there."""
    if not console_is_stdout(twistd_options):
        return None
    import sys

    from twisted.logger import textFileLogObserver

    return FilteringLogObserver(textFileLogObserver(stream or sys.stdout), [predicate])


def twistd_options_from_argv(argv=None):
    """twistd's options re-read from the command line (for the .tac, which
    is not handed them), or None when this is not twistd."""
    import sys

    argv = list(sys.argv if argv is None else argv)
    if not argv or not os.path.basename(argv[0]).startswith("twistd"):
        return None
    from twisted.python import usage
    from twisted.scripts.twistd import ServerOptions

    options = ServerOptions()
    try:
        options.parseOptions(argv[1:])
    except (usage.UsageError, SystemExit):
        return None
    return options


class DatedLogFile:
    """An observer writing ``<folder>/<name>.YYYYMMDD.log``."""

    def __init__(self, folder, name, retention_days, tz=None):
        self.folder = folder
        self.name = name
        self.retention_days = retention_days
        self.tz = tz
        self._day = None
        self._file = None
        self._pattern = re.compile(re.escape(name) + r"\.(\d{8})\.log(\.gz)?$")

    def path_for(self, day):
        return os.path.join(self.folder, f"{self.name}.{day}.log")

    def __call__(self, event):
        text = formatEventAsClassicLogText(event)
        if text is None:
            return
        when = datetime.datetime.fromtimestamp(event.get("log_time") or 0, self.tz)
        day = when.strftime("%Y%m%d")
        if day != self._day:
            self._open(day)
        self._file.write(text)
        self._file.flush()

    def _open(self, day):
        self.close()
        os.makedirs(self.folder, exist_ok=True)
        self._file = open(self.path_for(day), "a", encoding="utf-8")
        self._day = day
        self.prune(day)

    def prune(self, today):
        if not self.retention_days:
            return
        cutoff = (datetime.datetime.strptime(today, "%Y%m%d")
                  - datetime.timedelta(days=self.retention_days)).strftime("%Y%m%d")
        try:
            names = os.listdir(self.folder)
        except OSError:
            return
        for entry in names:
            m = self._pattern.match(entry)
            if m and m.group(1) < cutoff:
                try:
                    os.remove(os.path.join(self.folder, entry))
                except OSError:
                    pass

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None
            self._day = None


@implementer(IReconfigurable)
class LogFileService(service.Service):
    """Adds the dated file observer (filtered by LOGGER.LEVEL) while running."""

    name = "logfile"

    def __init__(self, config, publisher=None):
        import zoneinfo

        self.config = config
        self.publisher = publisher or globalLogPublisher
        logger = config.logger
        self.predicate = LogLevelFilterPredicate(defaultLogLevel=log_level(logger.level))
        self.file = DatedLogFile(logger.path, logger.name, logger.retention_days,
                                 zoneinfo.ZoneInfo(config.time.zone))
        self.observer = FilteringLogObserver(self.file, [self.predicate])

    def set_level(self, name):
        self.predicate.setLogLevelForNamespace("", log_level(name))

    def reconfigure(self, config):
        """SIGHUP: a new LOGGER.LEVEL takes effect at once."""
        self.set_level(config.logger.level)

    def startService(self):
        super().startService()
        self.publisher.addObserver(self.observer)

    def stopService(self):
        super().stopService()
        self.publisher.removeObserver(self.observer)
        self.file.close()
