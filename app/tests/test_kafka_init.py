"""`gatherly kafka init`: the event catalog's topics on a real broker, with partitions, replicas and retention."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from typer.testing import CliRunner

from gatherly.app.cli import app, catalog_topics
from gatherly.kernel.log import KafkaLog, TopicConfig, TopicPartition
from gatherly.kernel.log.kafka import topic_settings
from gatherly.kernel.testing import LOG_BACKENDS

WEEK_MS = 7 * 24 * 3600 * 1000
DAY_MS = 24 * 3600 * 1000


def test_kafka_init_refuses_when_the_log_backend_is_not_kafka(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["kafka", "init"], env={"GATHERLY_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 2, result.output
    assert "GATHERLY_LOG_BACKEND is not 'kafka'" in re.sub(r"\s+", " ", result.output)


def test_the_catalog_has_every_topic_with_its_dead_letter_and_redelivery_topics() -> None:
    topics = {t.name: t for t in catalog_topics(partitions=6)}
    assert {"user", "group", "membership", "event", "rsvp", "comment", "image", "notification"} <= set(topics)
    assert topics["membership"].retention_ms == WEEK_MS
    assert topics["membership.dlq"].retention_ms is None  # a parked message waits for an operator
    assert topics["gatherly.redeliver.notifications.members"].retention_ms is None
    assert {t.partitions for t in topics.values()} == {6}


def test_export_parts_and_links_are_kept_a_day_also_when_parked_or_redelivered() -> None:
    # They carry everything a service holds of a person: they must not outlive an account's deletion by long.
    topics = {t.name: t for t in catalog_topics(partitions=4)}
    for name in ["user_export", "user_export.dlq", "gatherly.redeliver.images.exports"]:
        assert topics[name].retention_ms == DAY_MS, name
    assert topics["user.dlq"].retention_ms is None


def test_a_kafka_topic_s_segments_are_a_quarter_of_its_retention_so_records_do_not_outlive_it_by_a_week() -> None:
    assert topic_settings(TopicConfig("user_export", retention_ms=DAY_MS), 1)["segment.ms"] == str(DAY_MS // 4)
    assert "segment.ms" not in topic_settings(TopicConfig("user.dlq", retention_ms=None), 1)


async def topic_configs(bootstrap: str, names: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
    finally:
        await admin.close()
    configs: dict[str, dict[str, str]] = {}
    for response in responses:
        for _error, _message, _type, name, entries in response.resources:
            configs[name] = {entry[0]: entry[1] for entry in entries}
    return configs


if "kafka" in LOG_BACKENDS:  # the broker is started only when the Kafka backend is under test

    def test_kafka_init_creates_the_catalogs_topics_with_partitions_and_retention(kafka_bootstrap: str) -> None:
        env = {"GATHERLY_LOG_BACKEND": "kafka", "GATHERLY_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
        first = CliRunner().invoke(app, ["kafka", "init"], env=env)
        assert first.exit_code == 0, first.output
        expected = catalog_topics(partitions=4)
        assert f"{len(expected)} topics exist on {kafka_bootstrap}" in first.output

        async def check() -> None:
            async with KafkaLog(kafka_bootstrap) as log:
                for topic in expected:
                    ends = await log.end_offsets(topic.name)
                    assert set(ends) == {TopicPartition(topic.name, p) for p in range(4)}, topic.name
            configs = await topic_configs(kafka_bootstrap, [t.name for t in expected])
            for topic in expected:
                config = configs[topic.name]
                assert config["retention.ms"] == str(topic.retention_ms or -1), topic.name
                assert config["cleanup.policy"] == "delete", topic.name
                if topic.retention_ms is not None:
                    assert config["segment.ms"] == str(topic.retention_ms // 4), topic.name

        asyncio.run(check())
        again = CliRunner().invoke(app, ["kafka", "init"], env=env)  # existing topics are left as they are
        assert again.exit_code == 0, again.output
