"""Hypothesis strategies for the bad-input campaign: bodies, headers and query strings that are
random, malformed, wrongly typed, huge, deeply nested or oddly encoded."""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Bounded and deterministic in CI; `M2M_FUZZ_RANDOM=1 M2M_FUZZ_EXAMPLES=2000` for a long hunt.
FUZZ_RANDOM = os.environ.get("M2M_FUZZ_RANDOM") == "1"


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=int(os.environ.get("M2M_FUZZ_EXAMPLES", examples)),
        deadline=None,
        derandomize=not FUZZ_RANDOM,
        database=None if not FUZZ_RANDOM else settings.default.database,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
            HealthCheck.filter_too_much,
        ],
    )


ODD_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "\u202eevil",
        "\ufeff",
        "\U0001f600" * 3,
        "e\u0301",
        "\u2028",
        "\u01c5",
        "\ufb01",
        "\U0001d518\U0001d52b",
        "\\",
        '"',
        "' OR 1=1 --",
        "../../etc/passwd",
        "%00",
        "%s%n",
        "${jndi:x}",
        "null",
        "true",
        "1e400",
        "-0",
        "NaN",
        "mch_",
        "mt_",
        "sk_",
        "ak_",
        "x" * 3000,
    ]
)
TEXT = st.one_of(st.text(max_size=40), ODD_TEXT)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 1, 0.5, 1e-300, 1.7e308, 2**63, -(2**63) - 1, 10**30]),
)
# Lone surrogates only travel inside JSON (as `\\ud800` escapes), never in a URL or header.
JSON_TEXT = st.one_of(TEXT, st.sampled_from(["\ud800", "a\udfffb", "\udc00\ud800"]))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, JSON_TEXT)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(JSON_TEXT, inner, max_size=4)
    ),
    max_leaves=12,
)

# Hand-made bytes that JSON parsers and web frameworks get wrong.
RAW_BODIES = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"{",
            b"}",
            b"[",
            b"{]",
            b'{"a":}',
            b'{"a" 1}',
            b"{'a': 1}",
            b'{"a":1,}',
            b"nul",
            b"NaN",
            b"Infinity",
            b"-Infinity",
            b'{"a": NaN}',
            b'{"a": 1e400}',
            b'{"a": -1e999}',
            b'{"a": "\\ud800"}',
            b'{"\\udfff": 1}',
            b'{"a": "\\u0000"}',
            b'"\\ud83d\\ude00"',
            b"\xff\xfe{\x00}\x00",
            b"\xef\xbb\xbf{}",
            b"\xc3\x28",
            b"\xed\xa0\x80",
            b"\x00" * 10,
            b'{"a":1}{"b":2}',
            b'{"a":1} trailing',
            b"1" * 5000,
            b"9" * 5000 + b"e9",
            b'{"a":' + b"1" * 5000 + b"}",
            b'{"a":"' + b"\\u" + b'"}',
            b'{"a":"\\x41"}',
            b'{"__proto__": {"admin": true}}',
            b'{"a": 1, "a": 2}',
        ]
    ),
    # Deep nesting: arrays, objects, and inside a known field.
    st.integers(min_value=50, max_value=30_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(min_value=50, max_value=5_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(min_value=50, max_value=20_000).map(
        lambda n: b'{"claims":' + b"[" * n + b"]" * n + b"}"
    ),
    # Huge: just under and well over the issuer's 64 KiB limit.
    st.sampled_from([60_000, 70_000, 300_000]).map(lambda n: b'{"claims":"' + b"x" * n + b'"}'),
)


def json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


def bodies(fields: set[str] | frozenset[str]) -> st.SearchStrategy[bytes | None]:
    """No body, a JSON object using the route's own fields with any values, any JSON, or raw
    malformed bytes."""
    own_fields = st.fixed_dictionaries(
        {}, optional={name: JSON_VALUES for name in sorted(fields)}
    ).map(json_bytes)
    return st.one_of(st.none(), own_fields, own_fields, JSON_VALUES.map(json_bytes), RAW_BODIES)


CONTENT_TYPES = st.sampled_from(
    [
        None,
        "application/json",
        "application/json",
        "text/plain",
        "application/json; charset=utf-16",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=zz",
        "application/xml",
        "application/json; charset=\u00ff",
        "*/*",
        "",
    ]
)

# Header values a real HTTP client can send: latin-1, no CR/LF.
HEADER_TEXT = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=80)


def authorizations(keys: list[str]) -> st.SearchStrategy[str | None]:
    """None (no header), a right key, or a header broken in every usual way."""
    key = st.sampled_from(keys)
    return st.one_of(
        st.none(),
        key.map(lambda k: f"Bearer {k}"),
        key.map(lambda k: f"Bearer {k}"),
        key.map(lambda k: f"bearer  {k}"),
        key.map(lambda k: f"Bearer {k} extra"),
        key.map(lambda k: f"Bearer {k}, Bearer {k}"),
        key.map(lambda k: f"Basic {k}"),
        key.map(lambda k: f"Bearer\t{k}"),
        key.map(lambda k: f"Bearer {k[:-1]}"),
        key.map(lambda k: f"Bearer {k}x"),
        key.map(lambda k: f"Bearer {k.upper()}"),
        st.sampled_from(
            [
                "",
                "Bearer",
                "Bearer ",
                "Bearer  ",
                "Token abc",
                "Bearer =",
                "Bearer ...",
                "Bearer " + "A" * 9000,
                "Bearer sk_test_",
                "Bearer ak_",
                "Bearer mt_",
                "Bearer eyJ.eyJ.x",
                "Bearer é",
                "Bearer \x00",
            ]
        ),
        HEADER_TEXT,
        HEADER_TEXT.map(lambda t: f"Bearer {t}"),
    )


def query_strings(names: set[str] | frozenset[str]) -> st.SearchStrategy[dict[str, str]]:
    values = st.one_of(
        TEXT, st.sampled_from(["1e400", "nan", "inf", "-1", "10.5", "1e3", "true", "maybe", "0x10"])
    )
    known = st.fixed_dictionaries({}, optional={name: values for name in sorted(names)})
    return st.one_of(known, st.dictionaries(TEXT, values, max_size=3))
