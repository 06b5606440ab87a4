#!/usr/bin/env bash
# Prepare this machine (the controller) for the lab and the tests. Idempotent: every
# step checks before it acts, so a second run is quick and changes nothing.
#   1. Debian packages the controller needs (podman, mmdebstrap, ssh client, probes).
#   2. The two host quirks podman needs on these machines (FACTS.md).
#   3. The pinned Python toolchain in .venv (requirements.txt).
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
source "$(dirname "$0")/lab/lib.sh"

APT_PACKAGES=(
  podman netavark aardvark-dns uidmap fuse-overlayfs slirp4netns crun  # the lab's hosts
  iptables                      # netavark 1.4 programs bridge NAT with it (podman only suggests it)
  mmdebstrap debian-archive-keyring                                    # building their images
  make openssh-client curl jq openssl nmap                             # driving and probing them
  chromium fonts-dejavu-core    # a real browser for the analytics and report checks (Playwright drives it)
  libnss3-tools                 # certutil: the browser check trusts the lab CA in a throwaway NSS database
)

[ "$(id -u)" -eq 0 ] || die "run as root: the lab uses rootful podman and installs Debian packages"

# Node.js and npm build the Umami bundle on the controller (scripts/umami/build-bundle.sh);
# lab hosts never run npm. A machine that already has a node >= 18.18 keeps it.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  APT_PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "Installing Debian packages: ${missing[*]}"
  apt-get update -qq || die "apt-get update failed: is the Debian mirror reachable?"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
fi

# Quirk 1: crun refuses a hybrid cgroup layout while a controller (here hugetlb) sits on
# the cgroup2 mount. Mounting it as cgroup v1 once per boot fixes that.
if [ -d /sys/fs/cgroup/unified ] && grep -qw hugetlb /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null; then
  if ! mountpoint -q /sys/fs/cgroup/hugetlb; then
    log "Mounting the hugetlb cgroup controller as v1 (podman host quirk)"
    mkdir -p /sys/fs/cgroup/hugetlb
    mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb || die "could not mount the hugetlb cgroup"
  fi
fi
# Quirk 2 (no CAP_SYS_RESOURCE for default rlimits) is handled by lab/containers.conf.

# The Python toolchain, rebuilt only when requirements.txt changes.
venv=$REPO_ROOT/.venv
stamp=$venv/.requirements.sha256
want=$(sha256sum "$REPO_ROOT/requirements.txt" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "Creating the Python toolchain in .venv (about a minute)"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python 3.11 or newer is needed for ansible 12"
  python3 -m venv "$venv"
  # (grep drops this machine's pip.conf noise about local indexes that do not exist)
  "$venv/bin/pip" install -q -r "$REPO_ROOT/requirements.txt" 2>&1 | { grep -v 'is ignored: it is neither' || true; }
  [ "${PIPESTATUS[0]}" -eq 0 ] || die "pip install -r requirements.txt failed: is PyPI reachable?"
  echo "$want" >"$stamp"
fi

podman info >/dev/null 2>&1 || die "podman still cannot run: $(podman info 2>&1 | tail -n 1)"
log "Controller ready: $("$venv/bin/ansible" --version | awk 'NR == 1'), $(podman --version)"
