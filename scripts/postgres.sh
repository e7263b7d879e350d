#!/usr/bin/env bash
# A local PostgreSQL 15 with PostGIS 3 for the test suite (GATHERLY_TEST_DB_BACKENDS=...,postgresql): installs
# Debian's packages when missing, starts the cluster, and creates the `gatherly` role the tests log in with. Safe to
# run again.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }

if [ ! -x /usr/lib/postgresql/15/bin/postgres ]; then
  echo "== installing PostgreSQL 15"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql-15 >/dev/null
fi
# The groups and events services keep places as PostGIS geography points on PostgreSQL (nearby search).
if [ ! -f /usr/share/postgresql/15/extension/postgis.control ]; then
  echo "== installing PostGIS 3 for PostgreSQL 15"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql-15-postgis-3 >/dev/null
fi

if ! pg_lsclusters -h | awk '$1 == "15" && $2 == "main"' | grep -q .; then
  as_root pg_createcluster 15 main
fi
if ! pg_lsclusters -h | awk '$1 == "15" && $2 == "main" && $4 ~ /online/' | grep -q .; then
  as_root pg_ctlcluster 15 main start
fi
# Debezium reads the outbox from the write-ahead log: logical decoding needs wal_level=logical. The suites run five
# service databases per test, Kafka Connect and whole stacks beside them: 100 connections (the default) ran out when
# several ran at once. These need a restart, done only when one of them changes.
restart=no
if [ "$(as_postgres psql -Atqc 'SHOW wal_level')" != logical ]; then
  as_postgres psql -q -c 'ALTER SYSTEM SET wal_level = logical'
  restart=yes
fi
if [ "$(as_postgres psql -Atqc 'SHOW max_connections')" -lt 300 ]; then
  as_postgres psql -q -c 'ALTER SYSTEM SET max_connections = 300'
  restart=yes
fi
# Each stack's Debezium connectors hold one replication slot (and one WAL sender) per service database: the
# default 10 let only two stacks run at once (the suites start the kernel's, the stack test's and the API tests').
for setting in max_replication_slots max_wal_senders; do
  if [ "$(as_postgres psql -Atqc "SHOW $setting")" -lt 40 ]; then
    as_postgres psql -q -c "ALTER SYSTEM SET $setting = 40"
    restart=yes
  fi
done
if [ "$restart" = yes ]; then
  as_root pg_ctlcluster 15 main restart
fi
# Debian turns TLS on with a self-signed certificate, and asyncpg and JDBC then encrypt every round trip. This server
# is the project's own, on this machine's loopback only: TLS protects nothing here and cost the suites and benchmarks
# CPU on each statement (seen in a profile of the nearby search). A reload is enough.
if [ "$(as_postgres psql -Atqc 'SHOW ssl')" != off ]; then
  as_postgres psql -q -c 'ALTER SYSTEM SET ssl = off' -c 'SELECT pg_reload_conf()' >/dev/null
fi
# A replication slot left behind (a test run killed before its teardown dropped it) keeps every WAL file written
# after it: 71 GB in one afternoon of suites filled this machine's disk, and SeaweedFS then failed every S3 test.
# Past this lag PostgreSQL invalidates such a slot and recycles the WAL; a live slot of the suites never lags a
# fraction of it. A reload is enough.
if [ "$(as_postgres psql -Atqc 'SHOW max_slot_wal_keep_size')" != 8GB ]; then
  as_postgres psql -q -c "ALTER SYSTEM SET max_slot_wal_keep_size = '8GB'" -c 'SELECT pg_reload_conf()' >/dev/null
fi

as_postgres psql -q -v ON_ERROR_STOP=1 -d postgres <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'gatherly') THEN
    -- CREATEDB: every test gets a scratch database of its own.
    CREATE ROLE gatherly LOGIN CREATEDB PASSWORD 'gatherly';
  END IF;
  -- REPLICATION: Debezium's connectors log in as gatherly and open replication slots (tests/debezium).
  ALTER ROLE gatherly REPLICATION;
END
$$;
-- The groups and events migrations create the PostGIS extension in their database, as `gatherly migrate` does in
-- production; PostGIS is not a trusted extension, so only a superuser may (on RDS: a member of rds_superuser).
ALTER ROLE gatherly SUPERUSER;
SQL
echo "PostgreSQL ready: postgresql+asyncpg://gatherly:gatherly@127.0.0.1:5432/postgres"
