"""Structured logs (structlog): JSON lines unless the log goes to a terminal; secrets redacted on the way out.

Tracebacks are rendered as plain text without local variables (a login's locals hold the password), and every
event, stdlib records included, passes `redact` before it is written."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from gatherly.kernel.tracing import add_trace_ids

REDACTED = "[redacted]"
# Field names whose values are secrets, wherever they appear (nested too): password, new_password, access_token,
# refresh_token, authorization, cookie, set-cookie, smtp_password, client_secret…
SECRET_KEY = re.compile(r"pass(word|wd)?|token|authorization|cookie|secret|api[_-]?key|private[_-]?key", re.I)
# Secrets inside free text (an exception message, a repr): bearer tokens, passwords in URLs, key=value pairs.
SECRET_TEXT = (
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*"), r"\1 " + REDACTED),
    (re.compile(r"(?i)([a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^@\s]+@"), r"\1" + REDACTED + "@"),
    (
        re.compile(
            r"(?i)((?:password|passwd|token|secret|authorization|cookie)\w*['\"]?\s*[=:]\s*['\"]?)[^'\"\s,;&}]+"
        ),
        r"\1" + REDACTED,
    ),
)


def redact_text(text: str) -> str:
    for pattern, replacement in SECRET_TEXT:
        text = pattern.sub(replacement, text)
    return text


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: REDACTED if isinstance(k, str) and SECRET_KEY.search(k) else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(item) for item in value)
    return value


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: secret fields masked, secrets in text masked (run after the traceback is formatted)."""
    for key, value in list(event.items()):
        if SECRET_KEY.search(key):
            event[key] = REDACTED
        elif key != "exc_info":
            event[key] = _redact(value)
    return event


def configure_logging(level: str = "INFO", json: bool | None = None, *, stream: Any = None) -> None:
    """`json=None`: JSON lines when the log stream is not a terminal (a container, a file, a collector)."""
    stream = stream or sys.stderr
    as_json = json if json is not None else not stream.isatty()
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Plain traceback text: no local variables, and `redact` below sees all of it.
        structlog.processors.format_exc_info,
        redact,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    # Records of the standard library (uvicorn, SQLAlchemy…) take the same way out.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
