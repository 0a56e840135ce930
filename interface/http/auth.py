"""Bearer JWTs in, ``domain.identity.Actor`` out.

A token is accepted only when its signature, expiry and audience (and issuer, when one is
configured) check out, with the one algorithm the settings allow: HS256 with a shared
secret, or RS256 with a public key (PEM, or a JWKS document whose key the token's ``kid``
names). ``alg: none`` and any other algorithm are refused. With neither key configured the
service runs with a development HS256 key kept under ``data_dir`` — and only then does
``skillbase-workflow token`` mint tokens.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from application.mail.address import address_problem
from application.settings import Settings
from application.text import storable_text
from domain.identity import Actor, group_key

DEV_KEY_FILE = "dev-jwt-hs256.key"
PUBLIC_PATHS = ["^/health$", "^/ready$", "^/schema"]
MAX_TOKEN_CHARS = 16 * 1024
MAX_SUB_CHARS = 255  # OpenID Connect's limit; a user id is kept in the read models' indexes
LEEWAY = 30  # seconds of clock skew allowed on exp / nbf / iat
# Verified tokens are remembered (until they expire) so a client's every request does not pay
# the signature check again: at most this many, each at most CACHED_TOKEN_CHARS long.
CACHED_TOKENS = 2048
CACHED_TOKEN_CHARS = 4096
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="skillbase-workflow"'}


@dataclass(frozen=True)
class Verifier:
    """Checks a token and turns its claims into an ``Actor``."""

    algorithm: str
    key: Any  # the secret, a public key, or a PyJWKSet
    audience: str
    issuer: str
    admin_group: str
    development: bool = False
    # token -> (actor, not before, expires): only tokens that passed every check.
    _verified: dict[str, tuple[Actor, float, float]] = field(default_factory=dict, compare=False, repr=False)

    def actor(self, token: str) -> Actor:
        if len(token) > MAX_TOKEN_CHARS:
            raise NotAuthorizedException("the bearer token is too long", headers=CHALLENGE)
        known = self._verified.get(token)
        if known is not None:
            actor, not_before, expires = known
            if not_before <= time.time() < expires:
                return actor
            self._verified.pop(token, None)  # expired since: the full check below says so
        try:
            claims = jwt.decode(
                token,
                self._key_for(token),
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer or None,
                options={"require": ["exp", "sub"]},
                leeway=LEEWAY,
            )
        except jwt.PyJWTError as error:
            raise NotAuthorizedException(f"the bearer token was refused: {error}", headers=CHALLENGE) from None
        actor = actor_from_claims(claims, self.admin_group)
        self._remember(token, actor, claims)
        return actor

    def _remember(self, token: str, actor: Actor, claims: dict[str, Any]) -> None:
        if len(token) > CACHED_TOKEN_CHARS:
            return
        not_before = claims.get("nbf", claims.get("iat", 0))
        not_before = float(not_before) - LEEWAY if isinstance(not_before, (int, float)) else 0.0
        while len(self._verified) >= CACHED_TOKENS:
            try:  # the oldest first; another thread may have taken it already
                self._verified.pop(next(iter(self._verified)))
            except (KeyError, StopIteration, RuntimeError):
                break
        self._verified[token] = (actor, not_before, float(claims["exp"]) + LEEWAY)

    def _key_for(self, token: str) -> Any:
        if not isinstance(self.key, jwt.PyJWKSet):
            return self.key
        kid = jwt.get_unverified_header(token).get("kid")
        for jwk in self.key.keys:
            if jwk.key_id == kid:
                return jwk.key
        raise jwt.InvalidKeyError(f"no key with kid {kid!r}")


def actor_from_claims(claims: dict[str, Any], admin_group: str) -> Actor:
    """The actor a verified token names; a ``sub`` that is blank, holds NUL or an unpaired
    surrogate or is longer than 255 characters refuses the token (401), and so does a group
    name with a NUL or an unpaired surrogate (the lists of the user's tasks failed on it).

    ``email``: absent, empty or not a string -> no email. A string is kept only when it is
    exactly one address that reads back as itself (``address_problem``, the mail worker's
    own check): a control character (CR/LF would reach the headers of emails sent to the
    learner), whitespace, a comma, a comment, a display name or anything but one ``@``
    refuses the whole token (401, "the token's email claim is not an address") rather than
    dropping the claim silently, so a broken identity provider shows up at once; and
    ``lin@exa mple.org`` is never read as ``lin@example.org``, another learner's mailbox.
    """
    sub, email = claims.get("sub"), claims.get("email")
    if not isinstance(sub, str) or not sub.strip() or not storable_text(sub) or len(sub) > MAX_SUB_CHARS:
        raise NotAuthorizedException("the token has no usable 'sub'", headers=CHALLENGE)
    if isinstance(email, str) and email and address_problem(email):
        raise NotAuthorizedException("the token's email claim is not an address", headers=CHALLENGE)
    groups = claims.get("groups", claims.get("roles", []))
    if isinstance(groups, str):  # one group: splitting "Course admin" at the space made an admin
        groups = [groups]
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise NotAuthorizedException("'groups' must be a list of strings", headers=CHALLENGE)
    if not all(storable_text(g) for g in groups):  # every list of the user's tasks would fail on it
        raise NotAuthorizedException("'groups' holds a name with a NUL or an unpaired surrogate", headers=CHALLENGE)
    return Actor(
        user_id=sub,
        email=email if isinstance(email, str) and email else None,
        groups=frozenset(group_key(g) for g in groups if g.strip()),
        admin_group=admin_group,
    )


def verifier_from(settings: Settings) -> Verifier:
    common = {"audience": settings.jwt_audience, "issuer": settings.jwt_issuer, "admin_group": settings.admin_group}
    if settings.jwt_public_key:
        text = settings.jwt_public_key.strip()
        key = jwt.PyJWKSet.from_json(text) if text.startswith("{") else text
        return Verifier("RS256", key, **common)
    if settings.jwt_hs256_secret:
        return Verifier("HS256", settings.jwt_hs256_secret, **common)
    return Verifier("HS256", development_key(settings), development=True, **common)


def development_key(settings: Settings) -> str:
    """The development HS256 key under ``data_dir``, created (mode 0600) on first use."""
    path = Path(settings.data_dir) / DEV_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(32))
    return path.read_text().strip()


def mint_token(
    settings: Settings, user: str, groups: list[str], email: str | None = None, ttl_seconds: int = 12 * 3600
) -> str:
    """A development token; refused unless the service runs with the development key."""
    verifier = verifier_from(settings)
    if not verifier.development:
        raise RuntimeError("a signing key is configured: tokens come from the identity provider")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user, "groups": groups, "aud": settings.jwt_audience,
                              "iat": now, "exp": now + ttl_seconds}
    if email:
        claims["email"] = email
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, verifier.key, algorithm="HS256")


class BearerAuthentication(AbstractAuthenticationMiddleware):
    """Every route but health, readiness and the OpenAPI document needs a valid token."""

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthorizedException("send 'Authorization: Bearer <token>'", headers=CHALLENGE)
        verifier: Verifier = connection.app.state.verifier
        return AuthenticationResult(user=verifier.actor(token.strip()), auth=None)


def describe(verifier: Verifier) -> str:
    return json.dumps({"algorithm": verifier.algorithm, "audience": verifier.audience,
                       "development_key": verifier.development})
