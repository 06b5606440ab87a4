#!/usr/bin/env bash
# Prepare this machine (the controller) for the lab and the tests. Idempotent: every
# step checks before it acts, so a second run is quick and changes nothing.
#   scripts/bootstrap.sh                    the lab controller (root): all of the below
#   scripts/bootstrap.sh --controller-only  a production controller (an ops laptop, any user):
#                                           only step 3, no root, no podman, no cgroup change
#   1. Debian packages the lab needs (podman and what its network stack runs, mmdebstrap,
#      the SSH client, probes, a browser, PostgreSQL for the app's tests).
#   2. The two host quirks podman needs on these machines (FACTS.md).
#   3. The pinned Python toolchain in .venv (requirements.txt).
#   4. Proof: every tool is run once; anything missing ends in one `ERROR:` line naming it.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
source "$(dirname "$0")/lab/lib.sh"

controller_only=false
case "${1:-}" in
  --controller-only) controller_only=true ;;
  "") ;;
  *) die "usage: bootstrap.sh [--controller-only]" ;;
esac

# Each Debian package, with what needs it at run time (not what happens to be installed):
APT_PACKAGES=(
  podman crun conmon                 # the lab's hosts: rootful podman with systemd inside
  netavark aardvark-dns              # podman 4.3's bridge networks and their DNS
  iptables                           # netavark 1.4 programs the bridge's NAT with iptables;
                                     # podman only *suggests* it (--no-install-recommends skips it)
  uidmap fuse-overlayfs slirp4netns  # podman's storage and rootless helpers it checks for
  mmdebstrap debian-archive-keyring  # building the images (Ubuntu's keyring comes through it)
  make openssh-client                # driving the hosts (ssh, ssh-keygen)
  curl jq openssl nmap iproute2      # the lab CA's API, probes, the probe addresses (ip)
  util-linux coreutils gawk          # flock, numfmt, awk in the scripts
  chromium fonts-dejavu-core         # a real browser for the analytics and report checks
  libnss3-tools                      # certutil: the browser trusts the lab CA's root
  postgresql postgresql-common       # the app's tests: a throwaway server (pg_virtualenv)
  libpq5                             # psycopg (pure Python) loads libpq: the app's PostgreSQL store
)

# Commands proven to run after the install: "command to run :: what provides it".
LAB_CHECKS=(
  "podman --version :: podman"
  "iptables --version :: iptables (netavark needs it)"
  "/usr/lib/podman/netavark --version :: netavark"
  "/usr/lib/podman/aardvark-dns --version :: aardvark-dns"
  "crun --version :: crun"
  "mmdebstrap --version :: mmdebstrap"
  "ssh -V :: openssh-client"
  "command -v ssh-keygen :: openssh-client (ssh-keygen)"
  "curl --version :: curl"
  "jq --version :: jq"
  "openssl version :: openssl"
  "nmap --version :: nmap"
  "ip -V :: iproute2"
  "flock --version :: util-linux"
  "numfmt --version :: coreutils"
  "chromium --version :: chromium"
  "certutil -H 2>&1 | grep -q certutil :: libnss3-tools"
  "node -e 'process.exit(0)' :: nodejs"
  "npm --version :: npm"
  "pg_virtualenv -h :: postgresql-common (pg_virtualenv)"
  "ls /usr/lib/postgresql/*/bin/pg_ctl :: postgresql (the server pg_virtualenv starts)"
  "python3 -c 'import ctypes.util, sys; sys.exit(not ctypes.util.find_library(\"pq\"))' :: libpq5 (found as psycopg finds it)"
)

if ! $controller_only; then
  [ "$(id -u)" -eq 0 ] || die "run as root: the lab uses rootful podman and installs Debian packages (a production controller needs only 'make controller')"

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
fi

# The Python toolchain, rebuilt only when requirements.txt changes.
venv=$REPO_ROOT/.venv
stamp=$venv/.requirements.sha256
want=$(sha256sum "$REPO_ROOT/requirements.txt" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "Creating the Python toolchain in .venv (about a minute)"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python 3.11 or newer is needed for ansible 12"
  python3 -c 'import ensurepip, venv' 2>/dev/null || die "python3 cannot create virtualenvs: install python3-venv"
  python3 -m venv "$venv"
  # (grep drops this machine's pip.conf noise about local indexes that do not exist)
  "$venv/bin/pip" install -q -r "$REPO_ROOT/requirements.txt" 2>&1 | { grep -v 'is ignored: it is neither' || true; }
  [ "${PIPESTATUS[0]}" -eq 0 ] || die "pip install -r requirements.txt failed: is PyPI reachable?"
  echo "$want" >"$stamp"
fi
"$venv/bin/ansible-playbook" --version >/dev/null 2>&1 || die "the .venv toolchain is broken (ansible-playbook does not run): rm -rf .venv and rerun"

if $controller_only; then
  log "Controller ready: $("$venv/bin/ansible" --version | awk 'NR == 1') (no lab: podman and its fixes were not touched)"
  exit 0
fi

# Proof by running each tool the lab calls, so a gap shows here and not in the middle of a demo.
failed=()
for check in "${LAB_CHECKS[@]}"; do
  bash -c "${check% :: *}" >/dev/null 2>&1 || failed+=("${check##* :: }")
done
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>18||(a===18&&b>=18)?0:1)' 2>/dev/null \
  || failed+=("node >= 18.18 (found $(node -v 2>/dev/null || echo none))")
iptables -t nat -L -n >/dev/null 2>&1 || failed+=("a working iptables nat table (netavark needs it: iptables -t nat -L)")
[ ${#failed[@]} -eq 0 ] || die "the lab cannot run: missing or broken: $(IFS=,; echo "${failed[*]}" | sed 's/,/, /g')"
podman info >/dev/null 2>&1 || die "podman still cannot run: $(podman info 2>&1 | tail -n 1)"
log "Controller ready: $("$venv/bin/ansible" --version | awk 'NR == 1'), $(podman --version)"
