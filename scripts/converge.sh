#!/usr/bin/env bash
# converge.sh [ansible-playbook args]: run ansible-playbook, keep its output in
# .lab/logs/converge-<time>.log and print one summary line from the play recap:
#   CONVERGE ok=N changed=N failed=N unreachable=N tasks=N seconds=N
# The exit status is ansible-playbook's.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
source "$(dirname "$0")/lab/lib.sh"
cd "$REPO_ROOT"
mkdir -p "$IAC_LAB_DIR/logs"
logf=$IAC_LAB_DIR/logs/converge-$(date -u +%Y%m%dT%H%M%SZ).log
start=$(date +%s.%N)
set +e
ansible-playbook "$@" 2>&1 | tee "$logf"
rc=${PIPESTATUS[0]}
set -e
end=$(date +%s.%N)
# Sum the recap over hosts; count the tasks that ran (profile_tasks lines).
awk -v start="$start" -v end="$end" '
  { gsub(/\033\[[0-9;]*m/, "") }  # colours (ANSIBLE_FORCE_COLOR) off
  /^PLAY RECAP/ { recap = 1; next }
  recap && /ok=/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] in t || kv[2] ~ /^[0-9]+$/) t[kv[1]] += kv[2] } }
  /^TASK \[/ { tasks++ }
  END { printf "CONVERGE ok=%d changed=%d failed=%d unreachable=%d tasks=%d seconds=%.1f\n", t["ok"], t["changed"], t["failed"], t["unreachable"], tasks, end - start }
' "$logf" | tee "$IAC_LAB_DIR/logs/last-converge.summary"
exit "$rc"
