#!/usr/bin/env bash
# converge.sh [ansible-playbook args]: run ansible-playbook, keep its output in
# .lab/logs/converge-<time>.log and print one summary line from the play recap:
#   CONVERGE ok=N changed=N failed=N unreachable=N tasks=N seconds=N
# The exit status is ansible-playbook's.
# With CONVERGE_PROGRESS=1 (make demo) the full output goes only to the log, and stderr
# shows one line per play and per role as it starts, with the elapsed time.
# .lab/logs/last-converge.log points at the newest log.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
source "$(dirname "$0")/lab/lib.sh"
cd "$REPO_ROOT"
mkdir -p "$IAC_LAB_DIR/logs"
logf=$IAC_LAB_DIR/logs/converge-$(date -u +%Y%m%dT%H%M%SZ).log
start=$(date +%s.%N)

# progress: the play and role lines of ansible-playbook's output, with elapsed time.
progress() {
  gawk -v start="$(date +%s)" '
    function stamp(   s) { s = systime() - start; return sprintf("[%3d:%02d]", s / 60, s % 60) }
    { gsub(/\033\[[0-9;]*m/, "") }
    /^PLAY \[/ { sub(/^PLAY \[/, ""); sub(/\] \**$/, ""); printf "%s play  %s\n", stamp(), $0; fflush(); role = ""; next }
    /^TASK \[/ {
      tasks++
      name = $0; sub(/^TASK \[/, "", name); sub(/\] \**$/, "", name)
      r = (index(name, " : ") ? substr(name, 1, index(name, " : ") - 1) : "")
      if (r != "" && r != role) { printf "%s   role %-12s (task %d)\n", stamp(), r, tasks; fflush() }
      role = r; next
    }
    /^fatal:|^failed:|^ERROR!/ { printf "%s   %s\n", stamp(), substr($0, 1, 160); fflush() }
  '
}

set +e
if [ "${CONVERGE_PROGRESS:-0}" = 1 ]; then
  ansible-playbook "$@" 2>&1 | tee "$logf" | progress >&2
else
  ansible-playbook "$@" 2>&1 | tee "$logf"
fi
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
ln -sfn "$(basename "$logf")" "$IAC_LAB_DIR/logs/last-converge.log"
exit "$rc"
