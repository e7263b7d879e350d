"""The test broker's start-up: formatting its storage for a new cluster id."""

from __future__ import annotations

from pathlib import Path

from gatherly.kernel.kafka_broker import broker_properties, format_storage, kafka_libs


def test_a_cluster_id_that_starts_with_a_dash_formats_the_storage(tmp_path: Path) -> None:
    # One random id in 64 starts with "-": given after `-t` the storage tool took it for an option and failed.
    cluster_id = "-K9et3B3QueDE3Luf_Hg6A"
    config = tmp_path / "server.properties"
    config.write_text(broker_properties(tmp_path / "data", 19092, 19093))
    format_storage(kafka_libs(), config, cluster_id)
    assert f"cluster.id={cluster_id}" in (tmp_path / "data" / "meta.properties").read_text()
