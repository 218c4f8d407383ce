"""Where log records go: the one logging setup every entry point calls (``cairn``,
``cairn-edge``, the demo), and the filter that keeps credentials out of every line.

Libraries log through ``logging.getLogger(__name__)``; only an entry point calls
:func:`configure_logging`, which sends records to stderr as readable text, or (``json``) one
JSON object per line::

    {"time": "2026-12-05T06:01:02.345678+00:00", "level": "info",
     "logger": "cairn_gateway.daemon", "message": "round 3: ...", "devices": 2, ...}

Fields given with ``extra={...}`` to a log call are added to the object (the text format shows
only the message, which says the same in words). A traceback is one ``exception`` field.

Credentials never reach a line: every secret a config names (an MQTT password, an API or
Grafana token, a seed, ...) is registered with :func:`add_secret` when it is read, and both
formatters replace it by ``***`` wherever it is in the line (message, arguments, extra fields,
traceback); the password of a URL's ``user:password@`` part is replaced wherever one appears.
The formatters redact what they write and change no record, so records of every logger
(amqtt's and paho's too) are redacted, and other handlers see the records as logged.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from datetime import UTC, datetime
from typing import Any

__all__ = ["LEVELS", "JsonLinesFormatter", "TextFormatter", "add_secret", "configure_logging",
           "quiet_tracebacks", "redact_text"]

LEVELS = (logging.WARNING, logging.INFO, logging.DEBUG)
"""The root level for ``-v`` counted 0, 1, 2 (or more)."""

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
MIN_SECRET = 4  # shorter "secrets" would blank common words: refused, not registered

# scheme://user:password@host -> scheme://user:***@host (any scheme, any text around it)
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s/@:]*:)[^\s/@]+@")
# the fields of a LogRecord itself: anything else in its __dict__ came with extra=
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}

_secrets: set[str] = set()
_quiet: dict[str, int] = {}  # logger name -> the highest level its records keep
_lock = threading.Lock()


def add_secret(secret: str | bytes | None) -> None:
    """Never log ``secret`` (text, or bytes: their hex and text forms) from now on."""
    if secret is None:
        return
    forms = [secret.hex(), secret.decode("utf-8", "replace")] if isinstance(secret, bytes) \
        else [secret]
    with _lock:
        _secrets.update(f.strip() for f in forms if len(f.strip()) >= MIN_SECRET)


def redact_text(text: str) -> str:
    """``text`` with every registered secret and every URL password replaced by ``***``."""
    text = _USERINFO.sub(r"\1***@", text)
    for secret in sorted(_secrets, key=len, reverse=True):  # (a longer one may hold a shorter)
        if secret in text:
            text = text.replace(secret, "***")
    return text


class TextFormatter(logging.Formatter):
    """The readable format, every registered secret and URL password redacted from the whole
    line (message, arguments, traceback)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


class _Quiet(logging.Filter):
    """Applies :func:`quiet_tracebacks` (on the handler: records of every logger pass it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _quieted(record)


class JsonLinesFormatter(logging.Formatter):
    """Each record as one JSON object on one line: time, level, logger, message, the record's
    extra fields, and ``exception`` (the traceback's text) when there is one; every registered
    secret and URL password redacted from each text in it."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: log what was given
            message = f"{record.msg!r} {record.args!r}"
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact_text(message),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in line:
                line[key] = redact_text(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exception"] = redact_text(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact_text(record.exc_text)
        if record.stack_info:
            line["stack"] = redact_text(record.stack_info)
        return redact_text(json.dumps(line, ensure_ascii=False, default=str))


class _StderrHandler(logging.StreamHandler[Any]):
    """Writes to whatever ``sys.stderr`` is at the time of each record (as
    ``logging.lastResort``), so click's test runner captures it."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def quiet_tracebacks(name: str, level: int = logging.INFO) -> None:
    """Log the records of logger ``name`` and its children (a library: amqtt) without
    tracebacks and at most at ``level``: what it reports still shows at that level (``-v``
    for info), never a traceback in a live view."""
    with _lock:
        _quiet[name] = level


def _quieted(record: logging.LogRecord) -> bool:
    """Apply :func:`quiet_tracebacks` to ``record``; False when it is now below the level
    logged."""
    for name, level in _quiet.items():
        if record.name == name or record.name.startswith(name + "."):
            record.exc_info, record.exc_text = None, None
            if record.levelno > level:
                record.levelno, record.levelname = level, logging.getLevelName(level)
            return record.levelno >= logging.getLogger().getEffectiveLevel()
    return True


def configure_logging(log_format: str = "text", verbosity: int = 0) -> None:
    """Send log records to stderr, as ``text`` or ``json`` lines, at the level of ``-v``
    counted ``verbosity`` times, through the redaction filter. Replaces what an earlier call
    installed (not other handlers)."""
    if log_format not in ("text", "json"):
        raise ValueError(f"log format {log_format!r} is not text or json")
    handler = _StderrHandler()
    handler.addFilter(_Quiet())
    handler.setFormatter(JsonLinesFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[min(verbosity, len(LEVELS) - 1)])
