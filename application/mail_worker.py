"""The mail worker: reads emails from the log into the outbox, and sends them.

One worker is active across replicas: it holds a PostgreSQL advisory lock on its own
connection for as long as it runs; the others stand by and take over when that session
ends. Each round:

1. catches the outbox up with the log (``EmailOutbox``, a tracked reader);
2. sends every pending email that is due, one at a time: checks that its lock session is
   still alive (and ends the round if not), claims the email, renders it, SMTP, then
   records ``EmailSent``;
3. on failure, schedules the next attempt with mail's own backoff (``retry_delay``: 30 s
   doubling to an hour); after ``MAX_ATTEMPTS``, at least 24 hours of trying (or at once
   for a permanent failure), records an incident on the instance.

One bad row never stops the others: any unexpected exception while loading, composing or
sending one email (a bug, a value no one foresaw) is logged without its message (which may
hold addresses) and handled as a permanent failure: an incident, and the row is not
retried until an admin retries the incident. (An incident the instance cannot record
leaves the row pending, tried again hourly, rather than set aside with nothing for an admin
to see.) Only losing the database ends a round early (``_INFRASTRUCTURE``), also when it is
lost while recording ``EmailSent`` after the SMTP server accepted the email: that email goes
again with the same ``Message-ID`` (see below). Any other failure to record it marks the row
sent and is logged: the email is not sent twice, and the instance's history lacks that one
``EmailSent``. A round also ends before the next email when the worker is asked to stop, or
when no SMTP server answered (the next round tries the next email).

Claims: before sending an email the worker claims it in one ``UPDATE`` (``claimed_by``, and
a lease ``claimed_until``, ``CLAIM_LEASE``), which succeeds only while the email is pending
and nobody else's lease runs. So a worker that lost its lock mid-round, or two workers that
both believe they lead, never send one email side by side: each email is sent by the one
worker holding it. A worker that dies holding a claim leaves that one email to the next
worker once the lease lapses.

Exactly once, and its limit (ADR 0007): an email counts as sent when ``EmailSent`` is
stored. If the process dies after the SMTP server accepted it and before that event is
stored, the next worker sends it again (after the lease) with the same ``Message-ID``
(derived from the stored event and the index), which receiving systems use to drop the
duplicate.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import traceback
from datetime import timedelta
from typing import Any
from uuid import uuid4

import psycopg
from eventsourcing import persistence

from application.database import LOCK_SESSION_KEEPALIVES
from application.mail import (
    MAX_ATTEMPTS,
    MailDeliveryFailed,
    MailTemplates,
    SmtpSender,
    retry_delay,
)
from application.mail.address import address_problem
from application.mail.retry import RETRY_CAP
from application.mail.compose import compose, payload_problem, recipients
from application.outbox.email_outbox import (
    DROPPED,
    INCIDENT,
    PENDING,
    SENT,
    EmailOutbox,
)
from application.outbox.tables import OUTBOX, q
from application.settings import Settings
from domain.identity import SYSTEM_USER
from domain.instance import DELETED

log = logging.getLogger(__name__)

EMAIL_INCIDENT = "email"
# How long a claimed email is this worker's alone: longer than one SMTP exchange can take
# (the sender's 30 s timeout per step), short enough that an email whose worker died goes
# out a few minutes later.
CLAIM_LEASE = timedelta(minutes=5)
# Anything like an address, as a fallback after the sender replaced the known recipients:
# a quoted local part ("jean smith"@…) or one with any character an address may hold ('),
# then a domain or an address literal ([192.0.2.1]).
_ADDRESS = re.compile(r"""(?:"[^"\r\n]*"|[^\s<>()\[\]:;,"@]+)@(?:\[[^\]\s]*\]|[^\s<>()\[\]:;,'"@]+)""")
# The database (or its connection) is gone: the round ends, no email is blamed for it.
_INFRASTRUCTURE = (psycopg.OperationalError, psycopg.InterfaceError,
                   persistence.OperationalError, persistence.InterfaceError)


def redacted(reason: str) -> str:
    """A failure reason without email addresses: incidents are published events, and the
    learner's address never leaves the service (ADR 0001). The sender's reasons name no
    recipient already (``without_addresses``); this catches anything else like one."""
    return _ADDRESS.sub("<address>", reason)


def author_is_admin(added_by: str) -> bool:
    """Whether a definition version's author may name literal recipient addresses.

    Every way to add a version is admin-only (``upload_definition_version`` checks it) or
    the system's own built-in template, so any recorded author is an admin; an empty author
    (a version from before authors were recorded) is not trusted.
    """
    return added_by == SYSTEM_USER or bool(added_by)


class _ServerUnreachable(Exception):
    """No SMTP server answered: the round ends rather than wait out the timeout per email."""


class MailWorker:
    def __init__(
        self,
        service: Any,
        settings: Settings,
        *,
        sender: SmtpSender | None = None,
        templates: MailTemplates | None = None,
        batch_size: int = 50,
        claim_lease: timedelta = CLAIM_LEASE,
    ) -> None:
        self.service = service
        self.settings = settings
        self.outbox = EmailOutbox(service)
        self.sender = sender or _sender_from(settings)
        self.templates = templates or MailTemplates(settings.mail_templates_dir or None)
        self.groups = settings.group_address_map()
        self.batch_size = batch_size
        self.claim_lease = claim_lease
        if self.sender is not None and self.sender.total_timeout >= claim_lease.total_seconds():
            # An email still being sent when its claim lapses would be sent again beside it.
            raise ValueError(f"an email may take {self.sender.total_timeout:g} s to send: "
                             f"the claim lease ({claim_lease}) must be longer")
        self.worker_id = uuid4()  # whose claim an outbox row holds
        self._lock_connection: psycopg.Connection[Any] | None = None

    # -- leadership --------------------------------------------------------------------------

    def acquire(self) -> bool:
        """Takes the advisory lock if free; True while this worker is the active one.

        The lock lives as long as its session. A session the server ended (a restart, a
        failover, a killed backend) freed the lock for a standby at once, and psycopg only
        notices on the next statement: so a held lock is checked with one on every round,
        and a lost one is given up before anything is sent."""
        if self._lock_connection is not None and self._session_alive(self._lock_connection):
            return True
        self.release()
        datastore = self.service.recorder.datastore
        connection = psycopg.connect(**{**LOCK_SESSION_KEEPALIVES,
                                        **{k: v for k, v in datastore.pool.kwargs.items() if k != "row_factory"}},
                                     autocommit=True)
        key = f"skillbase-workflow/{datastore.schema}/mail-worker"
        if connection.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()[0]:
            self._lock_connection = connection
            return True
        connection.close()
        return False

    def release(self) -> None:
        """Stops leading: ends the lock session and gives up this worker's claims, so a
        worker that stops (or notices it lost the lock) leaves no email waiting for a lease."""
        if self._lock_connection is not None:
            self._lock_connection.close()  # ending the session releases the lock
            self._lock_connection = None
            self._give_up_claims()

    def _give_up_claims(self) -> None:
        datastore = self.service.recorder.datastore
        try:
            with datastore.transaction(commit=True) as curs:
                curs.execute(q(datastore, f"""UPDATE {{schema}}.{OUTBOX} SET claimed_by = NULL, claimed_until = NULL
                    WHERE claimed_by = %s"""), (self.worker_id,))
        except (*_INFRASTRUCTURE, psycopg.Error) as error:  # the database is gone: the leases lapse instead
            log.info("mail worker: claims left to lapse (%s)", type(error).__name__)

    @staticmethod
    def _session_alive(connection: psycopg.Connection[Any]) -> bool:
        if connection.closed:
            return False
        try:
            connection.execute("SELECT 1")
        except psycopg.Error:
            log.warning("mail worker: the session holding the lock ended; another worker may lead now")
            return False
        return True

    # -- rounds ------------------------------------------------------------------------------

    def run_once(self, stop: threading.Event | None = None) -> int:
        """One round if this worker is the active one; returns how many emails it sent. A set
        ``stop`` ends the round before the next email: the process is shutting down, and an
        email sent while its pool closes could not be recorded (it would go again)."""
        if not self.acquire():
            return 0
        self.outbox.catch_up()
        if self.sender is None:
            return 0  # no SMTP server configured: emails wait in the outbox
        sent = 0
        for row in self._due_rows():
            if stop is not None and stop.is_set():
                break
            if not self._still_leading():
                break  # another worker may lead now: it sends the rest
            claimed = self._claim(row)
            if claimed is None:  # another worker holds it, or it was settled meanwhile
                continue
            try:
                sent += self._deliver(claimed)
            except _ServerUnreachable:
                break  # each of the others would wait out the timeout too: the next round tries again
        return sent

    def _still_leading(self) -> bool:
        """Whether the lock session is still alive, asked before every email: a round of many
        emails outlasts many a failover, and the freed lock has a new holder at once."""
        if self._lock_connection is not None and self._session_alive(self._lock_connection):
            return True
        self.release()
        return False

    def run_until(self, stop: threading.Event, poll_seconds: float = 1.0) -> None:
        try:
            while not stop.is_set():
                try:
                    self.run_once(stop)
                except Exception as error:  # noqa: BLE001 -- a database or network hiccup must not end the worker
                    _log_round_failed(error)
                    self.release()
                stop.wait(poll_seconds)
        finally:
            self.release()

    def rows(self) -> list[dict[str, Any]]:
        """Every outbox row, oldest first (operators, tests)."""
        datastore = self.service.recorder.datastore
        with datastore.transaction() as curs:
            curs.execute(q(datastore, f"SELECT * FROM {{schema}}.{OUTBOX} ORDER BY originator_version, idx"))
            return curs.fetchall()

    def _due_rows(self) -> list[dict[str, Any]]:
        datastore = self.service.recorder.datastore
        with datastore.transaction() as curs:
            curs.execute(q(datastore, f"""SELECT * FROM {{schema}}.{OUTBOX}
                WHERE status = %s AND (next_attempt_at IS NULL OR next_attempt_at <= %s)
                  AND (claimed_until IS NULL OR claimed_until < now() OR claimed_by = %s)
                ORDER BY next_attempt_at NULLS FIRST, originator_version LIMIT %s"""),
                (PENDING, self.service.clock(), self.worker_id, self.batch_size))
            return curs.fetchall()

    def _claim(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """Claims one email for this worker: the row as claimed, or None when it is no longer
        pending and due, or another worker's lease on it still runs. Leases are on the
        database's clock, which every replica shares (the injected clock schedules attempts)."""
        datastore = self.service.recorder.datastore
        with datastore.transaction(commit=True) as curs:
            curs.execute(q(datastore, f"""UPDATE {{schema}}.{OUTBOX}
                SET claimed_by = %s, claimed_until = now() + %s
                WHERE event_id = %s AND idx = %s AND status = %s
                  AND (next_attempt_at IS NULL OR next_attempt_at <= %s)
                  AND (claimed_until IS NULL OR claimed_until < now() OR claimed_by = %s)
                RETURNING *"""),
                (self.worker_id, self.claim_lease, row["event_id"], row["idx"], PENDING, self.service.clock(),
                 self.worker_id))
            return curs.fetchone()

    # -- one email ---------------------------------------------------------------------------

    def _deliver(self, row: dict[str, Any]) -> int:
        event_id, index, instance_id = str(row["event_id"]), row["idx"], row["instance_id"]
        try:
            instance = self.service.get_instance(instance_id)
            if instance.email_sent(event_id, index) is not None:
                self._set(row, status=SENT)
                return 0
            task = self._task_of(row)
            if instance.status == DELETED or (task is not None and not task.is_open):
                # A deleted instance's data goes nowhere; a reminder whose task was done (or
                # cancelled, with its instance) meanwhile would ask for what is settled.
                log.info("email %s of instance %s dropped: the %s", row["message_id"], instance_id,
                         "instance was deleted" if instance.status == DELETED else f"task is {task.status}")
                self._set(row, status=DROPPED)
                return 0
            email = self._compose(row, instance, task)
            asyncio.run(self.sender.send(email, self.service.clock()))
        except MailDeliveryFailed as failure:
            self._failed(row, failure)
            if failure.unreachable:
                raise _ServerUnreachable from None
            return 0
        except _INFRASTRUCTURE:
            raise
        except Exception as error:  # noqa: BLE001 -- a poison row: set it aside, go on with the next
            self._failed(row, self._unexpected(row, error))
            return 0
        try:
            recorded = self.service.record_email_sent(instance_id, event_id=event_id, index=index,
                                                      message_id=row["message_id"])
        except _INFRASTRUCTURE:
            raise  # the database is gone: the one resend ADR 0007 allows (same Message-ID)
        except Exception as error:  # noqa: BLE001 -- SMTP accepted it: sending it again would duplicate it
            log.error("email %s was sent but its EmailSent could not be recorded (%s); it is not sent again",
                      row["message_id"], type(error).__name__)
            self._set(row, status=SENT, last_error=f"sent; recording EmailSent failed: {type(error).__name__}")
            return 1
        self._set(row, status=SENT)
        if not recorded:  # another worker sent and recorded it meanwhile (a lease that lapsed)
            log.warning("email %s was recorded as sent by another worker meanwhile: sent twice, with one Message-ID",
                        row["message_id"])
        return int(recorded)

    def _task_of(self, row: dict[str, Any]) -> Any:
        """The task whose event asked for the email (a reminder), or None for an instance's."""
        if row["originator_id"] == row["instance_id"]:
            return None
        return self.service.get_task(row["originator_id"])

    def _compose(self, row: dict[str, Any], instance: Any, task: Any) -> Any:
        payload = row["payload"]
        problem = payload_problem(payload)
        if problem:
            raise MailDeliveryFailed(problem, permanent=True)
        version = self.service.definition_version(instance.definition_id, instance.definition_version)
        definition = self.service.get_definition(instance.credential_id)
        to = recipients(payload, learner_email=instance.user_email, group_addresses=self.groups,
                        literal_allowed=author_is_admin(version.added_by))
        context = {
            "credential_name": definition.name,
            # shown in emails to others (assessors): only when it is one clean address
            "learner_email": "" if address_problem(instance.user_email or "") else instance.user_email,
            "learner_id": instance.user_id,
            "instance_id": str(instance.id),
            "outcome": instance.result,
            "task_name": task.name if task else None,
            "due_at": task.due_at.isoformat() if task and task.due_at else None,
            "data": instance.data,
        }
        return compose(self.templates, message_id=row["message_id"], payload=payload, to=to, context=context)

    @staticmethod
    def _unexpected(row: dict[str, Any], error: Exception) -> MailDeliveryFailed:
        """A permanent failure for an exception no one expected. Its message may carry an
        address or a secret, so only its type and where it was raised are kept."""
        frames = traceback.extract_tb(error.__traceback__)
        where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
        reason = f"unexpected {type(error).__name__}{where} while sending; not retried until an admin retries"
        log.error("email %s of instance %s: %s", row["message_id"], row["instance_id"], reason)
        return MailDeliveryFailed(reason, permanent=True)

    def _failed(self, row: dict[str, Any], failure: MailDeliveryFailed) -> None:
        attempts = row["attempts"] + 1
        if failure.permanent or attempts >= MAX_ATTEMPTS:
            log.warning("email %s failed for good after %d attempt(s): %s", row["message_id"], attempts,
                        redacted(failure.reason))
            payload = row["payload"] if isinstance(row["payload"], dict) else {}
            try:
                self.service.raise_incident(
                    row["instance_id"], incident_id=row["incident_id"], kind=EMAIL_INCIDENT,
                    subject={"event_id": str(row["event_id"]), "index": row["idx"], "message_id": row["message_id"],
                             "template": payload.get("template")},
                    reason=redacted(failure.reason), attempts=attempts,
                )
            except _INFRASTRUCTURE:
                raise
            except Exception as error:  # noqa: BLE001 -- the instance cannot record it: try again later
                # Setting the row aside without the event would leave nothing for an admin to
                # see or retry; so it stays pending, and is tried (and logged) once an hour.
                retry_at = self.service.clock() + timedelta(seconds=RETRY_CAP)
                log.error("email %s of instance %s: the incident could not be recorded (%s); tried again at %s",
                          row["message_id"], row["instance_id"], type(error).__name__, retry_at)
                self._set(row, attempts=attempts, next_attempt_at=retry_at, last_error=redacted(failure.reason))
                return
            self._set(row, status=INCIDENT, attempts=attempts, last_error=redacted(failure.reason))
            return
        retry_at = self.service.clock() + timedelta(seconds=retry_delay(attempts))
        log.info("email %s attempt %d failed (%s); next at %s", row["message_id"], attempts, redacted(failure.reason),
                 retry_at)
        self._set(row, attempts=attempts, next_attempt_at=retry_at, last_error=redacted(failure.reason))

    def _set(self, row: dict[str, Any], **values: Any) -> None:
        """Settles a claimed row and gives up the claim; a no-op when the claim lapsed and
        another worker took the row over (it settles it)."""
        datastore = self.service.recorder.datastore
        assignments = ", ".join(f"{name} = %s" for name in values)
        with datastore.transaction(commit=True) as curs:
            curs.execute(q(datastore, f"""UPDATE {{schema}}.{OUTBOX}
                SET {assignments}, claimed_by = NULL, claimed_until = NULL
                WHERE event_id = %s AND idx = %s AND claimed_by = %s"""),
                (*values.values(), row["event_id"], row["idx"], self.worker_id))


def _log_round_failed(error: Exception) -> None:
    """Logs a failed round by the error's type, SQLSTATE and traceback, never its text:
    PostgreSQL's messages quote the values they refused (an email payload, learner data)."""
    cause = error.__cause__ if isinstance(error.__cause__, psycopg.Error) else error
    sqlstate = getattr(cause, "sqlstate", None)
    log.error("mail round failed: %s%s\n%s", type(error).__name__, f" (SQLSTATE {sqlstate})" if sqlstate else "",
              "".join(traceback.format_tb(error.__traceback__)).rstrip())


def _sender_from(settings: Settings) -> SmtpSender | None:
    if not settings.smtp_host:
        return None
    return SmtpSender(
        host=settings.smtp_host, port=settings.smtp_port, username=settings.smtp_username,
        password=settings.smtp_password, starttls=settings.smtp_starttls, mail_from=settings.mail_from,
    )
