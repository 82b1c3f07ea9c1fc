"""JSON logs, one object per line, on stderr; and the terminal progress line."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import orjson

LOGGER_NAME = "ingest_worker"
log = logging.getLogger(LOGGER_NAME)

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _RESERVED and not k.startswith("_"):
                obj[k] = v
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(obj, default=str).decode()


def setup_logging(
    level: str = "INFO", stream: TextIO | None = None, logger: str = LOGGER_NAME
) -> None:
    """JSON lines for ``logger`` and below: the worker's by default, every logger with ``""``
    (the operator, whose kopf, aiohttp and client loggers share one format with the worker's)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger(logger)
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def fmt_duration(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{seconds:.1f}s"


class Progress:
    """A one-line progress display (rate, ETA), drawn only when stderr is a terminal."""

    def __init__(self, total_bytes: int | None, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.total = total_bytes
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, rows: int, nbytes: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < 0.5):
            return
        self.last = now
        elapsed = max(now - self.start, 1e-6)
        rate = rows / elapsed
        line = f"{rows:,} rows  {rate:,.0f} rows/s  {nbytes / elapsed / 1e6:.1f} MB/s"
        if self.total:
            pct = min(nbytes / self.total, 1.0)
            eta = (self.total - nbytes) / (nbytes / elapsed) if nbytes else 0.0
            line += f"  {pct:6.1%}  ETA {fmt_duration(eta)}"
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
