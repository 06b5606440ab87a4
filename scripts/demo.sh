#!/usr/bin/env bash
# demo.sh: the main job, run by `make demo` after the lab is up. Converges
# playbooks/site.yml on the lab, verifies the host (tests/host), and prints a summary.
# Rerunning it reconverges the running lab in place: that run must report changed=0.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
source "$(dirname "$0")/lab/lib.sh"
cd "$REPO_ROOT"
mkdir -p "$IAC_LAB_DIR/logs"

log "Converging playbooks/site.yml on the lab (inventory/lab)"
scripts/converge.sh -i inventory/lab playbooks/site.yml >"$IAC_LAB_DIR/logs/demo-converge.out" 2>&1 || {
  tail -n 40 "$IAC_LAB_DIR/logs/demo-converge.out" >&2
  die "the converge failed (full log: ${IAC_LAB_DIR#"$REPO_ROOT"/}/logs/demo-converge.out)"
}
summary=$(tail -n 1 "$IAC_LAB_DIR/logs/demo-converge.out")

log "Verifying the lab host (tests/host)"
verify_rc=0
make --no-print-directory verify >"$IAC_LAB_DIR/logs/demo-verify.out" 2>&1 || verify_rc=$?
verify_line=$(grep -E '(passed|failed|error)' "$IAC_LAB_DIR/logs/demo-verify.out" | tail -n 1)

cat <<TXT

================ lab summary ================
converge : $summary
verify   : $verify_line
logs     : ${IAC_LAB_DIR#"$REPO_ROOT"/}/logs/
lab CA   : ${IAC_LAB_DIR#"$REPO_ROOT"/}/ca-root.pem (issuing root of the lab's Pebble)
URLs     : http://127.0.0.1:8080/   (-> HTTPS)
           https://www.lab.test:8443/healthz        the app
           https://analytics.lab.test:8443/         Umami (login admin, password in inventory/lab/group_vars/all/secrets-lab-analytics.yml)
           e.g. curl --cacert .lab/ca-root.pem --resolve www.lab.test:8443:127.0.0.1 https://www.lab.test:8443/healthz
ssh      : ssh -i .lab/ssh/id_ed25519 root@10.89.77.10      (lab-backup, the off-site backup server: 10.89.77.30)
more     : make restore-drill, make benchmark, make lab-down
=============================================
TXT
if [ "$verify_rc" -ne 0 ]; then
  grep -E '^(FAILED|ERROR)' "$IAC_LAB_DIR/logs/demo-verify.out" >&2 || tail -n 30 "$IAC_LAB_DIR/logs/demo-verify.out" >&2
  die "verification failed"
fi
