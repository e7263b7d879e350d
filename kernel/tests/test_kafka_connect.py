"""The Debezium outbox connector's config as rendered from deploy/debezium/outbox-connector.json, and how it stays
in step with the Strimzi KafkaConnectors of deploy/k8s (no worker needed: tests/debezium runs one)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import URL

from gatherly.kernel.kafka_connect import outbox_connector, worker_properties

K8S_CONNECTORS = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "platform" / "debezium" / "connectors.yaml"


def test_the_template_is_filled_from_the_database_url() -> None:
    connector = outbox_connector("groups", "postgresql+asyncpg://dbz:pw@db.internal:6543/gatherly_groups")
    assert connector.name == "gatherly-groups-outbox"
    assert connector.database == "gatherly_groups"
    assert connector.slot == "gatherly_groups_outbox"
    config = connector.config
    assert (config["database.hostname"], config["database.port"]) == ("db.internal", "6543")
    assert (config["database.user"], config["database.password"]) == ("dbz", "pw")
    # Debezium's own expression is left for Debezium: the topic is the row's aggregatetype, as our relay picks it.
    assert config["transforms.outbox.route.topic.replacement"] == "${routedByValue}"
    assert config["transforms.outbox.route.by.field"] == "aggregatetype"


def test_a_password_with_quotes_backslashes_and_braces_arrives_intact() -> None:
    # The values are put into JSON text: one not escaped would break the document or change the password, and a
    # placeholder inside a value must not be filled in again.
    password = 'p"w\\d {{user}} @:/\u00e9'
    url = URL.create("postgresql+asyncpg", "gatherly", password, "127.0.0.1", 5432, "gatherly_users")
    connector = outbox_connector("users", url.render_as_string(hide_password=False))
    assert connector.config["database.password"] == password
    assert connector.config["database.user"] == "gatherly"


def test_sqlite_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="PostgreSQL only"):
        outbox_connector("users", "sqlite:////tmp/users.db")


def test_the_local_connector_matches_the_kubernetes_connectors() -> None:
    # Same router, same headers, same slot and publication scheme: only where the database is and how the password
    # arrives (a mounted Secret there) differ.
    local = outbox_connector("events", "postgresql+asyncpg://gatherly:pw@127.0.0.1/gatherly_events").config
    documents = [d for d in yaml.safe_load_all(K8S_CONNECTORS.read_text()) if d]
    k8s = next(d for d in documents if d["metadata"]["name"] == "gatherly-events-outbox")
    k8s_config = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in k8s["spec"]["config"].items()}
    differing = {"database.hostname", "database.port", "database.user", "database.password", "topic.prefix"}
    for key, value in k8s_config.items():
        if key not in differing:
            assert local[key] == value, key
    assert local["connector.class"] == k8s["spec"]["class"]


def test_the_worker_speaks_plain_strings_as_our_consumers_read_them() -> None:
    properties = worker_properties("127.0.0.1:9092", 8083, Path("/plugins"), "gatherly-debezium")
    for converter in ("key", "value", "header"):
        assert f"{converter}.converter=org.apache.kafka.connect.storage.StringConverter" in properties
    assert "plugin.path=/plugins" in properties
    assert "listeners=http://127.0.0.1:8083" in properties
