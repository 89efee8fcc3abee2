"""Structured logs with dotted event names (``alarm.stored``, ``import.committed``)."""

from __future__ import annotations

import logging
import os
import sys

import structlog


def json_wanted() -> bool:
    """JSON lines for a service (stderr not a terminal, or ``HYT_LOG_JSON=1``), readable lines
    for a person at a terminal; ``HYT_LOG_JSON=0`` forces the readable ones."""
    choice = os.environ.get("HYT_LOG_JSON", "auto")
    return choice == "1" or (choice == "auto" and not sys.stderr.isatty())


def configure_logging(level: str | None = None) -> None:
    level_name = (level or os.environ.get("HYT_LOG_LEVEL", "INFO")).upper()
    logging.basicConfig(stream=sys.stderr, level=level_name, format="%(message)s", force=True)
    # Alembic narrates every step at INFO; the operator only needs to hear about problems.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *_renderers(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level_name)),
        cache_logger_on_first_use=True,
    )


def _renderers() -> list[structlog.typing.Processor]:
    if json_wanted():
        # One line per event with the traceback as text: a log shipper takes it as it is.
        return [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ]
    # The plain traceback, not rich's: rich highlights source code for every exception, which
    # took the event loop ~50 ms an error and, in a SCAIP storm where each message that could not
    # be stored logged one, stalled the call handler for minutes (bench/storm.py, 2026-11-28).
    return [
        structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    ]
