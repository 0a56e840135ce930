"""The inbound catalog consumer: an aiokafka consumer group on the catalog topic(s).

Each message's effect and its offset are saved in one transaction: the catalog command
takes ``Tracking(application_name="kafka:<topic>:<partition>", notification_id=offset+1)``.
That stored position is the truth: on assignment the consumer seeks to it (the beginning
when there is none), a record at or below it is skipped, and Kafka's committed offsets are
only advisory (for lag tools). So a crash, a rebalance or a redelivery never applies a
message twice, and a message is never skipped:

- undecodable (bad JSON, unknown type, invalid data) or refused by the domain (an
  ``InvalidInput`` such as an unknown template): sent to the dead-letter topic with the
  reason in ``dlq_*`` headers, then its position is recorded, and consumption goes on;
- a database error or a concurrent change (``Conflict``): the same message is retried
  after a backoff, until it is applied or the consumer stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError
from eventsourcing.persistence import IntegrityError, PersistenceError, Tracking

from application.settings import Settings
from domain.errors import Conflict, Unavailable, WorkflowError
from interface.kafka.catalog_apply import apply_catalog_event
from interface.kafka.catalog_events import decode_catalog_event
from interface.kafka.client_config import consumer_config, producer_config
from interface.kafka.cloudevents import UndecodableMessage
from interface.kafka.dead_letter import dead_letter_record
from interface.kafka.retrying import Backoff, sleep_unless_stopped, stop_producer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsumerOptions:
    max_records: int = 500
    poll_timeout_ms: int = 500
    backoff_initial: float = 0.2
    backoff_max: float = 30.0
    unexpected_attempts: int = 5
    """An error that is neither a domain refusal nor a database error: tries, then dead letter."""
    conflict_attempts: int = 10
    """A ``Conflict`` is a race with a concurrent command and passes on a retry; one that
    outlasts this many tries (with the backoff, about two minutes) is the message's own
    refusal and goes to the dead-letter topic instead of blocking its partition."""
    consumer: dict[str, Any] = field(default_factory=dict)
    producer: dict[str, Any] = field(default_factory=dict)


def tracking_name(topic: str, partition: int) -> str:
    return f"kafka:{topic}:{partition}"


@dataclass
class ConsumerStats:
    applied: int = 0
    unchanged: int = 0
    skipped: int = 0
    dead_letters: int = 0
    retries: int = 0


class _Transient(Exception):
    """Try the same message again later."""


class _Conflicted(_Transient):
    """A ``Conflict``: try again later, a bounded number of times."""


class CatalogConsumer:
    def __init__(self, app: Any, settings: Settings, options: ConsumerOptions | None = None) -> None:
        self.app = app
        self.settings = settings
        self.topics = tuple(settings.kafka_catalog_topics)
        self.options = options or ConsumerOptions()
        self.stats = ConsumerStats()
        self.assigned = asyncio.Event()
        self._positions: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    # -- positions -------------------------------------------------------------------------

    def stored_position(self, tp: TopicPartition) -> int:
        """The next offset to apply, from the database (0: nothing applied yet)."""
        return self.app.recorder.max_tracking_id(tracking_name(tp.topic, tp.partition)) or 0

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self._consumer
        assert consumer is not None
        for tp in assigned:
            position = await self._retrying(lambda tp=tp: self.stored_position(tp))
            self._positions[tp] = position
            if position:
                consumer.seek(tp, position)
            else:
                await consumer.seek_to_beginning(tp)
        log.info("catalog partitions assigned: %s", {str(tp): self._positions[tp] for tp in assigned})
        self.assigned.set()

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._commit({tp: self._positions[tp] for tp in revoked if self._positions.get(tp)})
        for tp in revoked:
            self._positions.pop(tp, None)

    # -- the loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        backoff = Backoff(self.options.backoff_initial, self.options.backoff_max)
        while not stop.is_set():
            consumer = AIOKafkaConsumer(**consumer_config(self.settings), **self.options.consumer)
            consumer.subscribe(list(self.topics), listener=_Listener(self))
            self._consumer = consumer
            try:
                await consumer.start()
            except KafkaError as error:
                log.warning("catalog consumer: broker unavailable (%r)", error)
                await _stop_consumer(consumer)
                await sleep_unless_stopped(backoff.next(), stop)
                continue
            started = time.monotonic()
            failed = False
            try:
                await self._consume(consumer, stop)
            except KafkaError as error:
                # A fetch the client does not retry itself (a refused or unknown topic, a
                # corrupt batch…): start again from the stored positions after a pause, rather
                # than end the consumer until the process restarts.
                log.warning("catalog consumer: %r; starting again", error)
                failed = True
            finally:
                await self._commit({tp: p for tp, p in self._positions.items() if p})
                await _stop_consumer(consumer)
                await stop_producer(self._producer)
                self._producer = None
                self._positions.clear()
                self.assigned.clear()
            if failed:
                if time.monotonic() - started > self.options.backoff_max:
                    backoff.reset()  # it ran well for a while: this is a new failure, not the same one
                await sleep_unless_stopped(backoff.next(), stop)

    async def _consume(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batches = await consumer.getmany(
                timeout_ms=self.options.poll_timeout_ms, max_records=self.options.max_records
            )
            for tp, records in batches.items():
                for record in records:
                    if stop.is_set():
                        return  # the rest is read again from the stored position
                    if tp not in self._positions:
                        break  # revoked meanwhile: its new owner goes on from the database
                    await self._handle(tp, record, stop)
                if self._positions.get(tp):
                    await self._commit({tp: self._positions[tp]})

    async def _handle(self, tp: TopicPartition, record: Any, stop: asyncio.Event) -> None:
        if record.offset < self._positions.get(tp, 0):
            self.stats.skipped += 1
            return
        tracking = Tracking(notification_id=record.offset + 1, application_name=tracking_name(tp.topic, tp.partition))
        headers = list(record.headers or ())
        reason: str | None = None
        try:
            event = decode_catalog_event(headers, record.value)
        except UndecodableMessage as error:
            reason = error.reason
        else:
            outcome = await self._apply(event, tracking, stop)
            if outcome is None:
                return  # stopping: the message is applied by the next run
            reason = outcome if isinstance(outcome, str) else None
        if reason is not None:
            if not await self._dead_letter(record, reason, stop):
                return
            if not await self._record_position(tracking, stop):
                return
        self._positions[tp] = record.offset + 1

    async def _apply(self, event: Any, tracking: Tracking, stop: asyncio.Event) -> bool | str | None:
        """True/False: applied (changed or not); a str: the reason to dead-letter it;
        None: stopped before it could be applied."""
        backoff = Backoff(self.options.backoff_initial, self.options.backoff_max)
        unexpected = conflicts = 0
        while not stop.is_set():
            try:
                changed = await asyncio.to_thread(self._apply_once, event, tracking)
            except _Transient as error:
                if isinstance(error, _Conflicted):
                    conflicts += 1
                    if conflicts >= self.options.conflict_attempts:
                        return f"Conflict on each of {conflicts} attempts: {error}"
                self.stats.retries += 1
                log.warning("catalog message %s: %s; retrying", event.event_id, error)
            except WorkflowError as error:
                return f"{type(error).__name__}: {error}"
            except Exception as error:
                unexpected += 1
                log.exception("catalog message %s: unexpected error", event.event_id)
                if unexpected >= self.options.unexpected_attempts:
                    return f"unexpected error: {error!r}"
            else:
                if changed:
                    self.stats.applied += 1
                else:
                    self.stats.unchanged += 1
                return bool(changed)
            await sleep_unless_stopped(backoff.next(), stop)
        return None

    def _apply_once(self, event: Any, tracking: Tracking) -> bool:
        try:
            return apply_catalog_event(self.app, event, tracking)
        except Conflict as error:
            # Either this offset is already recorded (applied by another member during a
            # rebalance: nothing to do) or a command changed the entity at the same moment.
            if self._already_recorded(tracking):
                return False
            raise _Conflicted(str(error)) from None
        except (PersistenceError, psycopg.Error, Unavailable) as error:
            raise _Transient(f"unavailable: {error!r}") from None

    def _already_recorded(self, tracking: Tracking) -> bool:
        try:
            stored = self.app.recorder.max_tracking_id(tracking.application_name) or 0
        except (PersistenceError, psycopg.Error):
            return False
        return stored >= tracking.notification_id

    async def _record_position(self, tracking: Tracking, stop: asyncio.Event) -> bool:
        backoff = Backoff(self.options.backoff_initial, self.options.backoff_max)
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.app.recorder.insert_tracking, tracking)
                return True
            except IntegrityError:
                return True  # already there
            except (PersistenceError, psycopg.Error) as error:
                log.warning("catalog consumer: could not record %s (%r); retrying", tracking, error)
            await sleep_unless_stopped(backoff.next(), stop)
        return False

    async def _dead_letter(self, record: Any, reason: str, stop: asyncio.Event) -> bool:
        without_value = False
        backoff = Backoff(self.options.backoff_initial, self.options.backoff_max)
        while not stop.is_set():
            value, headers = dead_letter_record(
                record.topic, record.partition, record.offset, record.key, record.value,
                list(record.headers or ()), reason, without_value=without_value,
            )
            try:
                if self._producer is None:
                    producer = AIOKafkaProducer(**producer_config(self.settings), **self.options.producer)
                    await producer.start()
                    self._producer = producer
                await self._producer.send_and_wait(
                    self.settings.kafka_dead_letter_topic, value, key=record.key, headers=headers
                )
            except (MessageSizeTooLargeError, RecordListTooLargeError) as error:
                if without_value:  # even the headers alone are refused: keep trying, loudly
                    log.error("catalog message %s:%s@%s cannot be dead-lettered: %r",
                              record.topic, record.partition, record.offset, error)
                    await sleep_unless_stopped(backoff.next(), stop)
                without_value = True  # it would be refused for ever: send it without its value
                continue
            except KafkaError as error:
                log.warning("dead-letter topic unavailable (%r); retrying", error)
                await stop_producer(self._producer)
                self._producer = None
                await sleep_unless_stopped(backoff.next(), stop)
                continue
            self.stats.dead_letters += 1
            log.warning(
                "catalog message %s:%s@%s dead-lettered: %s", record.topic, record.partition, record.offset, reason
            )
            return True
        return False

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Advisory: the database holds the real positions."""
        if not offsets or self._consumer is None:
            return
        try:
            await self._consumer.commit(offsets)
        except (KafkaError, AssertionError) as error:
            log.debug("offset commit skipped: %r", error)

    async def _retrying(self, function: Any) -> Any:
        backoff = Backoff(self.options.backoff_initial, self.options.backoff_max)
        while True:
            try:
                return await asyncio.to_thread(function)
            except (PersistenceError, psycopg.Error) as error:
                log.warning("catalog consumer: database unavailable (%r); retrying", error)
                await asyncio.sleep(backoff.next())


class _Listener(ConsumerRebalanceListener):
    def __init__(self, owner: CatalogConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._owner._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._owner._on_assigned(set(assigned))


async def _stop_consumer(consumer: AIOKafkaConsumer, timeout: float = 10.0) -> None:
    try:
        await asyncio.wait_for(consumer.stop(), timeout)
    except Exception as error:  # noqa: BLE001
        log.debug("consumer stop: %r", error)
