#!/usr/bin/env bash
# benchmarks/backup.sh [HOST]: measure the backup job on a lab host with a generated data set.
#   full backup, incremental after a 1% change, restore (the restore drill), with the job's own
#   code: /usr/local/sbin/platform-backup run / drill with a scratch configuration
#   (PLATFORM_BACKUP_CONFIG): dumps with row counts, manifest, restic snapshot, local retention.
#   Prints the three times, their parts, and both ratios: incremental/full time and
#   repository growth/data changed.
# Works in a scratch repository, scratch staging, status and manifest files and a scratch
# database (bench_*): the host's real repositories, databases and status are not touched.
# Needs roles/backup and PostgreSQL on the host.
#   BENCH_FILES_MB   portfolio-like files to generate (default 1024)
#   BENCH_DB_MB      approximate database size (default 300)
#   BENCH_DB_CHANGE  how 1% of the database changes: append (default: new rows, as analytics
#                    events and action records arrive) or scatter (UPDATE every 100th row: the
#                    worst case for any chunking, every stretch of the table changes)
#   INVENTORY        inventory to find HOST in (default inventory/lab)
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

echo "==> backup benchmark on $host ($addr): ${BENCH_FILES_MB:-1024} MB files, ~${BENCH_DB_MB:-300} MB database, change: ${BENCH_DB_CHANGE:-append}"
ssh -i "$key" "${ssh_opts[@]}" -o BatchMode=yes "root@$addr" \
  "BENCH_FILES_MB=${BENCH_FILES_MB:-1024} BENCH_DB_MB=${BENCH_DB_MB:-300} BENCH_DB_CHANGE=${BENCH_DB_CHANGE:-append} bash -s" <<'REMOTE'
set -euo pipefail
cd /   # the PostgreSQL clients run as postgres, which cannot enter /root
base=/var/tmp/backup-bench
db=bench_portfolio
rm -rf "$base"; mkdir -p "$base/data" "$base/state"; chmod 700 "$base"
cleanup() { cd /; rm -rf "$base"; runuser -u postgres -- dropdb --if-exists "$db" || true; }
trap cleanup EXIT
echo "bench-only-password" > "$base/pw"   # throw-away repository
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

# The job's configuration with everything pointed at scratch space, this data set and database.
python3 - "$base" "$db" <<'PY'
import json, sys
base, db = sys.argv[1], sys.argv[2]
cfg = json.load(open("/etc/backup/backup.json"))
cfg.update(host="bench", repositories=[{"name": "local", "kind": "local", "url": f"{base}/repo", "prune": True}],
           password_file=f"{base}/pw", cache_dir=f"{base}/cache", paths=[f"{base}/data"], required_paths=[],
           manifest_file=f"{base}/state/manifest.jsonl", status_file=f"{base}/state/status.json",
           check_status_file=f"{base}/state/check-status.json", drill_dir=f"{base}/drill",
           installed_file=f"{base}/state/installed", alert_motd_file=f"{base}/state/motd")
cfg["postgresql"].update(databases=[db], dump_dir=f"{base}/dumps")
json.dump(cfg, open(f"{base}/backup.json", "w"), indent=2)
PY
export PLATFORM_BACKUP_CONFIG=$base/backup.json
platform-backup init >/dev/null 2>&1
job() {  # run the job, print "total dumps manifest restic" seconds from its own status file
  local s e
  s=$(date +%s%N)
  platform-backup run >"$base/state/run.log" 2>&1 || { tail -20 "$base/state/run.log" >&2; exit 1; }
  e=$(date +%s%N)
  python3 - "$base/state/status.json" "$(( e - s ))" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["timings"]
print(f"{int(sys.argv[2]) / 1e9:.1f} {t['dumps']} {t['manifest']} {t['repositories']['local']}")
PY
}
read -r full full_dump full_manifest full_restic <<<"$(job)"
repo_full=$(size "$base/repo")

