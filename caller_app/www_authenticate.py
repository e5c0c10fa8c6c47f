"""Read the receiver's RFC 6750 `WWW-Authenticate: Bearer ...` challenge into a dict."""

from __future__ import annotations

import re

# auth-param = token "=" ( token / quoted-string ), RFC 9110 section 11.2
_PARAM = re.compile(r'([A-Za-z0-9_\-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))')


def parse_bearer_challenge(header: str) -> dict[str, str]:
    """The parameters of a Bearer challenge (`realm`, `error`, `error_description`...);
    an empty dict when the header is missing or uses another scheme."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return {}
    found = {}
    for match in _PARAM.finditer(params):
        name, quoted, bare = match.groups()
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        found.setdefault(name.lower(), value)
    return found
