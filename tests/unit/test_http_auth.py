"""Token checks and problem mapping, without a database."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from litestar.exceptions import NotAuthorizedException

from application.settings import load_settings
from domain import errors
from interface.http.auth import actor_from_claims, development_key, mint_token, verifier_from
from interface.http.commands import check_if_match
from interface.http.problems import PreconditionFailed, handle


def claims(**extra: object) -> dict[str, object]:
    return {"sub": "u1", "aud": "skillbase", "exp": int(time.time()) + 60, **extra}


def test_hs256_tokens_map_to_actors(tmp_path: Path) -> None:
    settings = load_settings({}, data_dir=str(tmp_path), jwt_hs256_secret="s" * 32)
    token = jwt.encode(claims(email="u@x.org", groups=["Assessor", "admin"]), "s" * 32, "HS256")
    actor = verifier_from(settings).actor(token)
    assert (actor.user_id, actor.email, actor.groups, actor.is_admin) == ("u1", "u@x.org", {"assessor", "admin"}, True)


def test_roles_are_groups_too() -> None:
    assert actor_from_claims(claims(roles=["a", "B"]), "admin").groups == {"a", "b"}
    assert actor_from_claims(claims(roles="Assessor"), "admin").groups == {"assessor"}


@pytest.mark.parametrize("token_claims", [
    claims(exp=int(time.time()) - 3600), claims(aud="other"), {k: v for k, v in claims().items() if k != "sub"},
    claims(groups=[1, 2]),
])
def test_bad_claims_are_refused(tmp_path: Path, token_claims: dict[str, object]) -> None:
    settings = load_settings({}, data_dir=str(tmp_path), jwt_hs256_secret="s" * 32)
    with pytest.raises(NotAuthorizedException):
        verifier_from(settings).actor(jwt.encode(token_claims, "s" * 32, "HS256"))


def test_rs256_refuses_hs256_and_none(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    verifier = verifier_from(load_settings({}, data_dir=str(tmp_path), jwt_public_key=public))
    assert verifier.actor(jwt.encode(claims(), key, "RS256")).user_id == "u1"
    for forged in (jwt.encode(claims(), "x" * 32, "HS256"),
                   jwt.encode(claims(), None, "none")):
        with pytest.raises(NotAuthorizedException):
            verifier.actor(forged)


def test_development_key_lives_under_data_dir_and_only_it_mints(tmp_path: Path) -> None:
    settings = load_settings({}, data_dir=str(tmp_path))
    token = mint_token(settings, "u1", ["assessor"])
    assert verifier_from(settings).actor(token).groups == {"assessor"}
    assert (tmp_path / "dev-jwt-hs256.key").stat().st_mode & 0o777 == 0o600
    assert development_key(settings) == development_key(settings)
    with pytest.raises(RuntimeError):
        mint_token(load_settings({}, data_dir=str(tmp_path), jwt_hs256_secret="s" * 32), "u1", [])


def test_if_match() -> None:
    assert check_if_match('"3"', 3) is True
    assert check_if_match('W/"3", "4"', 4) is True
    assert check_if_match("*", 9) is False  # nothing to hold the save to
    with pytest.raises(PreconditionFailed):
        check_if_match('"2"', 3)


@pytest.mark.parametrize(("error", "status"), [
    (errors.InvalidInput("bad", [errors.Problem("$.a", "no")]), 422), (errors.NotAllowed("no"), 403),
    (errors.NotFound("gone"), 404), (errors.Conflict("taken"), 409), (errors.TooLarge("big"), 413),
    (errors.Unsupported("what"), 415), (errors.Unavailable("down"), 503), (PreconditionFailed("v"), 412),
    (errors.VersionChanged("moved on"), 412),
])
def test_errors_map_to_problems(error: Exception, status: int) -> None:
    response = handle(None, error)  # type: ignore[arg-type]
    assert response.status_code == status and response.media_type == "application/problem+json"
    assert response.content.status == status and response.content.type.startswith("/problems/")
    if status == 422:
        assert response.content.errors[0].path == "$.a"
    if status == 503:
        assert response.headers["Retry-After"] == "5"


@pytest.mark.parametrize("email", ["u@x.org\r\nBcc: x@evil.example", "u@x.org\n", "u\x00@x.org", "u@x.org\u2028",
                                   "u@x.org\x85", "not-an-address", "a@b@x.org",
                                   # a parser would read these as another (or a second) mailbox
                                   "lin@exa mple.org", "evil@x.org, bob", "lin@example.org (bcc: x)",
                                   "Lin <lin@example.org>", "<lin@example.org>", "lin:x@example.org",
                                   "lin@example.org;", " lin@example.org"])
def test_an_email_claim_that_is_not_one_clean_address_is_refused(email: str) -> None:
    with pytest.raises(NotAuthorizedException) as refused:
        actor_from_claims(claims(email=email), "admin")
    assert refused.value.status_code == 401
    assert refused.value.detail == "the token's email claim is not an address"


@pytest.mark.parametrize("sub", ["", "  ", "a\x00b", "ann\ud800", "u" * 256, 7])
def test_a_sub_that_cannot_be_a_user_id_refuses_the_token(sub: object) -> None:
    with pytest.raises(NotAuthorizedException, match="no usable 'sub'"):
        actor_from_claims({**claims(), "sub": sub}, "admin")
    assert actor_from_claims({**claims(), "sub": "u" * 255}, "admin").user_id == "u" * 255


def test_a_clean_email_claim_is_kept_and_a_missing_or_non_string_one_is_none() -> None:
    assert actor_from_claims(claims(email="Lin.O'Neil+x@example.org"), "admin").email == "Lin.O'Neil+x@example.org"
    assert actor_from_claims(claims(email='"jean.smith"@example.org'), "admin").email == '"jean.smith"@example.org'
    assert actor_from_claims(claims(), "admin").email is None
    assert actor_from_claims(claims(email=7), "admin").email is None


def test_a_verified_token_is_remembered_only_until_it_expires(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from interface.http import auth

    monkeypatch.setattr(auth, "LEEWAY", 0)
    settings = load_settings({}, data_dir=str(tmp_path), jwt_hs256_secret="s" * 32)
    verifier = verifier_from(settings)
    token = jwt.encode(claims(exp=time.time() + 1.0), "s" * 32, "HS256")
    assert verifier.actor(token).user_id == "u1"
    real_decode, decoded = auth.jwt.decode, []
    monkeypatch.setattr(auth.jwt, "decode", lambda *a, **k: decoded.append(1) or real_decode(*a, **k))
    assert verifier.actor(token).user_id == "u1" and decoded == [], "the second use is not verified again"
    time.sleep(1.1)
    with pytest.raises(NotAuthorizedException):  # expired since it was remembered: checked again, refused
        verifier.actor(token)
    assert decoded == [1] and token not in verifier._verified


def test_refused_tokens_are_not_remembered_and_the_memory_is_bounded(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from interface.http import auth

    monkeypatch.setattr(auth, "CACHED_TOKENS", 3)
    verifier = verifier_from(load_settings({}, data_dir=str(tmp_path), jwt_hs256_secret="s" * 32))
    forged = jwt.encode(claims(), "x" * 32, "HS256")
    for _ in range(2):
        with pytest.raises(NotAuthorizedException):
            verifier.actor(forged)
    assert verifier._verified == {}
    tokens = [jwt.encode(claims(sub=f"u{n}"), "s" * 32, "HS256") for n in range(5)]
    for token in tokens:
        verifier.actor(token)
    assert list(verifier._verified) == tokens[2:]


@pytest.mark.parametrize("groups", ["Course admin", "not,admin", ["Course admin"]])
def test_a_group_name_with_a_space_or_comma_is_one_group(groups: object) -> None:
    """A groups claim as one string was split at spaces and commas: 'Course admin' was an admin."""
    actor = actor_from_claims(claims(groups=groups), "admin")
    assert not actor.is_admin and len(actor.groups) == 1


@pytest.mark.parametrize("lookalike", ["Aſsessor", "aſſeſſor", "assessor\u00a0", "ａｓｓｅｓｓｏｒ", "aſsessor"])
def test_a_lookalike_group_name_is_another_group(lookalike: str) -> None:
    """Unicode case folding made the long s an s and dropped a no-break space."""
    assert not actor_from_claims(claims(groups=[lookalike]), "admin").is_member("Assessor")
    assert actor_from_claims(claims(groups=[" ASSESSOR "]), "admin").is_member("Assessor")


@pytest.mark.parametrize("group", ["asse\x00ssor", "assessor\udc80"])
def test_a_group_name_the_database_cannot_hold_refuses_the_token(group: str) -> None:
    """Every list of the user's tasks failed on it with a 500, hiding their other groups' tasks."""
    with pytest.raises(NotAuthorizedException, match="'groups' holds a name"):
        actor_from_claims({**claims(), "groups": ["assessor", group]}, "admin")
    assert actor_from_claims({**claims(), "groups": ["assessor", "é-group"]}, "admin").groups == {"assessor", "é-group"}
