#!/usr/bin/env bash
# host-state.sh [ssh options...] USER@HOST: print what a read-only audit must leave as it
# was on a platform host, to compare before and after `make audit`:
#   - the main PIDs of nginx, the app, Umami and PostgreSQL (nothing restarted),
#   - fail2ban's banned addresses per jail (nothing banned),
#   - restic snapshot counts per repository (no backup run; read with --no-lock),
#   - every file under /etc /var/lib /opt /var/log with its mtime (nothing created,
#     removed or changed, logs apart).
# Read-only itself: it only lists and reads.
#   scripts/audit/host-state.sh -i .lab/ssh/id_ed25519 root@10.89.77.42 > before.txt
#   make audit INVENTORY=...; scripts/audit/host-state.sh ... > after.txt; diff before.txt after.txt
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 [ssh options...] USER@HOST" >&2; exit 64; }
ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "$@" bash -s <<'REMOTE'
set -u
echo "## main PIDs"
for unit in nginx.service platform.service umami.service $(systemctl list-units --plain --no-legend 'postgresql@*' | awk '{print $1}'); do
  printf '%s %s\n' "$unit" "$(systemctl show -p MainPID --value "$unit")"
done
echo "## fail2ban bans"
for jail in $(fail2ban-client status 2>/dev/null | sed -n 's/.*Jail list:[[:space:]]*//p' | tr -d ','); do
  printf '%s: %s\n' "$jail" "$(fail2ban-client status "$jail" | sed -n 's/.*Banned IP list:[[:space:]]*//p')"
done
echo "## restic snapshots"
if [ -x /usr/local/sbin/platform-backup ] && [ -f /etc/backup/backup.json ]; then
  for repo in $(python3 -c 'import json; print(" ".join(r["name"] for r in json.load(open("/etc/backup/backup.json"))["repositories"]))'); do
    printf '%s %s\n' "$repo" "$(/usr/local/sbin/platform-backup restic "$repo" snapshots --no-lock --json 2>/dev/null \
      | python3 -c 'import json, sys; print(len(json.load(sys.stdin) or []))')"
  done
fi
echo "## files (mtime path)"
find /etc /var/lib /opt /var/log -xdev \( -type f -o -type l -o -type d \) -printf '%TY-%Tm-%Td %TH:%TM:%.2TS %p\n' 2>/dev/null | sort -k3
REMOTE
