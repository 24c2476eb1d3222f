"""What an :class:`~tsrmon.live.engineio.EngineServer` uses when its owner
passes no policy or peer logger: any origin, no tokens, every line logged."""

from twisted.logger import LogLevel


class _AnyOrigin:
    any = True

    @staticmethod
    def allow(origin):
        return "*" if origin else None


class _NoTokens:
    @staticmethod
    def presented(authorization, query_token):
        return None  # nothing is checked, so nothing needs reading


class OpenPolicy:
    """CORS ``*`` and no API tokens (the conformance fixture, tests)."""

    tokens_required = False

    def __init__(self):
        self.cors = _AnyOrigin()
        self.tokens = _NoTokens()
        self.on_change = []

    def token_ok(self, token):
        return False


class LogPeerLog:
    """Warnings about one client, straight to a twisted ``Logger`` (no rate
    limit: an owner facing the internet passes a rate-limited one)."""

    def __init__(self, log):
        self.log = log

    def emit(self, level, source, reason, fmt, /, **kw):
        self.log.emit(level, fmt, **kw)
        return True

    def warn(self, source, reason, fmt, /, **kw):
        return self.emit(LogLevel.warn, source, reason, fmt, **kw)

    def info(self, source, reason, fmt, /, **kw):
        return self.emit(LogLevel.info, source, reason, fmt, **kw)
