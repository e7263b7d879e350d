"""The message log on Apache Kafka (aiokafka): the same interface and guarantees as the embedded log."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from itertools import chain
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.cluster import ClusterMetadata
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from gatherly.kernel.log.base import (
    CommitFailed,
    GroupNotEmpty,
    LogUnavailable,
    OutgoingMessage,
    RebalanceCallback,
    Record,
    TopicConfig,
    TopicPartition,
    UnknownTopic,
    check_headers,
    partition_for,
)

# Kafka's error code for a topic another process created first (a race `ensure_topics` tolerates).
TOPIC_ALREADY_EXISTS = kafka_errors.TopicAlreadyExistsError.errno
# Group states in which the group has no live member (DescribeGroups).
MEMBERLESS_STATES = {"Empty", "Dead"}
# How long the broker may hold a consumer's fetch open waiting for records. aiokafka sends one fetch per broker at a
# time, leaving out partitions whose fetched records are not consumed yet; a partition drained meanwhile waits for
# the fetch in flight to come back, so records that arrive on it then wait up to this long (the default 500 ms was
# the p90 of 0.6-0.7 s commit -> consumer in bench/distributed_latency.py, both relays). The cost is an idle member's
# fetch every 50 ms instead of every 500 ms.
FETCH_MAX_WAIT_MS = 50

# The producer's largest batch per partition (aiokafka's default is 16 KiB, about 55 of our records). aiokafka has
# one produce request in flight per broker, so a relay's claim of 500 rows took several round trips to the broker
# one after the other; at 256 KiB a claim goes in one. Under the broker's `message.max.bytes` (1 MiB by default).
MAX_BATCH_SIZE = 256 * 1024
# The largest request, hence record (aiokafka's and Kafka's default, 1 MiB).
MAX_REQUEST_SIZE = 1024 * 1024

T = TypeVar("T")


@contextlib.contextmanager
def unavailable_on_connection_trouble() -> Iterator[None]:
    """Turn the client's connection and timeout errors (and any error Kafka marks retriable: no leader yet, a
    coordinator moving) into `LogUnavailable`, the infrastructure error the delivery code retries without limit."""
    try:
        yield
    except (kafka_errors.KafkaConnectionError, kafka_errors.KafkaTimeoutError, TimeoutError) as error:
        raise LogUnavailable(f"Kafka is unreachable: {error!r}") from error
    except kafka_errors.KafkaError as error:
        if error.retriable:
            raise LogUnavailable(f"Kafka cannot serve the request now: {error!r}") from error
        raise


def _ours(tp: KafkaTopicPartition) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


def _theirs(tp: TopicPartition) -> KafkaTopicPartition:
    return KafkaTopicPartition(tp.topic, tp.partition)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _records(messages: Iterable[ConsumerRecord[bytes, bytes]]) -> list[Record]:
    """Our records of aiokafka's, in their order. The batch consumer builds one per message, so, as the embedded
    log's records: the fields are given by position (keywords took a fifth longer), and a record stamped in the same
    millisecond as the one before it shares that one's timestamp object (a producer stamps a backlog's records
    hundreds to a millisecond, and a `datetime` per record cost over half as much as the `Record` itself). The
    headers' dict is filled in this loop, not by a comprehension: on Python 3.11 a comprehension is a function
    object made and called per record (a sixth of this function's time, docs/messaging.md)."""
    records = []
    last_ms, timestamp = None, EPOCH
    for message in messages:
        if message.timestamp != last_ms:
            last_ms, timestamp = message.timestamp, datetime.fromtimestamp(message.timestamp / 1000, UTC)
        # Other producers (Debezium, tools) may write keys or headers that are not UTF-8, or null header values: such
        # a record must still reach the worker (which parks what it cannot parse), not stop the poll loop.
        headers = {}
        for name, value in message.headers:
            headers[name] = "" if value is None else value.decode(errors="replace")
        records.append(
            Record(
                message.topic,
                message.partition,
                message.offset,
                (message.key or b"").decode(errors="replace"),
                message.value or b"",
                headers,
                timestamp,
            )
        )
    return records


def topic_settings(topic: TopicConfig, replication_factor: int) -> dict[str, str]:
    """The topic-level configs a TopicConfig stands for: retention None keeps forever (Kafka's -1); every topic
    holds events (several per key, whose history consumers replay), so records are deleted by age, never compacted.
    With acks=all, a write waits for `min.insync.replicas` copies: one fewer than the replicas, so one broker may
    be down (3 replicas: 2)."""
    retention = -1 if topic.retention_ms is None else topic.retention_ms
    settings = {
        "retention.ms": str(retention),
        "cleanup.policy": "delete",
        "min.insync.replicas": str(max(1, replication_factor - 1)),
    }
    if topic.retention_ms is not None:
        # Kafka deletes a segment once its newest record is past retention, and closes the segment being written
        # only every segment.ms (7 days by default): with segments a quarter of the retention long, no record
        # outlives its retention by more than a quarter (a 1-day topic would otherwise keep records up to 8 days).
        settings["segment.ms"] = str(max(1, topic.retention_ms // 4))
    return settings


class KafkaLog:
    """A `MessageLog` on a Kafka cluster. One idempotent producer (acks=all) per process; keys are aggregate ids and
    aiokafka's default partitioner is Kafka's murmur2 one (`base.partition_for`), so a key lands on the same
    partition whoever publishes it. Topics are never auto-created: the broker must run with
    `auto.create.topics.enable=false` (a publish to an unknown topic raises `UnknownTopic` before sending)."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str = "gatherly",
        replication_factor: int = 1,
        session_timeout: float = 10.0,
        max_poll_interval: float = 300.0,
        request_timeout: float = 30.0,
        max_batch_size: int = MAX_BATCH_SIZE,
        max_request_size: int = MAX_REQUEST_SIZE,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.replication_factor = replication_factor
        self.session_timeout = session_timeout
        self.max_poll_interval = max_poll_interval
        self.request_timeout = request_timeout
        self.max_batch_size = max_batch_size
        self.max_request_size = max_request_size
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        # Group-less: asks for partitions' first and next offsets, and reads for `read` (one read at a time).
        self._offsets: AIOKafkaConsumer | None = None
        self._reading = asyncio.Lock()
        self._partitions: dict[str, int] = {}  # topic → partition count, once seen (topics never shrink)

    def _client_options(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "request_timeout_ms": int(self.request_timeout * 1000),
        }

    async def start(self) -> None:
        producer = AIOKafkaProducer(
            **self._client_options(),
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            max_batch_size=self.max_batch_size,
            max_request_size=self.max_request_size,
        )
        admin = AIOKafkaAdminClient(**self._client_options())
        offsets = AIOKafkaConsumer(**self._client_options(), group_id=None, enable_auto_commit=False)
        started: list[Any] = []
        try:
            with unavailable_on_connection_trouble():
                for client, start in ((producer, producer.start), (admin, admin.start), (offsets, offsets.start)):
                    await start()
                    started.append(client)
        except BaseException:
            for client in reversed(started):
                await (client.close() if client is admin else client.stop())
            raise
        self._producer, self._admin, self._offsets = producer, admin, offsets

    async def close(self) -> None:
        producer, admin, offsets = self._producer, self._admin, self._offsets
        self._producer = self._admin = self._offsets = None
        if producer is not None:
            await producer.stop()  # sends what is buffered first
        if offsets is not None:
            # aiokafka's group-less consumer awaits a background task at stop that raises CancelledError if it was
            # cancelled before it ever ran (a log closed right after it started): let it run once first.
            await asyncio.sleep(0)
            await offsets.stop()
        if admin is not None:
            await admin.close()

    async def __aenter__(self) -> KafkaLog:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _started(self) -> tuple[AIOKafkaProducer, AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._producer is None or self._admin is None or self._offsets is None:
            raise RuntimeError("the Kafka log is not started")
        return self._producer, self._admin, self._offsets

    async def _metadata(self) -> ClusterMetadata:
        producer, _, _ = self._started()
        with unavailable_on_connection_trouble():
            return await producer.client.fetch_all_metadata()

    async def _partition_count(self, topic: str) -> int | None:
        """The topic's partition count, or None if it does not exist (asked of the cluster when not yet seen)."""
        if topic not in self._partitions:
            partitions = (await self._metadata()).partitions_for_topic(topic)
            if not partitions:
                return None
            self._partitions[topic] = len(partitions)
        return self._partitions[topic]

    async def ensure_topics(self, topics: Sequence[TopicConfig]) -> None:
        _, admin, _ = self._started()
        metadata = await self._metadata()
        missing = [t for t in topics if not metadata.partitions_for_topic(t.name)]
        if missing:
            new = [
                NewTopic(
                    t.name,
                    t.partitions,
                    self.replication_factor,
                    topic_configs=topic_settings(t, self.replication_factor),
                )
                for t in missing
            ]
            response = await self._ask(lambda: admin.create_topics(new))
            for name, code, message in response.topic_errors:
                if code and code != TOPIC_ALREADY_EXISTS:
                    raise kafka_errors.for_code(code)(f"could not create topic {name!r}: {message}")
        await self._wait_until_led([t.name for t in topics])

    async def _wait_until_led(self, names: Sequence[str]) -> None:
        """Wait until every partition of the topics has a leader: a topic is created asynchronously, and a publish
        or a subscription straight after `create_topics` could otherwise find it missing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        while True:
            metadata = await self._metadata()
            waiting = [
                name
                for name in names
                if not (partitions := metadata.partitions_for_topic(name))
                or any(metadata.leader_for_partition(KafkaTopicPartition(name, p)) in (None, -1) for p in partitions)
            ]
            if not waiting:
                return
            if loop.time() > deadline:
                raise LogUnavailable(f"topics {waiting} have no leader after {self.request_timeout:g}s")
            await asyncio.sleep(0.05)

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Append the messages, returning once all are acknowledged (acks=all); the first failure is raised.

        The records go out in one batch per partition (a new one when a batch is full, `max_batch_size`), each
        closed and queued in the messages' order: a partition keeps its records' order as with `send`, and a
        closed batch is sent at once instead of lingering. Per record, `send` cost a coroutine, a future and a
        metadata check: with a relay's claim of hundreds of rows, most of the publishing's CPU."""
        producer, _, _ = self._started()
        partitions: dict[str, int] = {}
        for topic in {m.topic for m in messages}:
            if await self._partition_count(topic) is None:
                raise UnknownTopic(f"topic {topic!r} does not exist; create it with ensure_topics")
        for m in messages:  # before any batch is sent: as on the embedded log, nothing of the publish is appended
            check_headers(m)
        with unavailable_on_connection_trouble():
            for topic in {m.topic for m in messages}:
                # The producer's metadata, as its own partitioner would ask (a topic may have gained partitions).
                partitions[topic] = len(await producer.partitions_for(topic))
            filling: dict[tuple[str, int], BatchBuilder] = {}
            sent: list[asyncio.Future[Any]] = []
            try:
                await self._fill(producer, messages, partitions, filling, sent)
                await asyncio.gather(*sent)
            except BaseException:
                for queued in sent:  # those not awaited: their failures are taken, not logged as never retrieved
                    queued.add_done_callback(_retrieve)
                raise

    async def _fill(
        self,
        producer: AIOKafkaProducer,
        messages: Sequence[OutgoingMessage],
        partitions: dict[str, int],
        filling: dict[tuple[str, int], BatchBuilder],
        sent: list[asyncio.Future[Any]],
    ) -> None:
        """Appends the messages to their partitions' batches, queueing each batch once full and all at the end."""
        for m in messages:
            key = m.key.encode()
            headers = [(name, value.encode()) for name, value in m.headers.items()]
            if DefaultRecordBatchBuilder.estimate_size_in_bytes(key, m.value, headers) > self.max_request_size:
                # What `send` refuses before sending: a record that no request could carry.
                raise kafka_errors.MessageSizeTooLargeError(f"a record of topic {m.topic!r} is too large")
            where = (m.topic, partition_for(m.key, partitions[m.topic]))
            batch = filling.get(where)
            if batch is None:
                batch = filling[where] = producer.create_batch()
            if batch.append(key=key, value=m.value, timestamp=None, headers=headers) is None:
                # Full: queued (waiting while the partition's previous batch is not sent yet), then a new one,
                # which takes any first record.
                sent.append(await self._queue(producer, batch, where))
                batch = filling[where] = producer.create_batch()
                batch.append(key=key, value=m.value, timestamp=None, headers=headers)
        for where, batch in filling.items():
            sent.append(await self._queue(producer, batch, where))

    @staticmethod
    async def _queue(producer: AIOKafkaProducer, batch: BatchBuilder, where: tuple[str, int]) -> asyncio.Future[Any]:
        batch.close()  # nothing more goes in: it is sent at once, not after linger_ms
        topic, partition = where
        return await producer.send_batch(batch, topic, partition=partition)

    async def _ask(self, call: Callable[[], Awaitable[T]]) -> T:
        """An admin request, retried while Kafka answers with a retriable error: the broker creates its offsets
        topic on the first group request, and a group coordinator may be moving; then `LogUnavailable`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        while True:
            try:
                with unavailable_on_connection_trouble():
                    return await call()
            except LogUnavailable:
                if loop.time() > deadline:
                    raise
            await asyncio.sleep(0.1)

    def consumer(
        self,
        group: str,
        topics: Sequence[str],
        *,
        on_assigned: RebalanceCallback | None = None,
        on_revoked: RebalanceCallback | None = None,
    ) -> KafkaConsumer:
        return KafkaConsumer(self, group, topics, on_assigned=on_assigned, on_revoked=on_revoked)

    async def _describe_group(self, group: str) -> tuple[str, set[str]]:
        _, admin, _ = self._started()

        async def describe() -> tuple[str, set[str]]:
            [response] = await admin.describe_consumer_groups([group])
            [(error_code, _name, state, _protocol_type, _protocol, members, *_)] = response.groups
            if error_code:  # e.g. the coordinator is still loading: retriable, so `_ask` tries again
                raise kafka_errors.for_code(error_code)(f"could not describe group {group!r}")
            return state, {member[0] for member in members}

        return await self._ask(describe)

    async def group_members(self, group: str) -> set[str]:
        state, members = await self._describe_group(group)
        return set() if state in MEMBERLESS_STATES else members

    async def committed(self, group: str, partition: TopicPartition) -> int | None:
        _, admin, _ = self._started()
        offsets = await self._ask(lambda: admin.list_consumer_group_offsets(group, partitions=[_theirs(partition)]))
        found = offsets.get(_theirs(partition))
        return None if found is None or found.offset < 0 else found.offset

    async def _topic_partitions(self, topic: str) -> list[KafkaTopicPartition]:
        count = await self._partition_count(topic)
        return [KafkaTopicPartition(topic, p) for p in range(count or 0)]

    async def reset_group(self, group: str, topics: Sequence[str], to: str | int = "earliest") -> None:
        if await self.group_members(group):
            raise GroupNotEmpty(f"group {group!r} has live members; stop its consumers first")
        _, _, offsets_reader = self._started()
        partitions = [tp for topic in topics for tp in await self._topic_partitions(topic)]
        if not partitions:
            return
        with unavailable_on_connection_trouble():
            if to == "earliest":
                offsets = await offsets_reader.beginning_offsets(partitions)
            elif to == "latest":
                offsets = await offsets_reader.end_offsets(partitions)
            elif isinstance(to, int) and not isinstance(to, bool) and to >= 0:
                offsets = dict.fromkeys(partitions, to)
            else:
                raise ValueError(f"reset to {to!r}: expected 'earliest', 'latest' or an offset >= 0")
        # A commit from outside the group (no member id, no generation): the broker accepts it only while the
        # group has no members, so a member that joined since the check above makes it fail rather than race.
        committer = AIOKafkaConsumer(**self._client_options(), group_id=group, enable_auto_commit=False)
        with unavailable_on_connection_trouble():
            await committer.start()
        try:
            committer.assign(partitions)
            with unavailable_on_connection_trouble():
                await committer.commit(offsets)
        except kafka_errors.CommitFailedError as error:
            raise GroupNotEmpty(f"group {group!r} gained a member during the reset: {error}") from error
        finally:
            await committer.stop()

    async def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        _, _, offsets_reader = self._started()
        partitions = await self._topic_partitions(topic)
        if not partitions:
            return {}
        with unavailable_on_connection_trouble():
            ends = await offsets_reader.end_offsets(partitions)
        return {_ours(tp): offset for tp, offset in ends.items()}

    async def read(self, topic: str, from_offsets: Mapping[int, int] | None = None, limit: int = 1000) -> list[Record]:
        _, _, offsets_reader = self._started()
        partitions = await self._topic_partitions(topic)
        if not partitions or limit <= 0:
            return []
        with unavailable_on_connection_trouble():
            firsts = await offsets_reader.beginning_offsets(partitions)
            ends = await offsets_reader.end_offsets(partitions)
        wanted = {tp: max(firsts[tp], (from_offsets or {}).get(tp.partition, 0)) for tp in partitions}
        records: list[Record] = []
        async with self._reading:  # one read at a time moves the shared reader's assignment
            try:
                for tp in partitions:  # partition by partition: the result is in (partition, offset) order
                    if len(records) >= limit:
                        break
                    if wanted[tp] < ends[tp]:
                        left = limit - len(records)
                        records += await self._read_partition(offsets_reader, tp, wanted[tp], ends[tp], left)
            finally:
                offsets_reader.unsubscribe()  # no fetching in the background between reads
        return records

    async def _read_partition(
        self, reader: AIOKafkaConsumer, tp: KafkaTopicPartition, start: int, end: int, limit: int
    ) -> list[Record]:
        reader.assign([tp])
        reader.seek(tp, start)
        records: list[Record] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        while len(records) < limit and (not records or records[-1].offset + 1 < end):
            if loop.time() > deadline:
                raise LogUnavailable(
                    f"reading {tp.topic}[{tp.partition}] made no progress in {self.request_timeout:g}s"
                )
            with unavailable_on_connection_trouble():
                batch = await reader.getmany(tp, timeout_ms=200, max_records=limit - len(records))
            records += _records(m for m in batch.get(tp, []) if m.offset < end)
        return records[:limit]


class _Rebalance(ConsumerRebalanceListener):
    """Forwards aiokafka's rebalance callbacks; aiokafka awaits them (revocation before the group rejoins)."""

    def __init__(self, consumer: KafkaConsumer) -> None:
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: set[KafkaTopicPartition]) -> None:
        await self.consumer._revoked({_ours(tp) for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[KafkaTopicPartition]) -> None:
        await self.consumer._assigned({_ours(tp) for tp in assigned})


class KafkaConsumer:
    """A member of a Kafka consumer group: offsets are committed only by `commit` (never automatically).

    Kafka's classic group protocol as aiokafka speaks it is eager: a rebalance revokes every partition a member
    holds (`on_revoked` gets them all, and the delivery worker commits them there), then assigns the new split."""

    def __init__(
        self,
        log: KafkaLog,
        group: str,
        topics: Sequence[str],
        *,
        on_assigned: RebalanceCallback | None,
        on_revoked: RebalanceCallback | None,
    ) -> None:
        self.group = group
        self.handles: frozenset[str] | None = None  # a hint the embedded log uses; fetches here are per partition
        self.topics = list(topics)
        self._log = log
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._consumer = AIOKafkaConsumer(
            **log._client_options(),
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a group without commits starts at the beginning
            session_timeout_ms=int(log.session_timeout * 1000),
            heartbeat_interval_ms=max(100, int(log.session_timeout * 1000 / 3)),
            max_poll_interval_ms=int(log.max_poll_interval * 1000),
            metadata_max_age_ms=30_000,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        self._joined = asyncio.Event()
        self._state = "new"  # new → started → closed
        self._start_lock = asyncio.Lock()

    async def _start(self) -> None:
        """Join the group on first use and wait for the first assignment, so a member that has polled is in the
        group (admin tools and `reset_group` see it) and heartbeats in the background from then on."""
        async with self._start_lock:
            if self._state == "closed":
                raise RuntimeError(f"consumer of group {self.group!r} is closed")
            if self._state == "new":
                self._consumer.subscribe(self.topics, listener=_Rebalance(self))
                with unavailable_on_connection_trouble():
                    await self._consumer.start()
                self._state = "started"
        try:
            await asyncio.wait_for(self._joined.wait(), self._log.request_timeout)
        except TimeoutError as error:
            raise LogUnavailable(f"group {self.group!r} not joined in {self._log.request_timeout:g}s") from error

    async def _assigned(self, partitions: set[TopicPartition]) -> None:
        self._joined.set()
        if partitions and self._on_assigned is not None:
            await self._on_assigned(partitions)

    async def _revoked(self, partitions: set[TopicPartition]) -> None:
        if partitions and self._on_revoked is not None:
            await self._on_revoked(partitions)

    async def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        await self._start()
        with unavailable_on_connection_trouble():
            batches = await self._consumer.getmany(timeout_ms=int(timeout * 1000), max_records=max_records)
        return _records(
            chain.from_iterable(batches[tp] for tp in sorted(batches, key=lambda tp: (tp.topic, tp.partition)))
        )

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets:
            return
        if self._state != "started":
            raise CommitFailed(f"member of group {self.group!r} has not joined: it owns no partition")
        try:
            with unavailable_on_connection_trouble():
                await self._consumer.commit({_theirs(tp): offset for tp, offset in offsets.items()})
        except (kafka_errors.CommitFailedError, kafka_errors.IllegalStateError) as error:
            # A stale generation (the member was silent past the session timeout) or partitions it no longer owns.
            raise CommitFailed(f"commit by a member of group {self.group!r} refused: {error}") from error

    def _owned(self, partitions: set[TopicPartition]) -> list[KafkaTopicPartition]:
        # aiokafka refuses to pause or resume a partition it does not hold; one lost in a rebalance is simply gone.
        assigned = self._consumer.assignment() if self._state == "started" else set()
        return [tp for tp in map(_theirs, partitions) if tp in assigned]

    def pause(self, partitions: set[TopicPartition]) -> None:
        self._consumer.pause(*self._owned(partitions))

    def resume(self, partitions: set[TopicPartition]) -> None:
        self._consumer.resume(*self._owned(partitions))

    async def seek(self, partition: TopicPartition, offset: int) -> None:
        await self._start()
        try:
            self._consumer.seek(_theirs(partition), offset)
        except kafka_errors.IllegalStateError as error:
            raise ValueError(f"{partition} is not assigned to this member of group {self.group!r}") from error

    async def assignment(self) -> set[TopicPartition]:
        await self._start()
        return {_ours(tp) for tp in self._consumer.assignment()}

    async def close(self) -> None:
        if self._state != "started":
            self._state = "closed"
            return
        try:
            # aiokafka's stop leaves the group without calling the listener: revoke here, while still a member,
            # so the worker's commit there is accepted.
            await self._revoked({_ours(tp) for tp in self._consumer.assignment()})
        finally:
            self._state = "closed"
            await self._consumer.stop()


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Takes a settled future's failure (the first one is raised by `publish`)."""
    if not future.cancelled():
        future.exception()
