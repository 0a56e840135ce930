"""The outbound relay: a tracked reader of the event store's notification log that
publishes every stored event, as its CloudEvent (``application.contract``), to Kafka.

- One record per stored event, key = entity id (one entity's events stay in order),
  value = structured CloudEvents JSON, headers ``content-type``, ``ce_type``, ``ce_id``,
  ``ce_subject`` for routing without parsing.
- Batched: read up to ``batch_size`` notifications, send them all, await every
  acknowledgement (``acks=all``), and only then store the position (a ``Tracking`` row
  ``relay:<topic>`` in the application's tracking table). A crash between the broker's
  ack and that write re-sends at most one batch, under the same CloudEvents ids.
- Broker down: the batch fails, the relay backs off and retries from the stored position;
  commands never wait for it. ``relay_lag`` shows how far behind it is.
- An event it cannot publish (its CloudEvent cannot be built, it is larger than the
  producer's ``max_request_size``, or the broker refuses it as too large) is never skipped:
  what comes before it is published, then the relay stays at it, logs an error naming the
  event and the cause (never its content), backs off and tries again, keeping its lock, until
  the cause goes away (a fix, a raised limit). An unexpected error anywhere does the same.
- Several replicas: only the holder of a PostgreSQL advisory lock publishes (ADR 0008).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from eventsourcing.persistence import IntegrityError, PersistenceError, Tracking

from application.contract import EntityStates, encode, to_cloudevent
from application.settings import Settings
from interface.kafka.client_config import producer_config
from interface.kafka.cloudevents import STRUCTURED_CONTENT_TYPE
from interface.kafka.leadership import Leadership, LeadershipLost, lock_key
from interface.kafka.retrying import Backoff, sleep_unless_stopped, stop_producer

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class RelayOptions:
    batch_size: int = 2000
    idle_wait: float = 0.5
    """Longest sleep when caught up; a NOTIFY from a committing command ends it early."""
    leader_poll: float = 2.0
    """How often a standby replica tries to take the lock."""
    heartbeat: float = 2.0
    """While busy, how often the lock's connection is checked."""
    backoff_initial: float = 0.2
    backoff_max: float = 30.0
    lag_log_interval: float = 30.0
    send_timeout: float = 60.0
    """A batch not acknowledged by then counts as failed and is sent again."""
    producer: dict[str, Any] = field(default_factory=dict)
    """Extra aiokafka producer arguments (``linger_ms``, ``request_timeout_ms``,
    ``max_request_size``...), over the settings' (``producer_config``)."""


# The Java client's and aiokafka's default: murmur2 of the key, so keys land where send() puts them.
_PARTITIONER = DefaultPartitioner()

# Throughput defaults: big batches, a short linger; the caller may override them. A record
# batch never exceeds ``max_request_size`` (SKILLBASE_WORKFLOW_KAFKA_MAX_REQUEST_BYTES).
PRODUCER_DEFAULTS: dict[str, Any] = {"linger_ms": 5, "max_batch_size": 512 * 1024, "compression_type": None}

# What a broker answers for a record batch over the topic's ``max.message.bytes``.
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)
_LIMITS = (
    "raise the topic's max.message.bytes (and the broker's message.max.bytes) and the producer's "
    "max_request_size (SKILLBASE_WORKFLOW_KAFKA_MAX_REQUEST_BYTES) to at least {size} bytes"
)


@dataclass(frozen=True)
class OutboundRecord:
    notification_id: int
    key: bytes
    value: bytes
    headers: Headers

    def size(self) -> int:
        """Its size in a record batch of its own: what aiokafka checks ``max_request_size`` against."""
        return DefaultRecordBatchBuilder.estimate_size_in_bytes(self.key, self.value, self.headers)


class Unpublishable(Exception):
    """A stored event the relay cannot publish now. It is never skipped: the relay stays at
    it, logs why (the event's id and the cause, never its content) and tries again."""

    def __init__(self, notification_id: int, reason: str) -> None:
        super().__init__(reason)
        self.notification_id = notification_id


class EventNotMapped(Unpublishable):
    """Reading the event or building its CloudEvent failed (a missing transcoding, a bug)."""

    def __init__(self, notification_id: int, error: Exception) -> None:
        super().__init__(
            notification_id, f"event {notification_id} could not be mapped to its CloudEvent: {describe(error)}"
        )


class EventTooLarge(Unpublishable):
    """The event's record is larger than the producer's ``max_request_size``."""

    def __init__(self, notification_id: int, size: int, limit: int) -> None:
        super().__init__(
            notification_id,
            f"event {notification_id} is {size} bytes as a Kafka record, over the producer's limit of "
            f"{limit} bytes; {_LIMITS.format(size=size)}",
        )
        self.size, self.limit = size, limit


