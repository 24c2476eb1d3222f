"""How the REST routes answer: JSON and CSV bodies and their headers, the
error body, and the client's address for log lines."""

import csv
import io
import re
import urllib.parse

import orjson

from tsrmon.web.gate import error_body

JSON = b"application/json"
CSV = b"text/csv; charset=utf-8"


def csv_bytes(header, rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def content_disposition(stem):
    ascii_name = re.sub(r"[^A-Za-z0-9_.-]", "_", stem) + ".csv"
    utf8 = urllib.parse.quote(stem + ".csv", safe="")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{utf8}".encode("ascii")


def client_address(request):
    """The client's address for log lines (a UNIX socket has no host)."""
    return str(getattr(request.getClientAddress(), "host", None) or "local")


def cell(v):
    """A CSV cell: empty for None."""
    return "" if v is None else v


class Answers:
    """Answer helpers of the route classes (mixed into ``RestAPI``)."""

    # -- helpers ---------------------------------------------------------
    @staticmethod
    def _json(request, obj, code=200):
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", JSON)
        # default=str: a room's health or history detail that is not JSON
        # (an exception, a path object) is shown as text rather than a 500.
        return orjson.dumps(obj, default=str)

    @staticmethod
    def _error(request, code, message, parameter):
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", JSON)
        return error_body(message, parameter)

    def _csv(self, request, stem, header, rows):
        request.setHeader(b"Content-Type", CSV)
        request.setHeader(b"Content-Disposition", content_disposition(stem))
        return csv_bytes(header, rows)
