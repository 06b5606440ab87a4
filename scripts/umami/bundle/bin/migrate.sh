#!/usr/bin/env bash
# Apply umami's PostgreSQL migrations with psql alone, the way `prisma migrate deploy`
# would, without Prisma's native schema engine.
#
# Connection: DATABASE_URL (postgresql://user:password@host:port/db?sslmode=...) or the
# libpq PG* variables (PGHOST, PGUSER, PGDATABASE, PGPASSWORD or ~/.pgpass, ...).
# The URL is split into PG* variables so that no password appears in psql's argv.
# No argument is accepted.
#
# Behaviour, compatible with Prisma's own bookkeeping:
#   - creates "_prisma_migrations" exactly as Prisma does, if missing;
#   - refuses to run while Prisma has recorded a failed migration (finished_at IS NULL);
#   - applies each migration directory not yet recorded, in name order, each in its own
#     transaction together with its row (checksum = sha256 of migration.sql, as Prisma);
#   - takes Prisma's advisory lock (72707369), so concurrent runners serialise.
# Output (last line): "CHANGED: applied N" or "OK: up to date". Exit non-zero on failure.
set -euo pipefail

readonly PRISMA_ADVISORY_LOCK=72707369

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
migrations_dir="${UMAMI_MIGRATIONS_DIR:-$here/migrations}"

die() {
  echo "ERROR: $*" >&2
  exit 1
}

