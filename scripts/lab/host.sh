#!/usr/bin/env bash
# host.sh up NAME [IMAGE] [-- extra podman run args]: start the lab host NAME (address
# and DNS names from lab/hosts) from localhost/iac-lab:IMAGE (default debian13), with
# real systemd and sshd, reachable by Ansible over SSH as root with the lab key
# (.lab/ssh/id_ed25519). An existing, running NAME is kept as it is.
# host.sh down NAME: remove it.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
source "$(dirname "$0")/lib.sh"

ssh_key=$IAC_LAB_DIR/ssh/id_ed25519
APT_CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/iac-platform/apt

wait_ready() {
  local name=$1 ip=$2 i state=''
  for i in $(seq 1 120); do
    state=$(podman exec "$name" systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) break ;; esac
    sleep 0.5
  done
  case "$state" in
    running) ;;
    degraded) log "$name: systemd is degraded: $(podman exec "$name" systemctl --failed --plain --no-legend | awk '{print $1}' | xargs)" ;;
    *) die "$name: systemd did not finish booting (state '$state')" ;;
  esac
  for i in $(seq 1 60); do
    if ssh -i "$ssh_key" -o BatchMode=yes -o ConnectTimeout=2 -o StrictHostKeyChecking=no \
         -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "root@$ip" true 2>/dev/null; then
      return 0
    fi
    sleep 0.5
  done
  die "$name: sshd on $ip:22 does not accept the lab key"
}

up() {
  local name=${1:?usage: host.sh up NAME [IMAGE] [-- podman args]} image=debian13
  shift
  if [ $# -gt 0 ] && [ "$1" != -- ]; then image=$1; shift; fi
  [ "${1:-}" = -- ] && shift
  require_podman
  local ip
  ip=$(lab_host_ip "$name")
  "$REPO_ROOT/scripts/lab/build-image.sh" "$image"
  "$REPO_ROOT/scripts/lab/ca.sh" up
  ensure_ssh_key
  if [ "$(podman inspect --format '{{.State.Running}}' "$name" 2>/dev/null)" != true ]; then
    podman rm -f "$name" >/dev/null 2>&1 || true
    # The package cache: a shared pool per image, seeded into a directory of this host's
    # own with hard links (instant, no copy). Each host then has its own archive lock: one
    # cache shared by five hosts serialised their installs, and a host waiting on a
    # neighbour's download could run out of its retries. `down` links what the host fetched
    # back into the pool.
    local pool cache
    pool=$APT_CACHE_ROOT/$image
    cache=$APT_CACHE_ROOT/hosts/$name
    rm -rf "$cache"
    mkdir -p "$pool" "$cache/partial"
    find "$pool" -maxdepth 1 -name '*.deb' -exec ln -f -t "$cache" {} + 2>/dev/null || true
    printf '%s\n' "$pool" >"$cache/../$name.pool"
    log "Starting lab host $name ($image) at $ip"
    # NET_ADMIN/NET_RAW: nftables in the container's own network namespace (roles/baseline).
    # SYS_ADMIN: systemd sets up the mount namespaces of sandboxed units (ProtectSystem,
    # PrivateTmp...); without it those units fail with 226/NAMESPACE. A VM needs none of this.
    podman run -d --name "$name" --hostname "$name" --label iac.lab-host=1 \
      --network "$LAB_NETWORK" --ip "$ip" --add-host "acme.lab.test:$LAB_CA_IP" \
      --systemd=always --cap-add NET_ADMIN,NET_RAW,SYS_ADMIN \
      -v "$ssh_key.pub:/root/.ssh/authorized_keys:ro" \
      -v "$cache:/var/cache/apt/archives" \
      "$@" "$LAB_IMAGE_REPO:$image" >/dev/null
  fi
  wait_ready "$name" "$ip"
  log "Lab host $name is up: ssh -i ${ssh_key#"$REPO_ROOT"/} root@$ip"
}

down() {
  local name=${1:?usage: host.sh down NAME}
  podman rm -f -t 5 "$name" >/dev/null 2>&1 || true
  local cache=$APT_CACHE_ROOT/hosts/$name pool
  if [ -f "$APT_CACHE_ROOT/hosts/$name.pool" ]; then
    pool=$(cat "$APT_CACHE_ROOT/hosts/$name.pool")
    [ -d "$cache" ] && [ -d "$pool" ] &&
      find "$cache" -maxdepth 1 -name '*.deb' -exec ln -f -t "$pool" {} + 2>/dev/null || true
  fi
  rm -rf "$cache" "$APT_CACHE_ROOT/hosts/$name.pool"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) shift; down "$@" ;;
  *) die "usage: host.sh up NAME [IMAGE] [-- podman args] | host.sh down NAME" ;;
esac
