#!/usr/bin/env bash
# benchmarks/backup.sh [HOST]: measure restic on a lab host with a generated data set.
#   full backup (pg_dump + snapshot), incremental after a 1% change, repository growth,
#   restore time (files + pg_restore). Prints a table.
# Works in a scratch repository and a scratch database (bench_*) on the host: the host's
# real repositories and databases are not touched. Needs restic and PostgreSQL on the host
# (roles/backup and the PostgreSQL role, or the test prepare play).
#   BENCH_FILES_MB  portfolio-like files to generate (default 1024)
#   BENCH_DB_MB     approximate database size (default 300)
#   BENCH_DUMP_COMPRESS  pg_dump -Z level (default 0, as roles/backup)
#   INVENTORY       inventory to find HOST in (default inventory/lab)
# e.g. BENCH_FILES_MB=100 BENCH_DB_MB=30 benchmarks/backup.sh dev-4
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH
inventory=${INVENTORY:-inventory/lab}
key=${ANSIBLE_PRIVATE_KEY_FILE:-${IAC_LAB_DIR:-$PWD/.lab}/ssh/id_ed25519}
host=${1:-$(ansible-inventory -i "$inventory" --list | python3 -c 'import json,sys; print(json.load(sys.stdin)["platform"]["hosts"][0])')}
vars=$(ansible-inventory -i "$inventory" --host "$host")
addr=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("ansible_host", sys.argv[2]))' "$vars" "$host")
read -r -a ssh_opts <<<"$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("ansible_ssh_common_args", ""))' "$vars")"

echo "==> backup benchmark on $host ($addr): ${BENCH_FILES_MB:-1024} MB files, ~${BENCH_DB_MB:-300} MB database"
ssh -i "$key" "${ssh_opts[@]}" -o BatchMode=yes "root@$addr" \
  "BENCH_FILES_MB=${BENCH_FILES_MB:-1024} BENCH_DB_MB=${BENCH_DB_MB:-300} BENCH_DUMP_COMPRESS=${BENCH_DUMP_COMPRESS:-0} bash -s" <<'REMOTE'
set -euo pipefail
cd /   # runuser -u postgres cannot enter /root
base=/var/tmp/backup-bench
db=bench_portfolio
rm -rf "$base"; mkdir -p "$base/data" "$base/dumps"; chmod 700 "$base"
export RESTIC_REPOSITORY=$base/repo RESTIC_PASSWORD_FILE=$base/pw RESTIC_CACHE_DIR=$base/cache
cleanup() { cd /; rm -rf "$base"; runuser -u postgres -- dropdb --if-exists "$db" || true; runuser -u postgres -- dropdb --if-exists "${db}_restored" || true; }
trap cleanup EXIT
echo "bench-only-password" > "$base/pw"   # throw-away repository
t() { local s; s=$(date +%s%N); "$@" >/dev/null || { echo "FAILED: $*" >&2; exit 1; }; awk -v ns=$(( $(date +%s%N) - s )) 'BEGIN { printf "%.1f", ns / 1e9 }'; }
size() { du -sb "$1" | cut -f1; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# Portfolio-like data: per-user directories of JSON documents (half compressible text,
# half random base64), 20-200 KB each.
python3 - "$base/data" "$BENCH_FILES_MB" <<'PY'
import base64, json, os, random, sys
root, total = sys.argv[1], int(sys.argv[2]) * 1024 * 1024
rng = random.Random(42); written = 0; i = 0
while written < total:
    user = f"user{i % 500:04d}"; os.makedirs(f"{root}/users/{user}", exist_ok=True)
    n = rng.randrange(20_000, 200_000)
    doc = {"id": i, "title": f"Portfolio {i}", "text": ("lorem ipsum dolor sit amet " * (n // 54)),
           "blob": base64.b64encode(rng.randbytes(n // 3)).decode()}
    data = json.dumps(doc).encode()
    with open(f"{root}/users/{user}/item{i:06d}.json", "wb") as fh:
        fh.write(data)
    written += len(data); i += 1
print(f"generated {i} files")
PY
runuser -u postgres -- dropdb --if-exists "$db"
runuser -u postgres -- createdb "$db"
rows=$(( BENCH_DB_MB * 1024 * 1024 / 300 ))
runuser -u postgres -- psql -q -d "$db" -c "CREATE TABLE event (id bigint PRIMARY KEY, at timestamptz, payload text);
  INSERT INTO event SELECT g, now() - g * interval '1 second', repeat(md5(g::text), 4) || md5(random()::text) || repeat(md5((g*7)::text), 3)
  FROM generate_series(1, $rows) g;"
db_bytes=$(runuser -u postgres -- psql -At -d "$db" -c "SELECT pg_database_size('$db')")
files_bytes=$(size "$base/data")

restic init -q
# As roles/backup does by default: uncompressed custom format (-Z0), restic compresses.
dump() { runuser -u postgres -- pg_dump -Fc -Z "${BENCH_DUMP_COMPRESS:-0}" -d "$db" > "$base/dumps/$db.dump"; }
full_dump=$(t dump)
full_backup=$(t restic backup -q "$base/data" "$base/dumps")
repo_full=$(size "$base/repo")

# 1% change: rewrite 1% of the files, update 1% of the rows.
python3 - "$base/data" <<'PY'
import os, random, sys
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(sys.argv[1]) for f in fs)
rng = random.Random(7)
for path in rng.sample(files, max(1, len(files) // 100)):
    with open(path, "r+b") as fh:
        fh.seek(rng.randrange(0, max(1, os.path.getsize(path) - 64)))
        fh.write(rng.randbytes(64).hex().encode())
PY
runuser -u postgres -- psql -q -d "$db" -c "UPDATE event SET payload = md5(random()::text) || payload WHERE id % 100 = 0"
incr_dump=$(t dump)
incr_backup=$(t restic backup -q "$base/data" "$base/dumps")
repo_incr=$(size "$base/repo")

restore_files=$(t restic restore latest --target "$base/restore")
runuser -u postgres -- createdb "${db}_restored"
# The restored dump is readable by root only: pg_restore reads it on stdin.
restore_db=$(t runuser -u postgres -- pg_restore --exit-on-error -d "${db}_restored" < "$base/restore$base/dumps/$db.dump")

printf '\n%-44s %12s\n' "measure (restic $(restic version | cut -d' ' -f2))" "value"
printf '%-44s %12s\n' "--------------------------------------------" "------------"
printf '%-44s %10s MB\n' "data set: files" "$(mb "$files_bytes")"
printf '%-44s %10s MB\n' "data set: database (pg_database_size)" "$(mb "$db_bytes")"
printf '%-44s %10.1f s\n' "full: pg_dump -Fc" "$full_dump"
printf '%-44s %10.1f s\n' "full: restic backup" "$full_backup"
printf '%-44s %10s MB\n' "repository after full" "$(mb "$repo_full")"
printf '%-44s %10.1f s\n' "incremental (1% changed): pg_dump -Fc" "$incr_dump"
printf '%-44s %10.1f s\n' "incremental (1% changed): restic backup" "$incr_backup"
printf '%-44s %10s MB\n' "repository growth from the incremental" "$(mb $(( repo_incr - repo_full )))"
printf '%-44s %10.1f s\n' "restore: restic restore (files + dump)" "$restore_files"
printf '%-44s %10.1f s\n' "restore: pg_restore" "$restore_db"
REMOTE
