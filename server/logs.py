"""Logging: one JSON object a line (or readable text), each carrying its request's id.

No log line carries a stack trace, SQL, a SOAP envelope or a credential: an exception is
shown as its type, a scrubbed message and the line of this project's code it came from.
(The module is not called ``logging`` so that it can never shadow the standard library's.)
"""

import logging
import re
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TextIO

from pythonjsonlogger.json import JsonFormatter

from graph.requests import current_request

_SQL = re.compile(r"\[(SQL|parameters):.*", re.DOTALL)  # SQLAlchemy appends both
_MARKUP = re.compile(r"<.*", re.DOTALL)  # an XML or HTML document, e.g. a SOAP envelope
_USERINFO = re.compile(r"\b([a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)
_BEARER = re.compile(r"\b(bearer)\s+\S+", re.IGNORECASE)
_API_TOKEN = re.compile(r"\bpgr_[A-Za-z0-9_-]+")  # also bare, as an authToken value
_MESSAGE_LIMIT = 300


def scrub(text: str) -> str:
    """Text from an exception, with what must never be logged cut out, on one line."""
    text = _SQL.sub("", text)
    text = _MARKUP.sub("", text)
    text = _USERINFO.sub(r"\1***@", text)
    text = _BEARER.sub(r"\1 ***", text)
    text = _API_TOKEN.sub("pgr_***", text)
    return " ".join(text.split())[:_MESSAGE_LIMIT]


_PROJECT = Path(__file__).resolve().parent.parent
_PACKAGES = ("graph", "resolvers", "soap", "models")


def _origin(traceback: TracebackType | None) -> str | None:
    """Where an exception was raised: the innermost line of this project's code."""
    found = None
    while traceback is not None:
        code = traceback.tb_frame.f_code
        path = Path(code.co_filename)
        if path.is_relative_to(_PROJECT) and path.relative_to(_PROJECT).parts[0] in _PACKAGES:
            found = f"{path.relative_to(_PROJECT)}:{traceback.tb_lineno} in {code.co_name}"
        traceback = traceback.tb_next
    return found


def describe(error: BaseException) -> dict[str, str]:
    """An exception as a log may show it: type, scrubbed message, origin; no trace."""
    kind = type(error)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    described = {"type": name, "message": scrub(str(error))}
    if where := _origin(error.__traceback__):
        described["where"] = where
    return described


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        info = current_request()
        if info is not None:
            record.request_id = info.id
        return True


class _Json(JsonFormatter):
    # python-json-logger puts what this returns in the record as is: a dict, not a string.
    def formatException(self, ei: ExcInfo) -> dict[str, str]:  # type: ignore[override]
        return describe(ei[1])

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        log_data.pop("stack_info", None)
        log_data.pop("color_message", None)  # uvicorn's copy of the message, with ANSI codes
        return log_data


class _Text(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " ")  # the exception, on the same line

    # Called only for records that carry an exception: narrower than logging's type,
    # which admits (None, None, None).
    def formatException(self, ei: ExcInfo) -> str:  # type: ignore[override]
        return " ".join(f"{key}={value}" for key, value in describe(ei[1]).items())

    def formatStack(self, stack_info: str) -> str:
        return ""


def configure_logging(
    level: str, style: Literal["json", "text"], stream: TextIO = sys.stderr
) -> None:
    """The root logger writes to ``stream``; so do uvicorn's, run with ``log_config=None``."""
    formatter: logging.Formatter
    if style == "json":
        formatter = _Json(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger", "exc_info": "error"},
            timestamp="time",
        )
    else:
        formatter = _Text(
            "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
            defaults={"request_id": "-"},
        )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(_RequestId())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
