"""The service's structured logs: one JSON object per line on stderr (dacp.service and uvicorn's loggers)."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import datetime, timezone
from typing import Any

import orjson

from rules.values import utc_text

log = logging.getLogger("dacp.service")


class JsonFormatter(logging.Formatter):
    """``ts``, ``level``, ``logger``, ``msg``, then the record's ``fields`` (see ``event``)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": utc_text(datetime.fromtimestamp(record.created, timezone.utc), "milliseconds"),
                               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exc"] = "".join(traceback.format_exception(*record.exc_info))[-4000:]
        try:  # orjson: a third of json's time on the request line every request writes
            return orjson.dumps(out, default=str).decode("utf-8")
        except TypeError:  # what orjson refuses (an integer beyond 64 bits): json's answer, as before
            return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(stream: Any = None, level: int = logging.INFO) -> None:
    """JSON lines on stderr for dacp.service and uvicorn's own loggers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("dacp.service", "uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers = [handler]
        lg.setLevel(level)
        lg.propagate = False


def event(level: int, msg: str, **fields: Any) -> None:
    """Log ``msg`` with ``fields`` as top-level keys of its JSON line."""
    log.log(level, msg, extra={"fields": fields})
