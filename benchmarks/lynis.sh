#!/usr/bin/env bash
# benchmarks/lynis.sh BARE CONVERGED [IMAGE]: lynis hardening index of a bare lab host
# versus a lab host converged with the host baseline (roles/baseline), same image.
#   BARE       a lab host name from lab/hosts; it is RECREATED bare from IMAGE.
#   CONVERGED  a lab host name; started from IMAGE if it is not running, then converged
#              with playbooks/baseline.yml (set SKIP_CONVERGE=1 to audit it as it is,
#              e.g. lab-web after `make demo`).
#   IMAGE      debian13 (default) or debian12.
# lynis is installed on both from the Debian mirror and run as `lynis audit system
# --quick`. Prints both indexes, then each suggestion left on the converged host with the
# reason it is left (docs/baseline.md, "lynis"). A measurement, never a test.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lab/lib.sh
source scripts/lab/lib.sh

bare=${1:?usage: benchmarks/lynis.sh BARE CONVERGED [IMAGE]}
converged=${2:?usage: benchmarks/lynis.sh BARE CONVERGED [IMAGE]}
image=${3:-debian13}
[ "$bare" != "$converged" ] || die "BARE and CONVERGED must be different hosts"
key=$IAC_LAB_DIR/ssh/id_ed25519
export ANSIBLE_PRIVATE_KEY_FILE=$key PATH=$REPO_ROOT/.venv/bin:$PATH

on() { # on HOST COMMAND...: run a command on a lab host as root over SSH
  local ip; ip=$(lab_host_ip "$1"); shift
  ssh -i "$key" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
      -o LogLevel=ERROR "root@$ip" "$@"
}

audit() { # audit HOST: install lynis, run the quick audit, keep the report under $work/HOST
  on "$1" 'DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lynis >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lynis >/dev/null; }'
  on "$1" 'lynis audit system --quick --no-colors >/var/log/lynis-run.txt 2>&1; cat /var/log/lynis-report.dat' >"$work/$1.dat"
}

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

log "Recreating $bare bare from $image"
scripts/lab/host.sh down "$bare"
scripts/lab/host.sh up "$bare" "$image"

scripts/lab/host.sh up "$converged" "$image"
if [ "${SKIP_CONVERGE:-0}" != 1 ]; then
  log "Converging $converged with playbooks/baseline.yml"
  mkdir -p "$work/inv"; ln -s "$REPO_ROOT/inventory/lab/group_vars" "$work/inv/group_vars"
  printf 'all:\n  children:\n    platform:\n      hosts:\n        %s: {ansible_host: %s, lab_domain: %s.lab.test}\n' \
    "$converged" "$(lab_host_ip "$converged")" "$converged" >"$work/inv/hosts.yml"
  ansible-playbook -i "$work/inv" playbooks/baseline.yml | grep -A1 '^PLAY RECAP'
fi

log "Running lynis on $bare and $converged"
audit "$bare" & audit "$converged" & wait

index() { sed -n 's/^hardening_index=//p' "$work/$1.dat"; }
count() { grep -c "^$2\[\]=" "$work/$1.dat" || true; }

# Why each remaining suggestion is left (test id -> reason).
declare -A reason=(
  [LYNIS]="age of the Debian-packaged lynis itself, not a host setting"
  [DEB-0810]="apt-listbugs queries bugs.debian.org and prompts at every install: breaks unattended upgrades"
  [DEB-0811]="apt-listchanges mails changelogs; these hosts have no MTA, unattended-upgrades logs the changes"
  [BOOT-5180]="informational (runlevel listing)"
  [BOOT-5264]="unit sandboxing belongs to each service's role (nginx, app, umami, postgresql)"
  [KRNL-5788]="container: no kernel image inside; the host's kernel is patched by the host"
  [AUTH-9230]="local passwords are not used to log in (SSH is key-only); login.defs differs per shadow version, a whole-file template would be a liability"
  [AUTH-9262]="libpam-pwquality is installed by the role; lynis looks for the module name in a form it does not match here"
  [AUTH-9286]="password ageing: local passwords are not used to log in (SSH key-only); left to the identity policy"
  [AUTH-9328]="umask in login.defs: same reason as AUTH-9230; services set their own UMask"
  [FILE-6310]="partitioning is decided when the VM is provisioned, not by Ansible"
  [NAME-4028]="lab hosts have no DNS domain; production names come from provisioning"
  [SSH-7408]="moving SSH off port 22 is obscurity: admin networks + fail2ban do the work"
  [LOGG-2154]="no central log host in the platform yet; journald keeps logs on disk (follow-up)"
  [ACCT-9622]="process accounting needs CAP_SYS_PACCT (absent in containers); candidate for VMs (follow-up)"
  [ACCT-9626]="metrics collection (sysstat) belongs to monitoring, not the baseline"
  [ACCT-9628]="auditd needs the audit netlink socket, absent in containers; candidate for VMs (follow-up)"
  [TIME-3104]="container: systemd-timesyncd is installed and enabled but skipped by ConditionVirtualization=!container; the host owns the clock"
  [FINT-4350]="AIDE needs an initialised database and someone reading its reports; debsums checks packaged files weekly"
  [FILE-7524]="see lynis output: a file mode lynis wants stricter"
  [KRNL-6000]="container: /proc/sys is read-only; /etc/sysctl.d/60-baseline.conf applies on a VM"
  [HRDN-7230]="malware scanners (rkhunter, chkrootkit) are noisy on servers and not in the policy"
  [MACF-6290]="container: AppArmor profiles are the host's business"
  [USB-3000]="USBGuard: no USB on a virtual server"
)

printf '\n%-28s %8s %9s %12s\n' "host ($image)" index warnings suggestions
for h in "$bare" "$converged"; do
  label=$h; [ "$h" = "$bare" ] && label="$h (bare)" || label="$h (baseline)"
  printf '%-28s %8s %9s %12s\n' "$label" "$(index "$h")" "$(count "$h" warning)" "$(count "$h" suggestion)"
done

printf '\nWarnings left on %s:\n' "$converged"
grep '^warning\[\]=' "$work/$converged.dat" | cut -d'|' -f1,2 | sed 's/^warning\[\]=/  /' || echo "  none"
printf '\nSuggestions left on %s, and why:\n' "$converged"
grep '^suggestion\[\]=' "$work/$converged.dat" | while IFS='|' read -r id text detail _; do
  id=${id#suggestion[]=}
  [ "$detail" = "-" ] && detail='' || detail=" ($detail)"
  printf '  %-10s %s%s\n             -> %s\n' "$id" "$text" "$detail" "${reason[$id]:-NOT EXPLAINED: look at it}"
done