class RefusedAsTooLarge(Unpublishable):
    """The broker refused a record batch as too large (over the topic's ``max.message.bytes``)."""

    def __init__(self, records: Sequence[OutboundRecord], size: int, error: BaseException, acknowledged: int) -> None:
        first, last = records[0].notification_id, records[-1].notification_id
        if len(records) == 1:
            events, advice = f"event {first}", _LIMITS.format(size=size)
        else:  # it is sent alone next: it may fit by itself
            events = f"events {first} to {last} ({len(records)} in one record batch)"
            advice = ("set SKILLBASE_WORKFLOW_KAFKA_MAX_REQUEST_BYTES to at most the topic's max.message.bytes "
                      "so that batches are cut to fit")
        super().__init__(
            first, f"the broker refused {events} of {size} bytes as too large ({type(error).__name__}); {advice}"
        )
        self.size = size
        self.acknowledged = acknowledged
        """Every event up to this notification id is acknowledged."""


def describe(error: BaseException) -> str:
    """An error's type and where it was raised, without its message (which may quote data)."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return type(error).__name__
    where = frames[-1]
    module = "/".join(Path(where.filename).parts[-2:])
    return f"{type(error).__name__} at {module}:{where.lineno} in {where.name}"


def relay_name(topic: str) -> str:
    """The relay's tracking name: its position in the log, per output topic."""
    return f"relay:{topic}"


def relay_position(app: Any, topic: str) -> int:
    return app.recorder.max_tracking_id(relay_name(topic)) or 0


def relay_lag(app: Any, topic: str) -> int:
    """Events stored but not yet acknowledged by the broker: log head - relay position."""
    head = app.recorder.max_notification_id() or 0
    return max(0, head - relay_position(app, topic))


def outbound_record(notification_id: int, domain_event: Any, aggregate_after: Any) -> OutboundRecord:
    cloudevent = to_cloudevent(domain_event, aggregate_after, notification_id)
    return OutboundRecord(
        notification_id=notification_id,
        key=str(domain_event.originator_id).encode(),
        value=encode(cloudevent),
        headers=[
            ("content-type", STRUCTURED_CONTENT_TYPE.encode()),
            ("ce_type", cloudevent.type.encode()),
            ("ce_id", cloudevent.id.encode()),
            ("ce_subject", cloudevent.subject.encode()),
        ],
    )


@dataclass
class RelayStats:
    published: int = 0
    batches: int = 0
    failures: int = 0
    position: int = 0
    leader: bool = False
    last_error: str = ""


