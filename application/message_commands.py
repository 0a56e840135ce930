"""BPMN messages in and out: emails the process sent, and messages delivered to it.

Out: the mail worker (application/mail_worker.py) records what happened to each email on
the instance: ``EmailSent`` once the SMTP server accepted it, ``IncidentRaised`` when it
gave up; an admin's ``retry_incident`` puts the email back in the queue.

In: ``deliver_message`` hands a named message to an instance that waits for it (receive
task, message catch event), found by instance id or correlation keys. The message id
makes it idempotent within its scope (``message_scope``: the target instance, or the
correlation keys): the instance records it with the step it caused, and the inbound
table remembers every (scope, id). A message nobody waits for yet is kept for ``message_keep``
and delivered by the scheduler once an instance starts waiting (ADR 0007). Whoever delivers
a message (the sender's request, a scheduler on any replica) first claims it, so it reaches
one instance; one whose delivery raises is backed off and does not hold up the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import unicodedata
from collections.abc import Callable
from datetime import timedelta
from typing import Any, NamedTuple, TypeVar
from uuid import UUID, uuid4

from application.app import WorkflowApplication
from application.backoff import backoff_delay
from application.database import DATABASE_LOST
from application.outbox.tables import INBOUND, WAITS, ensure_tables, q
from application.text import utf8_encodable
from application.transcoder import RESERVED_KEY, RESERVED_KEY_PROBLEM
from domain.errors import Conflict, InvalidInput, NotAllowed, Problem, WorkflowError
from domain.identity import Actor
from domain.instance import MESSAGE_RECEIVED, WorkflowInstance

log = logging.getLogger(__name__)

T = TypeVar("T")

DELIVERED, DUPLICATE, KEPT, EXPIRED, PENDING = "delivered", "duplicate", "kept", "expired", "pending"
# A kept message whose delivery raised waits this long, doubling per failure (as due rows do).
BACKOFF_BASE_SECONDS = 30.0
BACKOFF_CAP_SECONDS = 3600.0


def retry_on_conflict(command: Callable[[], T], attempts: int = 5) -> T:
    """Runs a load-decide-save command again when a concurrent save got there first."""
    for _ in range(attempts - 1):
        try:
            return command()
        except Conflict as error:
            if "changed this at the same moment" not in error.detail:
                raise
    return command()


class MessageCommands(WorkflowApplication):
    message_keep = timedelta(days=7)
    message_claim = timedelta(minutes=5)  # a deliverer's lease on a message (see _claim)

    # -- emails out --------------------------------------------------------------------

    def record_email_sent(self, instance_id: UUID, *, event_id: str, index: int, message_id: str) -> bool:
        """Records that SMTP accepted the email; False if it was recorded before."""
        def command() -> bool:
            instance = self.get_instance(instance_id)
            recorded = instance.record_email_sent(event_id=event_id, index=index, message_id=message_id)
            self.save_all(instance)
            return recorded
        return retry_on_conflict(command)

    def raise_incident(
        self, instance_id: UUID, *, incident_id: str, kind: str, subject: dict[str, Any], reason: str, attempts: int
    ) -> bool:
        def command() -> bool:
            instance = self.get_instance(instance_id)
            raised = instance.raise_incident(
                incident_id=incident_id, kind=kind, subject=subject, reason=reason, attempts=attempts
            )
            self.save_all(instance)
            return raised
        return retry_on_conflict(command)

    def retry_incident(self, actor: Actor, instance_id: UUID, incident_id: str) -> None:
        """An admin retries what failed: an email goes back to the outbox with fresh attempts."""
        instance = self.visible_instance(actor, instance_id)
        instance.retry_incident(actor, incident_id)
        self.save_all(instance)

    # -- messages in -------------------------------------------------------------------

    def deliver_message(
        self,
        actor: Actor,
        name: str,
        payload: Any,
        message_id: str,
        instance_id: UUID | None = None,
        correlation_keys: dict[str, Any] | None = None,
    ) -> str:
        """Delivers a named message once per ``message_id`` within its scope.

        The scope (``message_scope``) is the target instance (``"instance:<id>"``) when
        ``instance_id`` is given, else ``"correlation:"`` + the SHA-256 of the canonical JSON of
        ``correlation_keys`` (sorted keys, no spaces). So two learners may each send
        ``shared-1`` to their own instance, and one id sent with different keys is two
        messages; an id sent twice to the same target is one. (An instance also remembers
        the ids it took, so one reached twice through different scopes advances once.)

        Returns ``delivered`` (an instance took it now), ``kept`` (nobody waits yet: it is
        kept for ``message_keep``) or ``duplicate`` (this id arrived before in this scope:
        no effect). A new message to an instance that has ended is a ``Conflict``.
        """
        _check_message(name, message_id, correlation_keys, payload)
        if instance_id is not None:
            target = self.visible_instance(actor, instance_id)  # NotFound for strangers
            if not actor.is_admin:  # a message stands for another service: the learner answers in tasks
                raise NotAllowed("only a service (an admin token) delivers messages; "
                                 "a learner acts through the instance's tasks")
            if not target.is_running:  # it will never wait again: keeping the message would hide that
                if self.message_status(message_id, instance_id=instance_id) is not None:
                    return DUPLICATE  # a retry of one sent before it ended
                raise Conflict(f"the instance is {target.status}: it takes no more messages")
        elif not actor.is_admin:
            raise NotAllowed("only an admin can deliver messages by correlation keys")
        elif not correlation_keys:
            raise InvalidInput("a message names its instance or correlation keys",
                               [Problem("$.correlation_keys", "give instance_id or correlation_keys")])
        datastore = self.recorder.datastore
        ensure_tables(datastore)
        now = self.clock()
        message = _Message(message_scope(instance_id, correlation_keys), message_id, name, payload)
        claim = uuid4()  # stored with the row: no scheduler round delivers it while this call does
        with datastore.transaction(commit=True) as curs:
            curs.execute(q(datastore, f"""INSERT INTO {{schema}}.{INBOUND}
                (scope, message_id, name, payload, instance_id, correlation_keys, received_at, expires_at,
                 claim, claimed_until)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING message_id"""),
                (message.scope, message_id, name, json.dumps(payload), instance_id,
                 json.dumps(correlation_keys or {}), now, now + self.message_keep, claim, now + self.message_claim))
            if curs.fetchone() is None:
                return DUPLICATE
        targets = [instance_id] if instance_id is not None else self._waiting_instances(name, correlation_keys or {})
        taken, errors = self._deliver_claimed(message, claim, targets)
        if errors and not taken:
            raise errors[0]  # kept, and backed off; the caller learns that the delivery failed
        return DELIVERED if taken else KEPT

    def deliver_kept_messages(self) -> int:
        """Delivers kept messages to instances that now wait for them; expires old ones.

        Each message is claimed before it is delivered, so of several deliverers (this round,
        the sender's own request, rounds on other replicas) one delivers it. A message whose
        delivery raises is logged (its id and the error's type), backed off, and the others
        are still delivered; losing the database ends the round. Returns how many were
        delivered."""
        datastore = self.recorder.datastore
        ensure_tables(datastore)
        now = self.clock()
        with datastore.transaction(commit=True) as curs:
            curs.execute(q(datastore, f"""UPDATE {{schema}}.{INBOUND} SET status = %s
                WHERE status = 'pending' AND expires_at <= %s AND delivering_to IS NULL
                  AND (claimed_until IS NULL OR claimed_until <= %s)"""), (EXPIRED, now, now))
            # A row left with ``delivering_to`` by a deliverer that died is a candidate even
            # when no instance waits: that instance may have taken it (see _deliver_claimed).
            curs.execute(q(datastore, f"""SELECT m.scope, m.message_id, m.name, m.payload, m.expires_at,
                    array_remove(array_agg(DISTINCT w.instance_id), NULL) AS waiting
                FROM {{schema}}.{INBOUND} m LEFT JOIN {{schema}}.{WAITS} w
                  ON w.name = m.name AND (m.instance_id IS NULL OR m.instance_id = w.instance_id)
                 AND w.correlations @> m.correlation_keys
                WHERE m.status = 'pending' AND (m.claimed_until IS NULL OR m.claimed_until <= %s)
                  AND (m.not_before IS NULL OR m.not_before <= %s)
                GROUP BY m.scope, m.message_id
                HAVING m.delivering_to IS NOT NULL OR count(w.instance_id) > 0
                ORDER BY m.received_at"""), (now, now))  # the literal matches the partial index
            candidates = curs.fetchall()
        delivered = 0
        for row in candidates:
            message = _Message(row["scope"], row["message_id"], row["name"], row["payload"])
            claimed = self._claim(message)
            if claimed is None:  # another deliverer has it, or had it since this round looked
                continue
            claim, unfinished = claimed
            targets = ([unfinished] if unfinished else []) + ([] if row["expires_at"] <= now else row["waiting"])
            taken, _errors = self._deliver_claimed(message, claim, targets)
            delivered += taken
        return delivered

    def message_status(
        self, message_id: str, *, instance_id: UUID | None = None, correlation_keys: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """The inbound record of ``message_id`` in the scope of ``instance_id`` or
        ``correlation_keys`` (as given to ``deliver_message``); with neither, the most
        recently received record of that id in any scope."""
        datastore = self.recorder.datastore
        ensure_tables(datastore)
        columns = "scope, message_id, name, status, instance_id, delivered_to, received_at, expires_at"
        with datastore.transaction() as curs:
            if instance_id is None and not correlation_keys:
                curs.execute(q(datastore, f"SELECT {columns} FROM {{schema}}.{INBOUND} WHERE message_id = %s "
                                          "ORDER BY received_at DESC LIMIT 1"), (message_id,))
            else:
                curs.execute(q(datastore, f"SELECT {columns} FROM {{schema}}.{INBOUND} "
                                          "WHERE scope = %s AND message_id = %s"),
                             (message_scope(instance_id, correlation_keys), message_id))
            return curs.fetchone()

    def _waiting_instances(self, name: str, correlation_keys: dict[str, Any]) -> list[UUID]:
        datastore = self.recorder.datastore
        with datastore.transaction() as curs:
            curs.execute(q(datastore, f"SELECT DISTINCT instance_id FROM {{schema}}.{WAITS} "
                                      "WHERE name = %s AND correlations @> %s::jsonb"),
                         (name, json.dumps(correlation_keys)))
            return [row["instance_id"] for row in curs.fetchall()]

    # -- delivery under a claim ------------------------------------------------------------
    #
    # A pending message is delivered only under its claim (a random id and a lease of
    # ``message_claim``), taken by one atomic UPDATE, so one deliverer at a time works on
    # it. Before it hands the message to an instance, the deliverer writes that instance in
    # ``delivering_to``. A deliverer that dies (or loses the database) leaves both behind;
    # once the lease lapses, the next one first tries that same instance (which took the
    # message once at most: it records the ids it took), and only if that instance does not
    # take it any more looks for others. So no message reaches two instances, and none is
    # lost while its instance could still take it.

    def _claim(self, message: _Message) -> tuple[UUID, UUID | None] | None:
        """Claims a pending message that nobody holds and is not backed off: the claim, and
        the instance a deliverer that died was handing it to (None when there was none). The
        lease runs from now, not from the start of a round that may have taken minutes."""
        now = self.clock()
        claim = uuid4()
        datastore = self.recorder.datastore
        with datastore.transaction(commit=True) as curs:
            curs.execute(q(datastore, f"""UPDATE {{schema}}.{INBOUND} SET claim = %s, claimed_until = %s
                WHERE scope = %s AND message_id = %s AND status = %s
                  AND (claimed_until IS NULL OR claimed_until <= %s) AND (not_before IS NULL OR not_before <= %s)
                RETURNING delivering_to"""),
                (claim, now + self.message_claim, message.scope, message.message_id, PENDING, now, now))
            row = curs.fetchone()
        return None if row is None else (claim, row["delivering_to"])

    def _deliver_claimed(
        self, message: _Message, claim: UUID, targets: list[UUID]
    ) -> tuple[bool, list[Exception]]:
        """Offers a claimed message to each target in turn until one takes it; releases the
        claim, backing the message off when a target raised. Returns whether it was taken,
        and what the targets raised (logged here, without the payload)."""
        errors: list[Exception] = []
        for target in dict.fromkeys(targets):
            if not self._update_claimed(message, claim, "delivering_to = %s", (target,)):
                return False, errors  # the lease lapsed and another deliverer holds the message
            try:
                taken = self._deliver_to(target, message.message_id, message.name, message.payload)
            except DATABASE_LOST:
                raise  # the claim and delivering_to stay: the next deliverer after the lease tries again
            except Exception as error:  # noqa: BLE001 -- one broken instance must not hold up others
                # The step's save is the command's last act, and a save that raised did not
                # commit (a lost commit is DATABASE_LOST): this target did not take the message.
                errors.append(error)
                log.log(logging.WARNING if isinstance(error, WorkflowError) else logging.ERROR,
                        "message %s (scope %s) not delivered to instance %s: %s",
                        message.message_id, message.scope, target, type(error).__name__)
                continue
            if taken:
                self._record_delivery(message, target)
                return True, errors
        if errors:
            self._back_off(message, claim)
        else:
            self._update_claimed(message, claim, "claim = NULL, claimed_until = NULL, delivering_to = NULL", ())
        return False, errors

    def _update_claimed(self, message: _Message, claim: UUID, assignments: str, values: tuple[Any, ...]) -> bool:
        """Sets ``assignments`` on the message while ``claim`` still holds it."""
        datastore = self.recorder.datastore
        with datastore.transaction(commit=True) as curs:
            curs.execute(q(datastore, f"UPDATE {{schema}}.{INBOUND} SET {assignments} "
                                      "WHERE scope = %s AND message_id = %s AND claim = %s AND status = %s"),
                         (*values, message.scope, message.message_id, claim, PENDING))
            return curs.rowcount == 1

    def _back_off(self, message: _Message, claim: UUID) -> None:
        """Sets a message aside after a failed delivery, longer after each (up to an hour,
        counted from now), and releases it."""
        now = self.clock()
        datastore = self.recorder.datastore
        with datastore.transaction(commit=True) as curs:
            curs.execute(q(datastore, f"SELECT failures FROM {{schema}}.{INBOUND} "
                                      "WHERE scope = %s AND message_id = %s AND claim = %s FOR UPDATE"),
                         (message.scope, message.message_id, claim))
            row = curs.fetchone()
            if row is None:
                return  # the lease lapsed: the deliverer that holds the message now decides
            failures = row["failures"] + 1
            not_before = now + timedelta(seconds=backoff_delay(failures, BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS))
            curs.execute(q(datastore, f"""UPDATE {{schema}}.{INBOUND} SET failures = %s, not_before = %s,
                    claim = NULL, claimed_until = NULL, delivering_to = NULL
                WHERE scope = %s AND message_id = %s"""), (failures, not_before, message.scope, message.message_id))
        log.error("message %s (scope %s) backed off until %s after %d failed deliveries",
                  message.message_id, message.scope, not_before.isoformat(), failures)

    def _record_delivery(self, message: _Message, instance_id: UUID) -> None:
        """The instance has taken the message: a fact, whoever holds the claim now."""
        datastore = self.recorder.datastore
        with datastore.transaction(commit=True) as curs:
            curs.execute(q(datastore, f"""UPDATE {{schema}}.{INBOUND} SET status = %s, delivered_to = %s,
                    claim = NULL, claimed_until = NULL, delivering_to = NULL
                WHERE scope = %s AND message_id = %s"""),
                (DELIVERED, instance_id, message.scope, message.message_id))

    def _deliver_to(self, instance_id: UUID, message_id: str, name: str, payload: Any) -> bool:
        """True when the instance has taken the message (now or before)."""
        def command() -> bool:
            instance = self._find(WorkflowInstance, instance_id)
            if instance is None or not instance.is_running:
                return instance is not None and instance.has_received(message_id)
            if instance.has_received(message_id):
                return True
            version = self.definition_version(instance.definition_id, instance.definition_version)
            step = self.engine.deliver_message(
                self._spec_ref(instance.definition_id, version), instance.engine_state, version.engine_format,
                name, payload, {}, now=self.clock(),
            )
            if step is None:
                return False
            others = self._advance(instance, step, cause=MESSAGE_RECEIVED, cause_id=message_id, done=None)
            self.save_all(instance, *others)
            return True

        return retry_on_conflict(command)


class _Message(NamedTuple):
    """A kept message, as its deliverers need it."""

    scope: str
    message_id: str
    name: str
    payload: Any


def message_scope(instance_id: UUID | None, correlation_keys: dict[str, Any] | None) -> str:
    """Where a message id must be unique: the target instance, else the correlation keys
    (hashed: keys may be up to 256 KiB, too long for an index entry)."""
    if instance_id is not None:
        return f"instance:{instance_id}"
    canonical = json.dumps(correlation_keys or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "correlation:" + hashlib.sha256(canonical.encode()).hexdigest()


MAX_NAME = 255
MAX_JSON_DEPTH = 32
MAX_JSON_BYTES = 256 * 1024
_MAX_PROBLEMS = 10
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_message(name: Any, message_id: Any, correlation_keys: Any, payload: Any) -> None:
    """Refuses what would otherwise reach the database or the engine as a non-domain error
    (a NUL byte, an unpaired surrogate, NaN, a 5,000-deep nest): ``InvalidInput`` with the
    JSON path of each problem."""
    problems: list[Problem] = []
    _check_text(name, "$.name", "a message name", problems)
    _check_text(message_id, "$.message_id", "a message id", problems)
    if payload is not None:
        _check_object(payload, "$.payload", problems)
    if correlation_keys is not None:
        _check_object(correlation_keys, "$.correlation_keys", problems)
    if problems:
        raise InvalidInput("the message cannot be delivered", problems[:_MAX_PROBLEMS])


def _check_text(value: Any, path: str, what: str, problems: list[Problem]) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        problems.append(Problem(path, f"{what} is 1 to {MAX_NAME} characters"))
    elif any(unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") for char in value):
        problems.append(Problem(path, f"{what} has no control characters"))


def _check_object(value: Any, path: str, problems: list[Problem]) -> None:
    if not isinstance(value, dict):
        problems.append(Problem(path, "must be a JSON object"))
        return
    before = len(problems)
    _check_json(value, path, 1, problems)
    if len(problems) == before and len(json.dumps(value, ensure_ascii=False).encode()) > MAX_JSON_BYTES:
        problems.append(Problem(path, f"must be at most {MAX_JSON_BYTES // 1024} KiB as JSON"))


def _check_json(value: Any, path: str, depth: int, problems: list[Problem]) -> None:
    """JSON values only, nested at most ``MAX_JSON_DEPTH`` containers deep, strings that
    PostgreSQL's jsonb takes (no NUL, valid UTF-8). Never recurses past the limit."""
    if len(problems) >= _MAX_PROBLEMS:
        return
    if isinstance(value, (dict, list)) and depth > MAX_JSON_DEPTH:
        problems.append(Problem(path, f"nests deeper than {MAX_JSON_DEPTH} levels"))
    elif isinstance(value, dict):
        if RESERVED_KEY in value:
            problems.append(Problem(_key_path(path, RESERVED_KEY), RESERVED_KEY_PROBLEM))
        for key, item in value.items():
            if not isinstance(key, str) or _string_problem(key):
                problems.append(Problem(path, f"has a key that is not a usable string ({_string_problem(key)})"))
                continue
            _check_json(item, _key_path(path, key), depth + 1, problems)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]", depth + 1, problems)
    elif isinstance(value, str):
        problem = _string_problem(value)
        if problem:
            problems.append(Problem(path, problem))
    elif isinstance(value, float):
        if not math.isfinite(value):
            problems.append(Problem(path, "must be a finite number"))
    elif value is not None and not isinstance(value, (bool, int)):
        problems.append(Problem(path, f"a {type(value).__name__} is not a JSON value"))


def _string_problem(value: Any) -> str:
    if not isinstance(value, str):
        return "not a string"
    if "\x00" in value:
        return "contains a NUL character"
    if not utf8_encodable(value):
        return "is not valid Unicode text (unpaired surrogate)"
    return ""


def _key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if _PLAIN_KEY.fullmatch(key) else f"{path}[{json.dumps(key)}]"
