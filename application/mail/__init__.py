"""Outgoing email: the message, its templates, the SMTP sender and the retry schedule.

These are the building blocks only; the outbox that decides *when* to send (from stored
events) lives elsewhere and calls them.
"""

from application.mail.message import OutgoingEmail, build_mime, message_id_for
from application.mail.retry import MAX_ATTEMPTS, RETRY_BUDGET, backoff_delay, retry_delay
from application.mail.sender import MailDeliveryFailed, SmtpSender
from application.mail.templates import MailTemplates

__all__ = [
    "MAX_ATTEMPTS",
    "MailDeliveryFailed",
    "MailTemplates",
    "OutgoingEmail",
    "RETRY_BUDGET",
    "SmtpSender",
    "backoff_delay",
    "build_mime",
    "message_id_for",
    "retry_delay",
]
