#!/usr/bin/env bash
# restore-drill.sh [HOST...] [-- platform-backup drill options]
# Restores the latest snapshot of each platform host into scratch space on that host and
# proves it against the manifest recorded at backup time and stored in the same snapshot:
# every file's SHA-256, mode and owner, every table's row count (databases restored into
# scratch databases). Files that grew or changed while the backup ran are counted, not
# failed, on the snapshot's own evidence, so it passes on a busy host. Time taken printed;
# exit status non-zero on any difference. The work is done on the host by
# /usr/local/sbin/platform-backup drill (roles/backup), the same code ops run by hand.
# Without HOST: the full platform, every host that carries a tier (groups platform, edge,
# app, analytics, db: the database dumps on the db host, user data and configuration wherever they
# live), one after another, then one line per host.
#   INVENTORY   inventory to read the hosts from (default inventory/lab)
#   e.g. scripts/restore-drill.sh -- --repo offsite      # the whole platform from off-site
#        scripts/restore-drill.sh dev-4 -- --location /var/tmp/copy-of-the-local-repository
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH
inventory=${INVENTORY:-inventory/lab}
key=${ANSIBLE_PRIVATE_KEY_FILE:-${IAC_LAB_DIR:-$PWD/.lab}/ssh/id_ed25519}
hosts=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do hosts+=("$1"); shift; done
[ "${1:-}" = -- ] && shift
if [ ${#hosts[@]} -eq 0 ]; then
  mapfile -t hosts < <(ansible-inventory -i "$inventory" --list | python3 -c '
import json, sys
inv = json.load(sys.stdin)
seen = []
for group in ("platform", "edge", "app", "analytics", "db"):
    for h in inv.get(group, {}).get("hosts", []):
        if h not in seen:
            seen.append(h)
print("\n".join(seen))')
fi
[ ${#hosts[@]} -gt 0 ] || { echo "restore-drill: no host in groups platform, edge, app, analytics, db of $inventory" >&2; exit 2; }

drill() {  # HOST [drill options]: one host's drill over SSH, as the inventory reaches it
  local host=$1; shift
  local vars addr user sudo=''
  vars=$(ansible-inventory -i "$inventory" --host "$host")
  addr=$(python3 -c 'import json,sys; v=json.loads(sys.argv[1]); print(v.get("ansible_host", sys.argv[2]))' "$vars" "$host")
  user=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("ansible_user", "root"))' "$vars")
  [ "$user" = root ] || sudo='sudo'
  # SSH options as the inventory gives them to Ansible (the lab: no host key pinning, since
  # lab hosts are recreated with new keys; production: known_hosts as usual).
  local ssh_opts
  read -r -a ssh_opts <<<"$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("ansible_ssh_common_args", ""))' "$vars")"
  ssh_opts+=(-o BatchMode=yes)
  echo "==> restore drill on $host ($addr)"
  ssh -i "$key" "${ssh_opts[@]}" "$user@$addr" $sudo /usr/local/sbin/platform-backup drill "$@"
}

total=$(date +%s)
summary=()
rc=0
for i in "${!hosts[@]}"; do
  host=${hosts[$i]}
  [ ${#hosts[@]} -gt 1 ] && echo "==> [$((i + 1))/${#hosts[@]}] $host"
  start=$(date +%s)
  one=0
  drill "$host" "$@" || one=$?
  [ $one -eq 0 ] || rc=$one
  line="restore drill on $host: $([ $one -eq 0 ] && echo PASSED || echo FAILED) in $(( $(date +%s) - start ))s"
  echo "==> $line"
  summary+=("$line")
done
if [ ${#hosts[@]} -gt 1 ]; then
  echo "==> full-platform restore drill ($(( $(date +%s) - total ))s):"
  printf '    %s\n' "${summary[@]}"
fi
exit "$rc"
