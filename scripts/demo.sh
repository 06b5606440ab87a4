#!/usr/bin/env bash
# demo.sh: the main job (`make demo`). Prepares the controller, brings up the lab (CA,
# lab-web on LAB_IMAGE, default ubuntu2404, and lab-backup; with LAB=tiers tier-edge,
# tier-db and lab-backup), converges playbooks/site.yml, verifies the hosts (tests/host)
# and prints a summary with the time of each phase.
# Full output of each phase goes to .lab/logs/demo-<phase>.out; the screen shows progress:
# each play and role as it starts, each check module as it finishes.
# Rerunning it reconverges the running lab in place: that run must report changed=0, and
# the checks leave nothing behind, so it passes again.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
source "$(dirname "$0")/lab/lib.sh"
cd "$REPO_ROOT"
mkdir -p "$IAC_LAB_DIR/logs"
logs=${IAC_LAB_DIR#"$REPO_ROOT"/}/logs
LAB_IMAGE=${LAB_IMAGE:-ubuntu2404}
LAB=${LAB:-single}
LAB_HOST=${LAB_HOST:-lab-web}
LAB_INVENTORY=${LAB_INVENTORY:-inventory/lab}
LAB_OTHER_HOSTS=${LAB_OTHER_HOSTS:-lab-backup}

phases=()
demo_start=$(date +%s)
# phase NAME COMMAND...: run one phase, its output in .lab/logs/demo-NAME.out, and time it.
phase() {
  local name=$1 start rc=0
  shift
  start=$(date +%s)
  log "$name"
  "$@" >"$IAC_LAB_DIR/logs/demo-$name.out" 2>&1 || rc=$?
  phases+=("$(printf '%-9s %4d s' "$name" $(( $(date +%s) - start )))")
  if [ "$rc" -ne 0 ]; then
    tail -n 30 "$IAC_LAB_DIR/logs/demo-$name.out" >&2
    die "$name failed (full log: $logs/demo-$name.out)"
  fi
}

phase bootstrap make --no-print-directory bootstrap
phase umami make --no-print-directory umami-bundle
phase lab make --no-print-directory lab-up LAB="$LAB" LAB_IMAGE="$LAB_IMAGE" LAB_HOST="$LAB_HOST"

# Converge: the play and role lines reach the screen as they start (scripts/converge.sh).
start=$(date +%s)
log "converge playbooks/site.yml on the lab ($LAB_INVENTORY; full log: $logs/last-converge.log)"
CONVERGE_PROGRESS=1 scripts/converge.sh -i "$LAB_INVENTORY" playbooks/site.yml >/dev/null || {
  tail -n 40 "$IAC_LAB_DIR/logs/last-converge.log" >&2
  die "the converge failed (full log: $logs/last-converge.log)"
}
phases+=("$(printf '%-9s %4d s' converge $(( $(date +%s) - start )))")
summary=$(cat "$IAC_LAB_DIR/logs/last-converge.summary")

# Verify: one line per check module as it finishes (tests/host/conftest.py, --progress).
start=$(date +%s)
log "verify the lab hosts (tests/host; full log: $logs/demo-verify.out)"
verify_rc=0
make --no-print-directory verify INVENTORY="$LAB_INVENTORY" >"$IAC_LAB_DIR/logs/demo-verify.out" || verify_rc=$?
phases+=("$(printf '%-9s %4d s' verify $(( $(date +%s) - start )))")
domain=$([ "$LAB" = tiers ] && echo tiers.lab.test || echo lab.test)
others=$(for h in $LAB_OTHER_HOSTS; do printf '%s %s, ' "$h" "$(lab_host_ip "$h")"; done)
verify_line=$(grep -E '(passed|failed|error)' "$IAC_LAB_DIR/logs/demo-verify.out" | tail -n 1)

cat <<TXT

================ lab summary ================
lab      : $LAB ($LAB_INVENTORY): $LAB_HOST ($LAB_IMAGE, ports published), ${others%, }
converge : $summary
verify   : $verify_line
time     : $(printf '%s\n' "${phases[@]}" | paste -sd, - | sed 's/,/, /g'); total $(( $(date +%s) - demo_start )) s
logs     : $logs/ (demo-<phase>.out, last-converge.log)
lab CA   : ${IAC_LAB_DIR#"$REPO_ROOT"/}/ca-root.pem (issuing root of the lab's Pebble)
URLs     : http://127.0.0.1:8080/   (-> HTTPS)
           https://www.$domain:8443/healthz        the app
           https://analytics.$domain:8443/         Umami (login admin, password in inventory/lab/group_vars/all/secrets-lab-analytics.yml)
           e.g. curl --cacert .lab/ca-root.pem --resolve www.$domain:8443:127.0.0.1 https://www.$domain:8443/healthz
ssh      : ssh -i .lab/ssh/id_ed25519 root@$(lab_host_ip "$LAB_HOST")      (the other hosts by their addresses above)
more     : make audit LAB=$LAB, make restore-drill LAB=$LAB ARGS="-- --repo offsite", make benchmark, make lab-down
=============================================
TXT
if [ "$verify_rc" -ne 0 ]; then
  grep -E '^(FAILED|ERROR)' "$IAC_LAB_DIR/logs/demo-verify.out" >&2 || tail -n 30 "$IAC_LAB_DIR/logs/demo-verify.out" >&2
  die "verification failed"
fi
