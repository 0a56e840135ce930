"""Who an email of the process goes to, and what is refused for good."""

from __future__ import annotations

import pytest

from application.mail import MailDeliveryFailed, MailTemplates
from application.mail.compose import compose, recipients
from application.mail_worker import author_is_admin
from domain.identity import SYSTEM_USER

GROUPS = {"assessor": "assessors@example.org"}


def resolve(payload, literal_allowed=False, learner_email="lin@example.org"):
    return recipients(payload, learner_email=learner_email, group_addresses=GROUPS, literal_allowed=literal_allowed)


def test_the_learner_gets_the_address_of_their_token():
    assert resolve({"template": "t", "to": "learner"}) == ("lin@example.org",)


def test_a_group_gets_its_configured_address_whatever_the_case():
    assert resolve({"template": "t", "to_group": "Assessor"}) == ("assessors@example.org",)


def test_a_literal_address_needs_an_admin_author():
    assert resolve({"template": "t", "to": "ops@example.org"}, literal_allowed=True) == ("ops@example.org",)
    with pytest.raises(MailDeliveryFailed) as refused:
        resolve({"template": "t", "to": "ops@example.org"})
    assert refused.value.permanent


@pytest.mark.parametrize(
    ("payload", "learner_email"),
    [({"template": "t", "to_group": "kitchen"}, "lin@example.org"),
     ({"template": "t", "to": "learner"}, None),
     ({"template": "t"}, "lin@example.org"),
     ("not a dict", "lin@example.org")],
)
def test_what_cannot_be_resolved_is_a_permanent_failure(payload, learner_email):
    with pytest.raises(MailDeliveryFailed) as refused:
        resolve(payload, learner_email=learner_email)
    assert refused.value.permanent


def test_an_unknown_template_is_a_permanent_failure():
    with pytest.raises(MailDeliveryFailed) as refused:
        compose(MailTemplates(), message_id="<a.0@x>", payload={"template": "nope"}, to=("a@b.org",), context={})
    assert refused.value.permanent


def test_the_system_and_recorded_admins_author_definitions():
    assert author_is_admin(SYSTEM_USER) and author_is_admin("root")
    assert not author_is_admin("")


@pytest.mark.parametrize("address", [
    "lin@example.org\r\nBcc: x@evil.example", "lin@example.org\n", "lin\x00@example.org", "lin@exa\tmple.org",
    "lin@example.org\x7f", "lin@example.org\u0085", "lin.example.org", "a@b@example.org", "a@x.org, b@y.org",
])
def test_an_address_with_control_characters_or_not_one_at_sign_is_refused_for_good(address):
    for payload, kwargs in (({"template": "t", "to": "learner"}, {"learner_email": address}),
                            ({"template": "t", "to": address}, {"literal_allowed": True})):
        with pytest.raises(MailDeliveryFailed) as refused:
            resolve(payload, **kwargs)
        assert refused.value.permanent
        assert "evil" not in refused.value.reason
    with pytest.raises(MailDeliveryFailed) as refused:
        recipients({"template": "t", "to_group": "ops"}, learner_email=None, group_addresses={"ops": address},
                   literal_allowed=False)
    assert refused.value.permanent


@pytest.mark.parametrize("reason", [
    "550 jean.o'neil@example.org: no such mailbox", '550 <"jean.smith"@example.org>: no such mailbox',
    '550 "jean smith"@example.org unknown', "450 try jean@[192.0.2.1] later",
])
def test_the_fallback_redacts_anything_like_an_address_from_a_reason(reason):
    from application.mail_worker import redacted

    assert "jean" not in redacted(reason) and "<address>" in redacted(reason)


@pytest.mark.parametrize("address", [
    "lin@exa mple.org", "evil@x.org, bob", "lin@example.org (bcc: x)", "lin@example.org>", "Lin <lin@example.org",
    "lin:x@example.org", "jean\\x@example.org", '"a"b@example.org', " lin@example.org",
])
def test_an_address_a_parser_would_read_as_another_mailbox_is_refused_for_good(address):
    for payload, kwargs in (({"template": "t", "to": "learner"}, {"learner_email": address}),
                            ({"template": "t", "to": address}, {"literal_allowed": True})):
        with pytest.raises(MailDeliveryFailed) as refused:
            resolve(payload, **kwargs)
        assert refused.value.permanent and "is refused" in refused.value.reason
        assert "lin" not in refused.value.reason and "evil" not in refused.value.reason


def test_a_named_address_is_for_what_admins_write_not_for_a_learner():
    assert resolve({"template": "t", "to": '"Ops, night" <ops@example.org>'}, literal_allowed=True) == (
        '"Ops, night" <ops@example.org>',)
    assert recipients({"template": "t", "to_group": "ops"}, learner_email=None,
                      group_addresses={"ops": "Ops <ops@example.org>"}, literal_allowed=False) == ("Ops <ops@example.org>",)
    with pytest.raises(MailDeliveryFailed):
        resolve({"template": "t", "to": "learner"}, learner_email="Lin <lin@example.org>")
    assert resolve({"template": "t", "to": "learner"}, learner_email='"jean.smith"@example.org') == (
        '"jean.smith"@example.org',)


@pytest.mark.parametrize("address", ["lin@exa\u200bmple.org", "lin@exam\xadple.org", "lin@\uff45xample.org",
                                     "lin@i\u2764.ws", "lin@bü--cher.example"])
def test_a_domain_with_no_exact_ascii_form_is_sent_as_written_never_mapped_to_another(address):
    """UTS 46 mapping dropped a zero-width space or a soft hyphen and folded fullwidth letters:
    each of these went to lin@example.org. Such a domain goes as written (SMTPUTF8), and an
    address the token carries is not refused for it (an emoji domain locked its user out)."""
    from application.mail.sender import ascii_domain

    from interface.http.auth import actor_from_claims

    assert ascii_domain(address) == address
    assert resolve({"template": "t", "to": "learner"}, learner_email=address) == (address,)
    assert actor_from_claims({"sub": "lin", "email": address}, "admin").email == address


@pytest.mark.parametrize(("address", "sent"), [
    ("lin@bücher.example", "lin@xn--bcher-kva.example"),
    ("lin@Bücher.example", "lin@xn--bcher-kva.example"),  # case is not another mailbox
    ("Ops <ops@bücher.example>", "Ops <ops@xn--bcher-kva.example>"),
    ("jörg@example.org", "jörg@example.org"),  # a local part has no ASCII form: SMTPUTF8 or nothing
    ("Lin@Example.ORG", "Lin@Example.ORG"),
])
def test_an_address_is_sent_with_its_domain_in_ascii(address, sent):
    from application.mail.sender import ascii_domain

    assert resolve({"template": "t", "to": address}, literal_allowed=True) == (address,)
    assert ascii_domain(address) == sent
