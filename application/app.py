"""WorkflowApplication: one method per command — load, decide, save.

All aggregates a command changes are saved in one call, so in one database transaction.
Library errors become domain errors here. The engine runs only while deciding; what it
decided is recorded in events (ADR 0002).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, TypeVar
from uuid import UUID, uuid4

import isodate
import psycopg
from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.utils import EnvType

from application.database import lock_key
from application.engine.runner import Engine, ReadyTask, SpecRef, Step
from application.forms import file_references, validate_form
from application.repository import Repository, replay
from application.transcoder import MsgspecJSONTranscoder
from domain.definition import DefinitionVersion, WorkflowDefinition
from domain.deployment import WorkflowDeployment
from domain.errors import Conflict, IdTaken, InvalidInput, NotFound, Problem, VersionChanged
from domain.identity import Actor, group_key
from domain.ids import definition_id, deployment_id, task_id
from domain.instance import PASS, WorkflowInstance
from domain.task import DELETED as TASK_DELETED
from domain.task import WorkflowTask

A = TypeVar("A")

LEARNER_LANE = "learner"
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@contextmanager
def _one_creator_at_a_time(factory: Any) -> Iterator[None]:
    """Replicas that start together on a fresh schema race in eventsourcing's ``CREATE
    TYPE``/``CREATE TABLE IF NOT EXISTS``: PostgreSQL answers the losers with a duplicate key
    in ``pg_type`` or "tuple concurrently updated", and that process dies at startup. The
    tables are created under a session advisory lock on a connection of its own (not one
    of the pool, which may be too small to lend two)."""
    datastore = getattr(factory, "datastore", None)
    if datastore is None:  # not PostgreSQL
        yield
        return
    kwargs = datastore.pool.kwargs
    conninfo = psycopg.conninfo.make_conninfo(
        dbname=kwargs.get("dbname"), host=kwargs.get("host"), port=kwargs.get("port"),
        user=kwargs.get("user"), password=kwargs.get("password") or None,
    )
    key = lock_key(datastore.schema, "create-tables")
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as connection:
        connection.execute("SELECT pg_advisory_lock(%s)", (key,))
        yield  # the lock goes with the connection


class WorkflowApplication(Application[UUID]):
    name = "SkillbaseWorkflow"
    env = {  # noqa: RUF012 - eventsourcing reads this class attribute
        "COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor",
    }

    def __init__(
        self,
        env: EnvType | None = None,
        *,
        engine: Engine | None = None,
        clock: Clock = utc_now,
        bundle_max_bytes: int = 1024 * 1024,
    ) -> None:
        super().__init__(env)
        self.engine = engine or Engine()
        self.clock = clock
        self.bundle_max_bytes = bundle_max_bytes
        self._versions: dict[tuple[UUID, int], DefinitionVersion] = {}
        self._last_save = threading.local()

    def construct_transcoder(self) -> MsgspecJSONTranscoder:
        # The same stored JSON, decoded by msgspec (ADR 0009).
        transcoder = MsgspecJSONTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def construct_repository(self) -> Repository:
        # Loads without the library's per-event protocol check (application/repository.py);
        # no aggregate cache: every load reads the store (docs/benchmarks.md, "HTTP API").
        return Repository(event_store=self.events, snapshot_store=self.snapshots)

    def construct_recorder(self) -> Any:
        # A process recorder stores a Tracking record in the same transaction as events,
        # which is how a Kafka message and its effect are saved together.
        with _one_creator_at_a_time(self.factory):
            return self.factory.process_recorder()

    # -- loading ---------------------------------------------------------------------------

    def _get(self, cls: type[A], aggregate_id: UUID, what: str) -> A:
        if not isinstance(aggregate_id, UUID):
            try:
                aggregate_id = UUID(str(aggregate_id))
            except ValueError:
                raise NotFound(f"{what} {str(aggregate_id)[:64]!r} not found: not an id") from None
        try:
            aggregate = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"{what} {aggregate_id} not found") from None
        if not isinstance(aggregate, cls):
            raise NotFound(f"{what} {aggregate_id} not found")
        return aggregate

    def _get_many(self, cls: type[A], aggregate_ids: list[UUID], what: str) -> list[A]:
        """The aggregates of ``aggregate_ids``, in that order, from one read of the store
        (where the recorder can; one by one otherwise); NotFound as ``_get``."""
        select_many = getattr(self.recorder, "select_events_of", None)
        if select_many is None or len(aggregate_ids) < 2:
            return [self._get(cls, aggregate_id, what) for aggregate_id in aggregate_ids]
        if not all(isinstance(aggregate_id, UUID) for aggregate_id in aggregate_ids):
            return [self._get(cls, aggregate_id, what) for aggregate_id in aggregate_ids]
        events: dict[UUID, list[Any]] = {aggregate_id: [] for aggregate_id in aggregate_ids}
        for stored in select_many(list(events)):
            events[stored.originator_id].append(self.mapper.to_domain_event(stored))
        found = []
        for aggregate_id in aggregate_ids:
            aggregate = replay(None, events[aggregate_id]) if events[aggregate_id] else None
            if not isinstance(aggregate, cls):
                raise NotFound(f"{what} {aggregate_id} not found")
            found.append(aggregate)
        return found

    def _find(self, cls: type[A], aggregate_id: UUID) -> A | None:
        try:
            return self._get(cls, aggregate_id, "entity")
        except NotFound:
            return None

    def get_instance(self, instance_id: UUID) -> WorkflowInstance:
        return self._get(WorkflowInstance, instance_id, "instance")

    def get_task(self, task_id_: UUID) -> WorkflowTask:
        return self._get(WorkflowTask, task_id_, "task")

    def get_tasks(self, task_ids: list[UUID]) -> list[WorkflowTask]:
        """Several tasks (an instance's), in the order given, read together."""
        return self._get_many(WorkflowTask, list(task_ids), "task")

    def get_definition(self, credential_id: str) -> WorkflowDefinition:
        return self._get(WorkflowDefinition, definition_id(credential_id), "definition of credential")

    def get_deployment(self, skill_id: str) -> WorkflowDeployment:
        return self._get(WorkflowDeployment, deployment_id(skill_id), "deployment of skill")

    def definition_version(self, definition_id_: UUID, number: int) -> DefinitionVersion:
        """Versions never change, so each is loaded once per process."""
        key = (definition_id_, number)
        version = self._versions.get(key)
        if version is None:
            version = self._get(WorkflowDefinition, definition_id_, "definition").get_version(number)
            self._versions[key] = version
        return version

    def visible_instance(self, actor: Actor, instance_id: UUID) -> WorkflowInstance:
        """The instance, or NotFound when the actor may not know it exists."""
        instance = self.get_instance(instance_id)
        if not instance.can_view(actor):
            raise NotFound(f"instance {instance_id} not found")
        return instance

    def visible_instance_with_history(self, actor: Actor, instance_id: UUID) -> tuple[WorkflowInstance, list[Any]]:
        """The instance and its events, read and decoded once; NotFound as ``visible_instance``."""
        events = list(self.events.get(instance_id))
        instance = replay(None, events)
        if not isinstance(instance, WorkflowInstance) or not instance.can_view(actor):
            raise NotFound(f"instance {instance_id} not found")
        return instance, events

    def visible_task(self, actor: Actor, task_id_: UUID) -> WorkflowTask:
        task = self.get_task(task_id_)
        if not task.can_view(actor):
            raise NotFound(f"task {task_id_} not found")
        return task

    def task_form(self, task: WorkflowTask) -> dict[str, Any] | None:
        if task.form is None:
            return None
        instance = self.get_instance(task.instance_id)
        version = self.definition_version(instance.definition_id, instance.definition_version)
        return json.loads(version.files[task.form])

    # -- saving ----------------------------------------------------------------------------

    def save_all(self, *aggregates: Any, tracking: Tracking | None = None) -> None:
        """Saves every aggregate's new events atomically; a concurrent change is a Conflict."""
        processing = ProcessingEvent(tracking=tracking)
        for aggregate in aggregates:  # the library's collect_events checks a runtime protocol
            processing.events.extend(aggregate.collect_events())  # per object (~40 µs each):
            processing.aggregates[aggregate.id] = aggregate  # every aggregate here is ours
        self._check_expected_versions(processing.events)
        try:
            recordings = self._record(processing)
        except IntegrityError:
            raise Conflict("someone else changed this at the same moment: reload and retry") from None
        self._notify(recordings)
        self._last_save.aggregates = {aggregate.id: aggregate for aggregate in aggregates}
        self._last_save.position = max((r.notification.id for r in recordings), default=None)

    # -- what a command just saved, for its answer -----------------------------------------

    def forget_saved(self) -> None:
        """Starts a command in this thread: nothing saved yet, no version expected."""
        self._last_save.aggregates, self._last_save.position, self._last_save.expected = {}, None, {}

    def expect_versions(self, expected: dict[UUID, int]) -> None:
        """This thread's command may change these aggregates only from these versions: a
        save that would change one from another version raises ``VersionChanged`` (what
        ``If-Match`` promised still holds when the events are written, not only when read)."""
        self._last_save.expected = dict(expected)

    def _check_expected_versions(self, events: list[Any]) -> None:
        expected = getattr(self._last_save, "expected", None)
        if not expected:
            return
        seen: set[UUID] = set()
        for event in events:
            if event.originator_id in expected and event.originator_id not in seen:
                seen.add(event.originator_id)
                was = event.originator_version - 1
                if was != expected[event.originator_id]:
                    raise VersionChanged(
                        f"the entity is at version {was}, not {expected[event.originator_id]}: "
                        "it changed after the request's If-Match was checked; reload and retry")

    def saved_position(self) -> int | None:
        """The log position of the last event this thread's command saved, if it saved any."""
        return getattr(self._last_save, "position", None)

    def current(self, cls: type[A], aggregate_id: UUID, what: str = "entity") -> A:
        """The aggregate as this thread's command just saved it (no second load), else loaded."""
        aggregate = getattr(self._last_save, "aggregates", {}).get(aggregate_id)
        if isinstance(aggregate, cls):
            return aggregate
        return self._get(cls, aggregate_id, what)

    # -- instances -------------------------------------------------------------------------

    def start_instance(self, actor: Actor, credential_id: str, instance_id: UUID | None = None) -> UUID:
        definition = self.get_definition(credential_id)
        if definition.deleted:
            raise Conflict(f"credential {credential_id} is deleted: nothing new can start")
        deployment = self._find(WorkflowDeployment, deployment_id(definition.skill_id))
        if deployment is None:
            raise Conflict(f"skill {definition.skill_id} is not deployed")
        pinned_definition, number = deployment.pinned_version(credential_id)
        version = self.definition_version(pinned_definition, number)
        # A given id (from an Idempotency-Key) that was started already is found by the save
        # below, which refuses a second first event: no load beforehand, on every start.
        if instance_id is None:
            instance_id = uuid4()
        step = self.engine.start(self._spec_ref(pinned_definition, version), data={}, now=self.clock())
        opened = [task_id(instance_id, ready.engine_task_id) for ready in step.ready]
        instance = WorkflowInstance(
            id=instance_id,
            user_id=actor.user_id,
            user_email=actor.email,
            credential_id=credential_id,
            skill_id=definition.skill_id,
            definition_id=pinned_definition,
            definition_version=number,
            engine_state=step.engine_state,
            opened_tasks=[] if step.error else opened,
            messages=step.messages,
            timers=step.timers,
        )
        tasks = [] if step.error else [self._new_task(instance, ready) for ready in step.ready]
        self._finish_if_done(instance, step)
        try:
            self.save_all(instance, *tasks)
        except Conflict:
            return self._same_start(actor, credential_id, instance_id)
        return instance_id

    def _same_start(self, actor: Actor, credential_id: str, instance_id: UUID) -> UUID:
        existing = self.get_instance(instance_id)
        if existing.user_id != actor.user_id or existing.credential_id != credential_id:
            raise IdTaken(f"instance {instance_id} already exists for another start")
        return instance_id

    def cancel_instance(self, actor: Actor, instance_id: UUID, reason: str) -> None:
        instance = self.visible_instance(actor, instance_id)
        closed = instance.cancel(actor, reason)
        tasks = self._cancel_tasks(closed, reason="the instance was cancelled")
        self.save_all(instance, *tasks)

    def delete_instance(self, actor: Actor, instance_id: UUID) -> None:
        """An admin removes an instance that has ended, and its tasks (INSTANCE_DELETED and
        TASK_DELETED tell the rest of skillbase; an achievement of a pass is withdrawn with
        it). Its events stay in the store, for the audit. Deleting it again changes nothing."""
        instance = self.visible_instance(actor, instance_id)
        instance.delete(actor)
        tasks = [task for task in self.get_tasks(list(instance.all_tasks)) if task.status != TASK_DELETED]
        for task in tasks:
            task.delete(actor)
        self.save_all(instance, *tasks)

    # -- tasks -----------------------------------------------------------------------------

    def claim_task(self, actor: Actor, task_id_: UUID) -> None:
        task = self.visible_task(actor, task_id_)
        task.claim(actor)
        self.save_all(task)

    def unclaim_task(self, actor: Actor, task_id_: UUID) -> None:
        task = self.visible_task(actor, task_id_)
        task.unclaim(actor)
        self.save_all(task)

    def reassign_task(self, actor: Actor, task_id_: UUID, assignee: str) -> None:
        task = self.visible_task(actor, task_id_)
        task.reassign(actor, assignee)
        self.save_all(task)

    def complete_task(self, actor: Actor, task_id_: UUID, data: Any) -> None:
        task = self.visible_task(actor, task_id_)
        task.check_can_complete(actor)
        instance = self.get_instance(task.instance_id)
        if not instance.is_running:
            raise Conflict(f"the instance is {instance.status}")
        version = self.definition_version(instance.definition_id, instance.definition_version)
        form = version.files.get(task.form) if task.form else None
        data = validate_form(form, data)
        evidence = self._evidence(instance, data)
        task.complete(actor, data, evidence)
        step = self.engine.complete_task(
            self._spec_ref(instance.definition_id, version),
            instance.engine_state,
            version.engine_format,
            task.engine_task_id,
            data,
            now=self.clock(),
        )
        others = self._advance(instance, step, cause="task_completed", cause_id=str(task.id), done=task.id)
        self.save_all(instance, task, *others)

    # -- engine steps ----------------------------------------------------------------------

    def _spec_ref(self, definition_id_: UUID, version: DefinitionVersion) -> SpecRef:
        return SpecRef((definition_id_, version.number), version.spec_state, version.engine_format)

    def _advance(
        self, instance: WorkflowInstance, step: Step, *, cause: str, cause_id: str | None, done: UUID | None
    ) -> list[WorkflowTask]:
        """Records a step on the instance; returns the tasks it opened and closed."""
        if step.error:
            closed = instance.fail(element_id=step.error_element_id, error=step.error)
            return self._cancel_tasks([t for t in closed if t != done], reason="the instance failed")
        ready = {task_id(instance.id, r.engine_task_id): r for r in step.ready}
        open_now = set(instance.open_tasks)
        opened = [tid for tid in ready if tid not in open_now]
        closed = [tid for tid in instance.open_tasks if tid not in ready]
        instance.advance(
            cause=cause,
            cause_id=cause_id,
            engine_state=step.engine_state,
            opened_tasks=opened,
            closed_tasks=closed,
            messages=step.messages,
            timers=step.timers,
        )
        new_tasks = [self._new_task(instance, ready[tid]) for tid in opened]
        withdrawn = self._cancel_tasks(
            [tid for tid in closed if tid != done], reason="withdrawn by the process"
        )
        self._finish_if_done(instance, step)
        return new_tasks + withdrawn

    def _finish_if_done(self, instance: WorkflowInstance, step: Step) -> None:
        if step.error and instance.is_running:
            instance.fail(element_id=step.error_element_id, error=step.error)
        elif step.finished and instance.is_running and step.outcome is None:
            # A path that ends at a task with no outgoing flow (no end event, so no declared
            # outcome): completing it "fail" recorded a learner who scored 90 as failed.
            instance.fail(element_id=step.end_element_id,
                          error="the process ended without reaching an end event that declares an outcome")
        elif step.finished and instance.is_running:
            outcome = step.outcome
            evidence = self._final_evidence(instance, step.data) if outcome == PASS else []
            instance.complete(result=outcome, end_element_id=step.end_element_id or "", evidence=evidence)

    def _cancel_tasks(self, task_ids: list[UUID], *, reason: str) -> list[WorkflowTask]:
        tasks = self.get_tasks(task_ids)
        for task in tasks:
            task.cancel(reason)
        return tasks

    def _new_task(self, instance: WorkflowInstance, ready: ReadyTask) -> WorkflowTask:
        learner = ready.lane is not None and group_key(ready.lane) == LEARNER_LANE
        return WorkflowTask(
            id=task_id(instance.id, ready.engine_task_id),
            instance_id=instance.id,
            learner_id=instance.user_id,
            credential_id=instance.credential_id,
            skill_id=instance.skill_id,
            engine_task_id=ready.engine_task_id,
            element_id=ready.element_id,
            name=ready.name,
            kind=ready.kind,
            candidate_group=None if learner else group_key(ready.lane or ""),
            assignee=instance.user_id if learner else None,
            form=ready.form,
            documentation=ready.documentation,
            due_at=self._due_at(ready.due_in),
        )

    def _due_at(self, due_in: str | None) -> datetime | None:
        if not due_in:
            return None
        try:
            return self.clock() + isodate.parse_duration(due_in)
        except (isodate.ISO8601Error, ValueError, TypeError, OverflowError):  # P99999999D overflows
            return None

    # -- evidence --------------------------------------------------------------------------

    def _evidence(self, instance: WorkflowInstance, data: dict[str, Any]) -> list[dict[str, Any]]:
        evidence, problems = [], []
        for path, file_id in file_references(data):
            file = instance.files.get(_file_key(file_id))
            if file is None:
                problems.append(Problem(path, f"file {file_id} is not attached to this instance"))
            else:
                evidence.append(file)
        if problems:
            raise InvalidInput("the form refers to files it may not use", problems)
        return evidence

    def _final_evidence(self, instance: WorkflowInstance, data: dict[str, Any]) -> list[dict[str, Any]]:
        referenced = {_file_key(file_id) for _path, file_id in file_references(data)}
        return [file for file_id, file in instance.files.items() if file_id in referenced]


def _file_key(file_id: str) -> str:
    """A file id as the instance keys its files (the canonical, lower-case UUID), so the same
    id written in capitals still refers to the same file."""
    try:
        return str(UUID(str(file_id)))
    except ValueError:
        return file_id
