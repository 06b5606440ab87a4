# shellcheck shell=bash
# Shared settings for the lab scripts. Sourced, never executed.
# Every name and address of the lab lives here, so the scripts, molecule and the
# inventories agree on one set.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export REPO_ROOT
# Runtime state of the lab on the controller (keys, CA roots); never committed.
export IAC_LAB_DIR=${IAC_LAB_DIR:-$REPO_ROOT/.lab}
# podman reads its per-container defaults (ulimits: FACTS.md quirk 2) from here.
export CONTAINERS_CONF=${CONTAINERS_CONF:-$REPO_ROOT/lab/containers.conf}

LAB_NETWORK=${LAB_NETWORK:-iac-lab}
LAB_SUBNET=${LAB_SUBNET:-10.89.77.0/24}
LAB_GATEWAY=${LAB_GATEWAY:-10.89.77.1}
# The bridge's own MAC, fixed (scripts/lab/ca.sh): locally administered, derived from the subnet.
LAB_BRIDGE_MAC=${LAB_BRIDGE_MAC:-02:0a:59:4d:00:01}
LAB_CA_NAME=${LAB_CA_NAME:-lab-ca}
LAB_CA_IP=${LAB_CA_IP:-10.89.77.2}
# Controller addresses on the lab bridge that host checks send requests from (lab/hosts).
LAB_PROBE_FIRST=200
LAB_PROBE_LAST=219
export IAC_PROBE_SOURCES=${IAC_PROBE_SOURCES:-10.89.77.200-219}
# Controller addresses that play a misbehaving client (tests/host/test_baseline_fail2ban.py:
# an SSH offender that gets banned). Added at lab up, like the probe sources, so no check
# changes the controller's network while other checks run (Chromium aborts a page load with
# ERR_NETWORK_CHANGED when an address comes or goes).
LAB_OFFENDER_FIRST=230
LAB_OFFENDER_LAST=239
export IAC_OFFENDER_SOURCES=${IAC_OFFENDER_SOURCES:-10.89.77.230-239}
LAB_IMAGE_REPO=${LAB_IMAGE_REPO:-localhost/iac-lab}

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# lab_hosts prints "ip name alias..." for every lab host (lab/hosts, comments stripped).
lab_hosts() { sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$REPO_ROOT/lab/hosts"; }

# lab_host_ip NAME prints the address lab/hosts gives NAME.
lab_host_ip() {
  local ip
  ip=$(lab_hosts | awk -v n="$1" '$2 == n { print $1 }')
  [ -n "$ip" ] || die "lab host '$1' is not listed in lab/hosts"
  printf '%s\n' "$ip"
}

require_podman() {
  command -v podman >/dev/null 2>&1 || die "podman is not installed: run 'make bootstrap' (scripts/bootstrap.sh) first"
  podman info >/dev/null 2>&1 || die "podman is installed but cannot run containers here: $(podman info 2>&1 | tail -n 1). Run 'make bootstrap' to apply the host fixes (cgroup, ulimits) or check 'podman info'."
}

# ensure_ssh_key: the lab's SSH key pair (.lab/ssh/id_ed25519), made once per checkout.
# Lab hosts authorize its public half (scripts/lab/host.sh, molecule.yml).
ensure_ssh_key() {
  local key=$IAC_LAB_DIR/ssh/id_ed25519
  [ -s "$key" ] && return 0
  mkdir -p "$(dirname "$key")"
  ssh-keygen -q -t ed25519 -N '' -C "iac-lab (lab only)" -f "$key"
}