# 1% change: rewrite 64 bytes in 1% of the files; 1% of the rows change in the database.
changed_file_bytes=$(python3 - "$base/data" <<'PY'
import os, random, sys
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(sys.argv[1]) for f in fs)
rng = random.Random(7); total = 0
for path in rng.sample(files, max(1, len(files) // 100)):
    with open(path, "r+b") as fh:
        fh.seek(rng.randrange(0, max(1, os.path.getsize(path) - 64)))
        fh.write(rng.randbytes(64).hex().encode())
    total += os.path.getsize(path)
print(total)
PY
)
table_before=$(runuser -u postgres -- psql -At -d "$db" -c "SELECT pg_relation_size('event')")
if [ "$BENCH_DB_CHANGE" = scatter ]; then
  runuser -u postgres -- psql -q -d "$db" -c "UPDATE event SET payload = md5(random()::text) || payload WHERE id % 100 = 0"
  changed_db_bytes=$(( table_before / 100 ))
else
  runuser -u postgres -- psql -q -d "$db" -c "INSERT INTO event SELECT g, now(), repeat(md5(g::text), 4) || md5(random()::text) || repeat(md5((g*7)::text), 3)
    FROM generate_series($rows + 1, $rows + $rows / 100) g"
  changed_db_bytes=$(( $(runuser -u postgres -- psql -At -d "$db" -c "SELECT pg_relation_size('event')") - table_before ))
fi
read -r incr incr_dump incr_manifest incr_restic <<<"$(job)"
repo_incr=$(size "$base/repo")
growth=$(( repo_incr - repo_full ))
changed=$(( changed_file_bytes + changed_db_bytes ))

platform-backup drill >"$base/state/drill.log" 2>&1 || { tail -20 "$base/state/drill.log" >&2; exit 1; }
read -r restore_total restore_files <<<"$(python3 -c '
import json, sys
line = next(x for x in open(sys.argv[1]) if x.startswith("drill-summary: "))
s = json.loads(line.split(": ", 1)[1])
print(s["seconds"], s["restore_seconds"])' "$base/state/drill.log")"

printf '\n%-52s %12s\n' "measure (restic $(restic version | cut -d' ' -f2), change: $BENCH_DB_CHANGE)" "value"
printf '%-52s %12s\n' "----------------------------------------------------" "------------"
printf '%-52s %10s MB\n' "data set: files" "$(mb "$files_bytes")"
printf '%-52s %10s MB\n' "data set: database (pg_database_size)" "$(mb "$db_bytes")"
printf '%-52s %10.1f s\n' "FULL backup (platform-backup run)" "$full"
printf '%-52s %10s s\n' "  dumps + row counts / manifest / restic" "$full_dump / $full_manifest / $full_restic"
printf '%-52s %10s MB\n' "repository after full" "$(mb "$repo_full")"
printf '%-52s %10.1f s\n' "INCREMENTAL backup after a 1% change" "$incr"
printf '%-52s %10s s\n' "  dumps + row counts / manifest / restic" "$incr_dump / $incr_manifest / $incr_restic"
printf '%-52s %10s MB\n' "data changed (files rewritten + table growth)" "$(mb "$changed")"
printf '%-52s %10s MB\n' "repository growth from the incremental" "$(mb "$growth")"
printf '%-52s %10.1f s\n' "RESTORE drill (restore, prove, pg_restore, counts)" "$restore_total"
printf '%-52s %10.1f s\n' "  of which restic restore" "$restore_files"
awk -v i="$incr" -v f="$full" -v ir="$incr_restic" -v fr="$full_restic" -v g="$growth" -v c="$changed" 'BEGIN {
  printf "%-52s %12.2f\n", "ratio: incremental / full (whole job)", i / f
  printf "%-52s %12.2f\n", "ratio: incremental / full (restic snapshot step)", ir / fr
  printf "%-52s %12.2f\n", "ratio: repository growth / data changed", g / c }'
REMOTE
