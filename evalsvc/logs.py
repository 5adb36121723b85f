"""Log lines as JSON objects, one per line, for log shippers (``LOG_FORMAT=json``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson


class JSONFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...}``, plus a record's ``fields`` (the request
    log's method, path, status...) and the traceback of an exception as ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class NotUnavailable(logging.Filter):
    """Drops ``django.request``'s line for a 503: the service answered it on purpose (a
    dependency missed its deadline), the request log has the request and the dependency's own
    warning says why. Other 5xx (a 500's traceback) are kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "status_code", None) != 503


class WithoutRunserverRequestLines(logging.Filter):
    """Drops the development server's line for each request it served (``django.server``'s
    ``"GET /path HTTP/1.1" 200 38``): ``evalsvc.request`` has one for each already. Its other
    messages (a request it could not parse, HTTPS sent to it, a broken pipe) pass."""

    REQUEST_LINE = '"%s" %s %s'  # http.server's log_request format

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == self.REQUEST_LINE and hasattr(record, "status_code"))
