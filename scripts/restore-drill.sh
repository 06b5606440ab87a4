#!/usr/bin/env bash
# restore-drill.sh [HOST] [-- platform-backup drill options]
# Restores the latest snapshot of a platform host into scratch space on that host and
# proves it against the manifest recorded at backup time and stored in the same snapshot:
# every file's SHA-256, mode and owner, every table's row count (databases restored into
# scratch databases). Files that grew or changed while the backup ran are counted, not
# failed, on the snapshot's own evidence, so it passes on a busy host. Time taken printed;
# exit status non-zero on any difference. The work is done on the host by
# /usr/local/sbin/platform-backup drill (roles/backup), the same code ops run by hand.
#   INVENTORY   inventory to read the host's address from (default inventory/lab)
#   HOST        inventory host (default: the first host of group platform)
#   e.g. scripts/restore-drill.sh dev-4 -- --repo offsite
#        scripts/restore-drill.sh dev-4 -- --location /var/tmp/copy-of-the-local-repository
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH
inventory=${INVENTORY:-inventory/lab}
key=${ANSIBLE_PRIVATE_KEY_FILE:-${IAC_LAB_DIR:-$PWD/.lab}/ssh/id_ed25519}
host=''
if [ $# -gt 0 ] && [ "$1" != -- ]; then host=$1; shift; fi
[ "${1:-}" = -- ] && shift
if [ -z "$host" ]; then
  host=$(ansible-inventory -i "$inventory" --list | python3 -c 'import json,sys; print(json.load(sys.stdin)["platform"]["hosts"][0])')
fi
vars=$(ansible-inventory -i "$inventory" --host "$host")
addr=$(python3 -c 'import json,sys; v=json.loads(sys.argv[1]); print(v.get("ansible_host", sys.argv[2]))' "$vars" "$host")
user=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("ansible_user", "root"))' "$vars")
sudo=''
[ "$user" = root ] || sudo='sudo'
echo "==> restore drill on $host ($addr)"
start=$(date +%s)
rc=0
# SSH options as the inventory gives them to Ansible (the lab: no host key pinning, since
# lab hosts are recreated with new keys; production: known_hosts as usual).
read -r -a ssh_opts <<<"$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("ansible_ssh_common_args", ""))' "$vars")"
ssh_opts+=(-o BatchMode=yes)
ssh -i "$key" "${ssh_opts[@]}" "$user@$addr" $sudo /usr/local/sbin/platform-backup drill "$@" || rc=$?
echo "==> restore drill on $host: $([ $rc -eq 0 ] && echo PASSED || echo FAILED) in $(( $(date +%s) - start ))s"
exit "$rc"