[[ $# -eq 0 ]] || die "no arguments are accepted; pass the connection in DATABASE_URL or PG* variables"
command -v psql >/dev/null || die "psql not found (install postgresql-client)"
[[ -d $migrations_dir ]] || die "migrations directory not found: $migrations_dir"

# Percent-decode one URL component.
urldecode() {
  local s=${1//\\/\\\\}
  printf '%b' "${s//%/\\x}"
}

# Split DATABASE_URL into libpq environment variables.
export_database_url() {
  local url=$1 rest userinfo="" query="" db="" hostport host="" port="" pair key value
  [[ $url =~ ^postgres(ql)?:// ]] || die "DATABASE_URL must start with postgresql:// or postgres://"
  rest=${url#*://}
  if [[ $rest == *@* ]]; then
    userinfo=${rest%@*}
    rest=${rest##*@}
  fi
  if [[ $rest == *\?* ]]; then
    query=${rest#*\?}
    rest=${rest%%\?*}
  fi
  if [[ $rest == */* ]]; then
    db=${rest#*/}
    rest=${rest%%/*}
  fi
  hostport=$rest
  if [[ $hostport =~ ^\[([^]]+)\](:([0-9]+))?$ ]]; then
    host=${BASH_REMATCH[1]}
    port=${BASH_REMATCH[3]}
  elif [[ $hostport == *:* ]]; then
    host=${hostport%:*}
    port=${hostport##*:}
  else
    host=$hostport
  fi

  if [[ -n $userinfo ]]; then
    if [[ $userinfo == *:* ]]; then
      PGPASSWORD=$(urldecode "${userinfo#*:}")
      export PGPASSWORD
    fi
    PGUSER=$(urldecode "${userinfo%%:*}")
    export PGUSER
  fi
  if [[ -n $host ]]; then PGHOST=$(urldecode "$host"); export PGHOST; fi
  if [[ -n $port ]]; then export PGPORT=$port; fi
  if [[ -n $db ]]; then PGDATABASE=$(urldecode "$db"); export PGDATABASE; fi

  local IFS='&'
  for pair in $query; do
    [[ -n $pair ]] || continue
    key=${pair%%=*}
    value=$(urldecode "${pair#*=}")
    case $key in
      host) export PGHOST=$value ;;
      port) export PGPORT=$value ;;
      user) export PGUSER=$value ;;
      password) export PGPASSWORD=$value ;;
      dbname) export PGDATABASE=$value ;;
      sslmode) export PGSSLMODE=$value ;;
      sslrootcert) export PGSSLROOTCERT=$value ;;
      sslcert) export PGSSLCERT=$value ;;
      sslkey) export PGSSLKEY=$value ;;
      application_name) export PGAPPNAME=$value ;;
      connect_timeout) export PGCONNECT_TIMEOUT=$value ;;
      options) export PGOPTIONS=$value ;;
      schema)
        # umami's tables live in the role's default search_path; the app ignores this.
        [[ $value == public ]] || die "DATABASE_URL schema=$value is not supported (umami uses the default schema)"
        ;;
      connection_limit | pool_timeout | pgbouncer | socket_timeout | statement_cache_size | connect_timeout_ms) ;;
      *) echo "WARNING: ignoring DATABASE_URL parameter '$key'" >&2 ;;
    esac
  done
}

if [[ -n ${DATABASE_URL:-} ]]; then
  export_database_url "$DATABASE_URL"
fi
export PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-10}"

psql_run() {
  psql -X -q -A -t -w -v ON_ERROR_STOP=1 "$@"
}

# 1. Prisma's bookkeeping table (same definition as Prisma's schema engine creates).
psql_run --single-transaction -f - <<SQL >/dev/null || die "cannot create _prisma_migrations (is the database reachable?)"
SET LOCAL client_min_messages = warning;
SELECT pg_advisory_xact_lock($PRISMA_ADVISORY_LOCK);
CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
);
SQL

# 2. A failed migration recorded by Prisma must be resolved by a human first (P3009).
failed=$(psql_run -c 'SELECT migration_name FROM "_prisma_migrations" WHERE finished_at IS NULL AND rolled_back_at IS NULL ORDER BY started_at') ||
  die "cannot read _prisma_migrations"
[[ -z $failed ]] || die "failed migration(s) recorded in _prisma_migrations: ${failed//$'\n'/ }; resolve them before migrating"

# 3. What is already applied, with checksums.
declare -A applied=()
rows=$(psql_run -c 'SELECT migration_name, checksum FROM "_prisma_migrations" WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL') ||
  die "cannot read _prisma_migrations"
while IFS='|' read -r name checksum; do
  [[ -n $name ]] && applied[$name]=$checksum
done <<<"$rows"

# 4. Apply the rest, in name order, each in one transaction with its bookkeeping row.
count=0
while IFS= read -r dir; do
  name=$(basename "$dir")
  file="$dir/migration.sql"
  [[ $name =~ ^[A-Za-z0-9_]+$ ]] || die "unexpected migration name: $name"
  [[ -f $file ]] || continue
  checksum=$(sha256sum "$file" | cut -d' ' -f1)
  if [[ -n ${applied[$name]+x} ]]; then
    if [[ ${applied[$name]} != "$checksum" ]]; then
      echo "WARNING: migration $name was modified after it was applied (checksum differs)" >&2
    fi
    continue
  fi
  out=$(psql_run --single-transaction -v name="$name" -v checksum="$checksum" -v file="$file" -f - <<SQL
SELECT pg_advisory_xact_lock($PRISMA_ADVISORY_LOCK) \\gset
SELECT EXISTS (SELECT 1 FROM "_prisma_migrations" WHERE migration_name = :'name' AND finished_at IS NOT NULL AND rolled_back_at IS NULL) AS already \\gset
\\if :already
\\else
\\i :file
INSERT INTO "_prisma_migrations" (id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at, applied_steps_count)
  VALUES (gen_random_uuid()::text, :'checksum', clock_timestamp(), :'name', NULL, NULL, now(), 1);
\\echo UMAMI_MIGRATION_APPLIED
\\endif
SQL
  ) || die "migration $name failed (rolled back, nothing recorded)"
  if [[ $out == *UMAMI_MIGRATION_APPLIED* ]]; then
    echo "applied migration $name" >&2
    count=$((count + 1))
  fi
done < <(find "$migrations_dir" -mindepth 1 -maxdepth 1 -type d | LC_ALL=C sort)

if ((count > 0)); then
  echo "CHANGED: applied $count"
else
  echo "OK: up to date"
fi
