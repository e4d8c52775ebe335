#!/usr/bin/env bash
# Sets up the local PostgreSQL for `tributary capture`'s tests: wal_level = logical and room
# for slots and walsenders, restarting the server when a setting changes. Idempotent.
# Usage: scripts/pg_logical.sh   (PGHOST/PGPORT/PGUSER as for psql; default 127.0.0.1:5432 postgres)
set -euo pipefail
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
if ! pg_isready -q 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
setting() { psql -XAtc "SHOW $1"; }
restart=0
if [ "$(setting wal_level)" != logical ]; then
  psql -Xqc "ALTER SYSTEM SET wal_level = logical"; restart=1
fi
if [ "$(setting max_replication_slots)" -lt 20 ]; then
  psql -Xqc "ALTER SYSTEM SET max_replication_slots = 20"; restart=1
fi
if [ "$(setting max_wal_senders)" -lt 20 ]; then
  psql -Xqc "ALTER SYSTEM SET max_wal_senders = 20"; restart=1
fi
if [ "$restart" = 1 ]; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main restart
  for _ in $(seq 1 30); do pg_isready -q && break; sleep 1; done
fi
echo "wal_level=$(setting wal_level) max_replication_slots=$(setting max_replication_slots) max_wal_senders=$(setting max_wal_senders)"
