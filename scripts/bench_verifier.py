"""The benchmark's in-process part: what one JWT verification costs in our verifier against a bare
`jwt.decode` with a preloaded key (no HTTP, no network), timed in interleaved rounds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from receiver_app.jwks import JwksCache
from receiver_app.verifier import M2MVerifier

ISSUER = "http://127.0.0.1:8780"  # only a claim value: nothing is contacted
CALLER_ID = "mch_benchcaller0000000000000000"
RECEIVER_ID = "mch_benchreceiver00000000000000"
KID = "ins_bench"


@dataclass(frozen=True)
class VerifyCosts:
    """Median seconds per call: bare decode, our verifier checking the signature, a memo hit."""

    bare: float
    checked: float
    memo_hit: float


def time_per_call(fn: Callable[[], Any], calls: int) -> float:
    """Seconds per call over one timed loop."""
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls


def bench_verifier(calls: int, rounds: int) -> VerifyCosts:
    """Median per-call cost of `M2MVerifier.verify` on an RS256-2048 JWT, with the memo off and
    on, and of a bare `jwt.decode` with the key preloaded, interleaved round by round."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": CALLER_ID,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "jti": "mt_" + "0" * 32,
        "aud": [RECEIVER_ID],
        "scopes": RECEIVER_ID,
    }
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID, "typ": "JWT"})
    public_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwks = {"keys": [{**public_jwk, "kid": KID, "alg": "RS256", "use": "sig"}]}

    keys = JwksCache(lambda: jwks)  # preloaded by the warm-up call below, no network

    def verifier(jwt_cache_seconds: float) -> M2MVerifier:
        return M2MVerifier(
            ISSUER,
            "ak_bench",  # never used: no opaque token here
            RECEIVER_ID,
            jwt_issuer=ISSUER,
            jwks_url="unused",
            jwt_cache_seconds=jwt_cache_seconds,
            keys=keys,
        )

    checking = verifier(0)  # every call checks the signature and the claims
    remembering = verifier(60)
    public_key = key.public_key()

    calls_by_name: dict[str, Callable[[], Any]] = {
        "bare": lambda: jwt.decode(
            token, public_key, algorithms=["RS256"], audience=RECEIVER_ID, issuer=ISSUER
        ),
        "checked": lambda: checking.verify(token),
        "memo_hit": lambda: remembering.verify(token),
    }
    for fn in calls_by_name.values():  # warm up: keys loaded, the token remembered
        fn()
    samples: dict[str, list[float]] = {name: [] for name in calls_by_name}
    for _ in range(rounds):
        for name, fn in calls_by_name.items():
            samples[name].append(time_per_call(fn, calls))
    return VerifyCosts(**{name: statistics.median(values) for name, values in samples.items()})
