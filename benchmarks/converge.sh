#!/usr/bin/env bash
# benchmarks/converge.sh [IMAGE] [single|tiers]: wall time of a fresh converge of
# playbooks/site.yml on a new lab host (bench-web, from localhost/iac-lab:IMAGE, default
# ubuntu2404) and of the idempotent rerun, with the tasks counted, their ratio (target: the
# no-op rerun takes at most a quarter of the fresh converge) and where the rerun spends its
# time, per role. `tiers`: the tiered layout of docs/tiers.md on two new hosts, bench-web
# (edge, app, analytics) and bench-db (db: PostgreSQL with the app's and Umami's data).
# A measurement, not a test: it prints figures.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
source "$(dirname "$0")/../scripts/lab/lib.sh"
cd "$REPO_ROOT"
image=${1:-ubuntu2404}
layout=${2:-single}
name=bench-web
ip=$(lab_host_ip "$name")
case $layout in
  single) hosts=("$name") ;;
  tiers) hosts=("$name" bench-db) ;;
  *) die "layout '$layout': single or tiers" ;;
esac
inv=$(mktemp -d /tmp/iac-bench.XXXXXX)
# shellcheck disable=SC2064  # the host list is fixed now
trap "for h in ${hosts[*]}; do scripts/lab/host.sh down \$h; done; rm -rf '$inv'" EXIT

for h in "${hosts[@]}"; do
  scripts/lab/host.sh down "$h"
  scripts/lab/host.sh up "$h" "$image" >/dev/null
done
ln -s "$REPO_ROOT/inventory/lab/group_vars" "$inv/group_vars"
if [ "$layout" = single ]; then
  cat >"$inv/hosts.yml" <<YAML
all:
  children:
    platform:
      hosts:
        $name: {ansible_host: $ip, lab_domain: bench.lab.test}
YAML
else
  cat >"$inv/hosts.yml" <<YAML
all:
  children:
    platform: {hosts: {}}
    edge:
      hosts:
        $name: {ansible_host: $ip, lab_domain: bench.lab.test}
    app: {hosts: {$name: }}
    analytics: {hosts: {$name: }}
    db:
      hosts:
        bench-db: {ansible_host: $(lab_host_ip bench-db)}
YAML
fi

export PROFILE_TASKS_TASK_OUTPUT_LIMIT=all
# Full logs stay in the lab's log directory (each task with its time: profile_tasks).
logs="${IAC_LAB_DIR:-$REPO_ROOT/.lab}/logs"
mkdir -p "$logs"
run() {
  local log="$logs/benchmark-$image-$layout-$1.log"
  printf '==> %s converge on %s (log: %s)\n' "$1" "${hosts[*]}" "$log" >&2
  scripts/converge.sh -i "$inv" playbooks/site.yml >"$log" 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
  tail -n 1 "$log"
}
fresh=$(run fresh)
rerun=$(run rerun)
field() { sed -n "s/.*$2=\([0-9.]*\).*/\1/p" <<<"$1"; }
printf '\nconverge of playbooks/site.yml on %s new %s host(s), layout %s: %s (%s cores, %s)\n' \
  "${#hosts[@]}" "$image" "$layout" "${hosts[*]}" "$(nproc)" "$(date -u +%F)"
printf '%-16s %10s %8s %8s\n' run seconds tasks changed
printf '%-16s %10s %8s %8s\n' fresh "$(field "$fresh" seconds)" "$(field "$fresh" tasks)" "$(field "$fresh" changed)"
printf '%-16s %10s %8s %8s\n' "idempotent rerun" "$(field "$rerun" seconds)" "$(field "$rerun" tasks)" "$(field "$rerun" changed)"
printf '%-16s %10s\n' "rerun / fresh" "$(awk -v a="$(field "$rerun" seconds)" -v b="$(field "$fresh" seconds)" 'BEGIN { printf "%.2f", a / b }')"
# Where the rerun's time goes: profile_tasks' per-task times (PROFILE_TASKS_TASK_OUTPUT_LIMIT=all), summed per role.
printf '\nidempotent rerun, seconds per role (profile_tasks):\n'
sed 's/\x1b\[[0-9;]*m//g' "$logs/benchmark-$image-$layout-rerun.log" | awk -F' -+ ' '/ -+ [0-9.]+s$/ {
    split($1, a, " : "); role = (a[2] != "" ? a[1] : "(plays)"); sub(/s$/, "", $2); t[role] += $2; n[role]++ }
  END { for (r in t) printf "  %-14s %6.1f s  %3d tasks\n", r, t[r], n[r] }' | sort -k2 -rn
