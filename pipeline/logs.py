"""Logging for the project's own loggers only (libraries keep theirs). Records never carry
payloads: code logs reasons and topic[partition]@offset, and this filter drops any message that
looks like it carries raw bytes or key material, as a last line of defence.
"""
from __future__ import annotations

import logging
import re
import sys

_SUSPICIOUS = re.compile(r"(\\x[0-9a-f]{2}){8,}|[A-Za-z0-9+/]{64,}={0,2}|\b[0-9a-f]{64,}\b")


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if _SUSPICIOUS.search(msg):
            record.msg = _SUSPICIOUS.sub("[redacted]", msg)
            record.args = ()
        return True


def setup(level: str = "INFO") -> None:
    root = logging.getLogger("pipeline")
    if getattr(root, "_flow_configured", False):
        root.setLevel(level.upper())
        return
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    h.addFilter(RedactingFilter())
    root.addHandler(h)
    root.setLevel(level.upper())
    root.propagate = False
    root._flow_configured = True  # type: ignore[attr-defined]