class Relay:
    """Publishes the log to ``settings.kafka_output_topic``; ``await run(stop)`` until stopped."""

    def __init__(
        self,
        app: Any,
        settings: Settings,
        options: RelayOptions | None = None,
        *,
        on_published: Callable[[Sequence[OutboundRecord]], None] | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.topic = settings.kafka_output_topic
        self.name = relay_name(self.topic)
        self.options = options or RelayOptions()
        self.stats = RelayStats()
        self._on_published = on_published
        # aiokafka checks max_request_size in send() only; the relay sends whole record batches,
        # so it checks each record itself and keeps its batches within the same limit.
        self.max_record_bytes: int = self.options.producer.get("max_request_size", settings.kafka_max_request_bytes)
        self._refused: int | None = None
        """An event the broker refused as too large: sent alone until it is taken."""
        datastore = app.recorder.datastore
        connect = {k: v for k, v in datastore.pool.kwargs.items() if k != "row_factory"}
        self.leadership = Leadership(
            connect, lock_key(datastore.schema, "relay", self.topic), channel=app.recorder.channel_name
        )

    # -- reading the log (worker threads) --------------------------------------------------

    def position(self) -> int:
        return self.app.recorder.max_tracking_id(self.name) or 0

    def lag(self) -> int:
        return relay_lag(self.app, self.topic)

    def read_batch(self, after: int, states: EntityStates) -> list[OutboundRecord]:
        """The records of the events after ``after``, up to the first that cannot be
        published; when that one is the first, raises its :class:`Unpublishable`."""
        notifications = self.app.recorder.select_notifications(start=after + 1, limit=self.options.batch_size)
        records: list[OutboundRecord] = []
        for notification in notifications:
            try:
                event = self.app.mapper.to_domain_event(notification)
                # Encoded at once: the state cache mutates the aggregate with the next event.
                record = outbound_record(notification.id, event, states.after(event))
            except (PersistenceError, psycopg.Error):
                raise
            except Exception as error:  # noqa: BLE001 - any cause: the event waits, never skipped
                if records:
                    return records
                raise EventNotMapped(notification.id, error) from error
            if (size := record.size()) > self.max_record_bytes:
                if records:
                    return records
                raise EventTooLarge(notification.id, size, self.max_record_bytes)
            records.append(record)
        return records

    def save_position(self, notification_id: int) -> int:
        """Moves the position forward; returns where it is (another relay may be ahead)."""
        try:
            self.app.recorder.insert_tracking(Tracking(self.name, notification_id))
        except IntegrityError:
            pass  # already at or past it (a deposed leader's late write): never go back
        return self.position()

    # -- the loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Publishes until ``stop`` is set. Nothing but ``stop`` ends it: a lost lock makes
        it stand by, an event it cannot publish or an unexpected error makes it back off and
        start again from the stored position, keeping the lock."""
        stop = stop or asyncio.Event()
        backoff = Backoff(self.options.backoff_initial, self.options.backoff_max)
        try:
            while not stop.is_set():
                if not await self.leadership.acquire(stop, self.options.leader_poll):
                    return
                if not self.stats.leader:
                    log.info("relay publishing", extra={"topic": self.topic})
                self.stats.leader = True
                try:
                    await self._publish(stop, backoff)
                except LeadershipLost as error:
                    log.warning("relay lost its lock (%s); standing by", error)
                    self.stats.leader = False
                    await sleep_unless_stopped(backoff.next(), stop)
                except Unpublishable as error:
                    _log_frames(error.__cause__)
                    await self._failed(str(error), backoff, stop, level=logging.ERROR,
                                       notification_id=error.notification_id)
                except Exception as error:  # noqa: BLE001 - a bug must not end the relay
                    _log_frames(error)
                    await self._failed(f"unexpected {describe(error)}", backoff, stop, level=logging.ERROR)
        finally:
            self.stats.leader = False
            await self.leadership.release()

    async def _publish(self, stop: asyncio.Event, backoff: Backoff) -> None:
        """Publishes while this relay holds the lock. The next batch is read and encoded
        while the broker acknowledges the current one; the position moves after the ack."""
        options = self.options
        states = EntityStates(self.app.repository)
        producer: AIOKafkaProducer | None = None
        position: int | None = None
        ahead: asyncio.Future[list[OutboundRecord]] | None = None
        await self.leadership.check()  # also after a failure: a stuck relay still notices a lost lock
        last_check = last_lag_log = time.monotonic()
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now - last_check > options.heartbeat:
                    await self.leadership.check()
                    last_check = now
                if now - last_lag_log > options.lag_log_interval:
                    await self._log_lag()
                    last_lag_log = now
                try:
                    if position is None:
                        await _discard(ahead)
                        ahead = None
                        position = await asyncio.to_thread(self.position)
                        self.stats.position = position
                    reading, ahead = ahead or asyncio.ensure_future(
                        asyncio.to_thread(self.read_batch, position, states)), None
                    batch = await reading
                except (PersistenceError, psycopg.Error) as error:
                    position = None
                    await self._failed(f"database unavailable ({error!r})", backoff, stop)
                    continue
                if not batch:
                    await self.leadership.wait(options.idle_wait)
                    last_check = time.monotonic()
                    continue
                if self._refused is not None and batch[0].notification_id <= self._refused:
                    batch = [record for record in batch if record.notification_id <= self._refused]
                last = batch[-1].notification_id
                try:
                    producer = producer or await self._start_producer()
                    ahead = asyncio.ensure_future(asyncio.to_thread(self.read_batch, last, states))
                    await self._acknowledged(await self._submit(producer, batch))
                except RefusedAsTooLarge as refused:
                    self._refused = refused.notification_id
                    if refused.acknowledged > position:  # what went before it is not sent again
                        with contextlib.suppress(PersistenceError, psycopg.Error):
                            await asyncio.to_thread(self.save_position, refused.acknowledged)
                    raise
                except (KafkaError, TimeoutError, OSError) as error:
                    await stop_producer(producer)
                    producer, position = None, None  # resend from the stored position
                    await self._failed(f"broker unavailable ({error!r})", backoff, stop)
                    continue
                try:
                    position = await asyncio.to_thread(self.save_position, last)
                except (PersistenceError, psycopg.Error) as error:
                    position = None  # the batch is re-sent: duplicates within one batch
                    await self._failed(f"could not store the relay position ({error!r})", backoff, stop)
                    continue
                if position != last:
                    position = None  # another relay got further: start again from there
                if self._refused is not None and last >= self._refused:
                    self._refused = None
                backoff.reset()
                self.stats.position = position or last
                self.stats.published += len(batch)
                self.stats.batches += 1
                if self._on_published is not None:
                    self._on_published(batch)
        finally:
            await _discard(ahead)
            await stop_producer(producer)

    async def _start_producer(self) -> AIOKafkaProducer:
        kwargs = {**producer_config(self.settings), **PRODUCER_DEFAULTS, **self.options.producer}
        kwargs["max_request_size"] = self.max_record_bytes
        kwargs["max_batch_size"] = min(kwargs["max_batch_size"], self.max_record_bytes)
        producer = AIOKafkaProducer(**kwargs)
        try:
            await producer.start()
        except BaseException:
            await stop_producer(producer)
            raise
        return producer

    async def _submit(self, producer: AIOKafkaProducer, batch: list[OutboundRecord]) -> list[_Sent]:
        """Queues the batch in log order as record batches, one per partition (key-hashed
        like ``send()``) at a time; returns the last ones, whose acknowledgements are to come.

        A record batch takes records up to ``max_batch_size``, and always its first record,
        so an event larger than ``max_batch_size`` goes in a batch of its own (``read_batch``
        has held back any over ``max_request_size``). When a record does not fit its
        partition's batch, what is queued is acknowledged before the next batch of that
        partition is queued: a batch the broker refuses (too large, expired) is never
        followed on its partition by a later one, so one entity's events stay in order."""
        partitions = sorted(await producer.partitions_for(self.topic))
        building: dict[int, _Sent] = {}
        for record in batch:
            partition = _PARTITIONER(record.key, partitions, partitions)
            current = building.get(partition)
            if current is not None and not current.add(record):
                await self._acknowledged([await queued.send(producer, self.topic) for queued in building.values()])
                building, current = {}, None
            if current is None:
                current = building[partition] = _Sent(partition, producer.create_batch())
                if not current.add(record):
                    raise Unpublishable(record.notification_id, f"event {record.notification_id} "
                                        f"({record.size()} bytes) did not fit in an empty record batch")
        return [await queued.send(producer, self.topic) for queued in building.values()]

    async def _acknowledged(self, sent: list[_Sent]) -> None:
        """Waits for every acknowledgement (``acks=all``); any failure fails the batch."""
        acks = [batch.ack for batch in sent]
        results = await asyncio.wait_for(asyncio.gather(*acks, return_exceptions=True), self.options.send_timeout)
        failed = sorted(
            ((batch, result) for batch, result in zip(sent, results, strict=True) if isinstance(result, BaseException)),
            key=lambda failure: failure[0].records[0].notification_id,
        )
        if not failed:
            return
        acknowledged = failed[0][0].records[0].notification_id - 1  # every event before it was taken
        for batch, error in failed:
            if isinstance(error, _TOO_LARGE):
                raise RefusedAsTooLarge(batch.records, batch.builder.size(), error, acknowledged) from error
        raise failed[0][1]

    async def _failed(
        self, reason: str, backoff: Backoff, stop: asyncio.Event, *, level: int = logging.WARNING, **extra: Any
    ) -> None:
        self.stats.failures += 1
        self.stats.last_error = reason
        delay = backoff.next()
        lag = await _quietly(self.lag)
        log.log(level, "relay: %s; retrying from the stored position in %.1f s; lag %s events", reason, delay, lag,
                extra={"topic": self.topic, "relay_lag": lag, **extra})
        await sleep_unless_stopped(delay, stop)

    async def _log_lag(self) -> None:
        lag = await _quietly(self.lag)
        log.info("relay lag %s events", lag, extra={"topic": self.topic, "relay_lag": lag})


@dataclass
class _Sent:
    """One partition's record batch: the records it holds, then the future of its ack."""

    partition: int
    builder: Any
    records: list[OutboundRecord] = field(default_factory=list)
    ack: asyncio.Future[Any] | None = None

    def add(self, record: OutboundRecord) -> bool:
        if self.builder.append(key=record.key, value=record.value, timestamp=None, headers=record.headers) is None:
            return False
        self.records.append(record)
        return True

    async def send(self, producer: AIOKafkaProducer, topic: str) -> _Sent:
        self.builder.close()  # complete: sent at once, not after linger_ms
        self.ack = await producer.send_batch(self.builder, topic, partition=self.partition)
        return self


def _log_frames(error: BaseException | None) -> None:
    """At DEBUG, where ``error`` was raised: its stack, not its message (which may quote data)."""
    if error is not None and log.isEnabledFor(logging.DEBUG):
        log.debug("relay: %s raised at\n%s", type(error).__name__, "".join(traceback.format_tb(error.__traceback__)))


async def _discard(future: asyncio.Future[Any] | None) -> None:
    """Lets a read-ahead finish (it runs in a thread) and drops it."""
    if future is not None:
        try:
            await future
        except Exception:  # noqa: BLE001, S110 - it is read again from the stored position
            pass


async def _quietly(function: Callable[[], int]) -> int | str:
    try:
        return await asyncio.to_thread(function)
    except Exception:  # noqa: BLE001 - only for a log line
        return "unknown"
