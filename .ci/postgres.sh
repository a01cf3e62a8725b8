#!/usr/bin/env bash
# Install (Debian's package) and start a PostgreSQL server for the job store's PostgreSQL tests, then print
#   export TUNEFORGE_TEST_POSTGRES_URL=postgresql+psycopg://tuneforge:tuneforge@127.0.0.1:PORT/tuneforge_test
# on stdout. Every failure says why on stderr and exits non-zero: the caller then runs the tests without
# it, and those tests skip with the reason (nothing else depends on PostgreSQL).
set -uo pipefail

fail() { echo "postgres: $*; the PostgreSQL tests will be skipped" >&2; exit 1; }
as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$1"; else sudo -n -u postgres sh -c "$1"; fi; }

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1 || fail "not root and no sudo: cannot install postgresql"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  $SUDO apt-get update -qq >/dev/null 2>&1 || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null 2>&1 || fail "apt-get install postgresql failed"
fi
cluster=$(pg_lsclusters --no-header 2>/dev/null | head -n1)
[ -n "$cluster" ] || fail "no PostgreSQL cluster after installing (pg_lsclusters lists none)"
version=$(echo "$cluster" | awk '{print $1}'); name=$(echo "$cluster" | awk '{print $2}'); port=$(echo "$cluster" | awk '{print $3}')
if ! echo "$cluster" | grep -q online; then
  if [ "$(id -u)" = 0 ]; then pg_ctlcluster "$version" "$name" start >/dev/null 2>&1 || service postgresql start >/dev/null 2>&1
  else sudo -n pg_ctlcluster "$version" "$name" start >/dev/null 2>&1; fi || fail "could not start cluster $version/$name"
fi
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 1; done
pg_isready -q -h 127.0.0.1 -p "$port" || fail "the server on port $port does not answer"
as_postgres "psql -q -p $port -tc \"SELECT 1 FROM pg_roles WHERE rolname='tuneforge'\" | grep -q 1 || psql -q -p $port -c \"CREATE USER tuneforge WITH PASSWORD 'tuneforge'\"" >/dev/null 2>&1 \
  || fail "could not create the database user"
as_postgres "psql -q -p $port -tc \"SELECT 1 FROM pg_database WHERE datname='tuneforge_test'\" | grep -q 1 || psql -q -p $port -c 'CREATE DATABASE tuneforge_test OWNER tuneforge'" >/dev/null 2>&1 \
  || fail "could not create the test database"
echo "export TUNEFORGE_TEST_POSTGRES_URL=postgresql+psycopg://tuneforge:tuneforge@127.0.0.1:$port/tuneforge_test"
