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
- Several replicas: only the holder of a PostgreSQL advisory lock publishes (ADR 0008).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
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
    """Extra aiokafka producer arguments (``linger_ms``, ``request_timeout_ms``...)."""


# The Java client's and aiokafka's default: murmur2 of the key, so keys land where send() puts them.
_PARTITIONER = DefaultPartitioner()

# Throughput defaults: big batches, a short linger; the caller may override them.
PRODUCER_DEFAULTS: dict[str, Any] = {"linger_ms": 5, "max_batch_size": 512 * 1024, "compression_type": None}


@dataclass(frozen=True)
class OutboundRecord:
    notification_id: int
    key: bytes
    value: bytes
    headers: Headers


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
        notifications = self.app.recorder.select_notifications(start=after + 1, limit=self.options.batch_size)
        records = []
        for notification in notifications:
            event = self.app.mapper.to_domain_event(notification)
            # Encoded at once: the state cache mutates the aggregate with the next event.
            records.append(outbound_record(notification.id, event, states.after(event)))
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
        stop = stop or asyncio.Event()
        backoff = Backoff(self.options.backoff_initial, self.options.backoff_max)
        try:
            while not stop.is_set():
                if not await self.leadership.acquire(stop, self.options.leader_poll):
                    return
                self.stats.leader = True
                log.info("relay publishing", extra={"topic": self.topic})
                try:
                    await self._publish(stop)
                except LeadershipLost as error:
                    log.warning("relay lost its lock (%s); standing by", error)
                    self.stats.leader = False
                    await sleep_unless_stopped(backoff.next(), stop)
        finally:
            self.stats.leader = False
            await self.leadership.release()

    async def _publish(self, stop: asyncio.Event) -> None:
        """Publishes while this relay holds the lock. The next batch is read and encoded
        while the broker acknowledges the current one; the position moves after the ack."""
        options = self.options
        backoff = Backoff(options.backoff_initial, options.backoff_max)
        states = EntityStates(self.app.repository)
        producer: AIOKafkaProducer | None = None
        position: int | None = None
        ahead: asyncio.Future[list[OutboundRecord]] | None = None
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
                    await self._failed("database unavailable", error, backoff, stop)
                    continue
                if not batch:
                    await self.leadership.wait(options.idle_wait)
                    last_check = time.monotonic()
                    continue
                last = batch[-1].notification_id
                try:
                    producer = producer or await self._start_producer()
                    acks = await self._submit(producer, batch)
                    ahead = asyncio.ensure_future(asyncio.to_thread(self.read_batch, last, states))
                    await self._acknowledged(acks)
                except (KafkaError, TimeoutError, OSError) as error:
                    await stop_producer(producer)
                    producer, position = None, None  # resend from the stored position
                    await self._failed("broker unavailable", error, backoff, stop)
                    continue
                try:
                    position = await asyncio.to_thread(self.save_position, last)
                except (PersistenceError, psycopg.Error) as error:
                    position = None  # the batch is re-sent: duplicates within one batch
                    await self._failed("could not store the relay position", error, backoff, stop)
                    continue
                if position != last:
                    position = None  # another relay got further: start again from there
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
        producer = AIOKafkaProducer(**kwargs)
        try:
            await producer.start()
        except BaseException:
            await stop_producer(producer)
            raise
        return producer

    async def _submit(self, producer: AIOKafkaProducer, batch: list[OutboundRecord]) -> list[asyncio.Future[Any]]:
        """Queues the whole batch, as one record batch per partition (key-hashed like
        ``send()``), in log order; returns the futures of the broker's acknowledgements."""
        partitions = sorted(await producer.partitions_for(self.topic))
        builders: dict[int, Any] = {}
        acks = []
        for record in batch:
            partition = _PARTITIONER(record.key, partitions, partitions)
            builder = builders.get(partition)
            if builder is None:
                builder = builders[partition] = producer.create_batch()
            if builder.append(key=record.key, value=record.value, timestamp=None, headers=record.headers) is None:
                acks.append(await producer.send_batch(builder, self.topic, partition=partition))
                builder = builders[partition] = producer.create_batch()
                if builder.append(key=record.key, value=record.value, timestamp=None, headers=record.headers) is None:
                    raise ValueError(f"event {record.notification_id} is larger than max_batch_size")
        for partition, builder in builders.items():
            acks.append(await producer.send_batch(builder, self.topic, partition=partition))
        return acks

    async def _acknowledged(self, acks: list[asyncio.Future[Any]]) -> None:
        """Waits for every acknowledgement (``acks=all``); any failure fails the batch."""
        results = await asyncio.wait_for(asyncio.gather(*acks, return_exceptions=True), self.options.send_timeout)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _failed(self, what: str, error: BaseException, backoff: Backoff, stop: asyncio.Event) -> None:
        self.stats.failures += 1
        self.stats.last_error = f"{what}: {error!r}"
        delay = backoff.next()
        lag = await _quietly(self.lag)
        log.warning("relay: %s (%r); retrying in %.1f s; lag %s events", what, error, delay, lag)
        await sleep_unless_stopped(delay, stop)

    async def _log_lag(self) -> None:
        lag = await _quietly(self.lag)
        log.info("relay lag %s events", lag, extra={"topic": self.topic, "relay_lag": lag})


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
