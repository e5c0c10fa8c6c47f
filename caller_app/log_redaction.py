"""Keep tokens and keys out of the HTTP servers' own log lines.

The Flask development server (logger `werkzeug`) logs every request line whole, and gunicorn's
access log (`gunicorn.access`, when enabled) logs it with the Referer: a token sent in a query
string or a path would land in the log. A filter on those loggers drops query strings and
blanks anything shaped like a token or key. The app folders never import each other, so each
has this same small file.
"""

from __future__ import annotations

import logging
import re

SERVER_LOGGERS = ("werkzeug", "gunicorn.access", "gunicorn.error")
_QUERY = re.compile(r"\?[^\s\"'\x1b]*")
_SECRET = re.compile(
    r"eyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){0,2}"  # a JWT, or a piece of one
    r"|\b(?:sk|ak)_[A-Za-z0-9_]+"  # an instance or machine secret key
    r"|mt_[A-Za-z0-9_-]{33,}"  # an opaque token (longer than a token id, mt_ + 32 hex)
)


def redact(text: str) -> str:
    """`text` with every query string and every token- or key-shaped string blanked."""
    return _SECRET.sub("[redacted]", _QUERY.sub("?[redacted]", text))


class RedactSecrets(logging.Filter):
    """Rewrites each record's message with `redact` (the arguments are merged in first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


def install() -> None:
    """Add the filter to the server loggers once per process (create_app may run again)."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
