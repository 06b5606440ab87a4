#!/usr/bin/env bash
# ca.sh up|down|running: the lab's ACME certificate authority (Pebble) in the container lab-ca.
# (running: exit 0 when the CA runs. Jobs that start the CA only for themselves, the
# molecule scenarios and the collection check, ask first and stop it when they are done,
# so that a lab someone else brought up keeps its CA.)
#
# up: creates the lab network and starts Pebble (if not already running) with
#   - its ACME API at https://acme.lab.test:14000/dir, served with a certificate from a
#     small lab-only CA (.lab/ca/acme-api-ca.pem) that lab hosts are told to trust;
#   - HTTP-01 validation against port 80 of the names in lab/hosts (Pebble resolves
#     them through the container's /etc/hosts, so no DNS server is needed);
#   - 90-day certificates like Let's Encrypt's (templates/lab/pebble-config.json).
# and exports the root that signs issued certificates to .lab/ca-root.pem, which the
# tests use to verify the served chain instead of disabling verification.
# Pebble makes a new root each time it starts, so the file keeps every root the lab's CA
# has had: certificates issued before a restart still verify until they are renewed.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
source "$(dirname "$0")/lib.sh"

ca_dir=$IAC_LAB_DIR/ca

ensure_network() {
  if ! podman network exists "$LAB_NETWORK"; then
    log "Creating the lab network $LAB_NETWORK ($LAB_SUBNET)"
    podman network create --subnet "$LAB_SUBNET" --gateway "$LAB_GATEWAY" "$LAB_NETWORK" >/dev/null
  fi
  # Probe sources: the host checks send their HTTP requests from these controller
  # addresses, one per test module, so each module has its own per-IP rate limit bucket
  # (lab/hosts, tests/host/conftest.py), and the offender sources (scripts/lab/lib.sh).
  # The bridge exists once a container uses it.
  local bridge i
  bridge=$(podman network inspect "$LAB_NETWORK" --format '{{.NetworkInterface}}')
  if ip link show "$bridge" >/dev/null 2>&1; then
    # A Linux bridge takes the lowest MAC of its ports unless one is set, so its MAC changes
    # as lab containers come and go, and hosts keep answering the old one for a while
    # (first connections time out). A fixed, locally administered MAC stops that.
    [ "$(cat "/sys/class/net/$bridge/addr_assign_type" 2>/dev/null)" = 3 ] \
      || ip link set dev "$bridge" address "$LAB_BRIDGE_MAC"
    for i in $(seq "$LAB_PROBE_FIRST" "$LAB_PROBE_LAST") $(seq "$LAB_OFFENDER_FIRST" "$LAB_OFFENDER_LAST"); do
      ip -br addr show dev "$bridge" | grep -q "${LAB_SUBNET%.*/*}.$i/" \
        || ip addr add "${LAB_SUBNET%.*/*}.$i/32" dev "$bridge"
    done
  fi
}

ensure_api_cert() {
  mkdir -p "$ca_dir"
  [ -s "$ca_dir/acme-api.pem" ] && return 0
  log "Creating the lab-only TLS certificate for the ACME API (acme.lab.test)"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=IaC lab ACME API CA (lab only)" -keyout "$ca_dir/acme-api-ca.key" -out "$ca_dir/acme-api-ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=acme.lab.test" \
    -keyout "$ca_dir/acme-api.key" -out "$ca_dir/acme-api.csr" 2>/dev/null
  openssl x509 -req -in "$ca_dir/acme-api.csr" -CA "$ca_dir/acme-api-ca.pem" -CAkey "$ca_dir/acme-api-ca.key" \
    -CAcreateserial -days 3650 -out "$ca_dir/acme-api.pem" \
    -extfile <(printf 'subjectAltName=DNS:acme.lab.test,DNS:%s,IP:%s\nextendedKeyUsage=serverAuth\n' "$LAB_CA_NAME" "$LAB_CA_IP") 2>/dev/null
  chmod 0644 "$ca_dir"/*.key  # read by pebble inside the container; lab-only material
}

up() {
  require_podman
  "$REPO_ROOT/scripts/lab/build-image.sh" ca
  ensure_network
  ensure_api_cert
  ensure_ssh_key  # molecule's hosts authorize it too
  cp "$REPO_ROOT/templates/lab/pebble-config.json" "$ca_dir/pebble-config.json"
  local want have
  # Only Pebble's configuration decides whether the CA must restart (a restart makes a
  # new root and forgets every ACME account); the names it resolves are synced in place.
  # (the API certificate and the directory it is mounted from count too: another checkout
  # of the repository has its own .lab/ and must not talk to a CA serving someone else's.)
  want=$({ cat "$ca_dir/pebble-config.json" "$ca_dir/acme-api.pem"; echo "$ca_dir"; } | sha256sum | cut -c1-16)
  have=$(podman inspect --format '{{ index .Config.Labels "iac.config" }}' "$LAB_CA_NAME" 2>/dev/null || true)
  if [ "$have" != "$want" ] || [ "$(podman inspect --format '{{.State.Running}}' "$LAB_CA_NAME" 2>/dev/null)" != true ]; then
    podman rm -f "$LAB_CA_NAME" >/dev/null 2>&1 || true
    log "Starting the lab CA (Pebble) as $LAB_CA_NAME at $LAB_CA_IP"
    podman run -d --name "$LAB_CA_NAME" --hostname "$LAB_CA_NAME" --label "iac.config=$want" \
      --network "$LAB_NETWORK" --ip "$LAB_CA_IP" \
      -v "$ca_dir:/etc/pebble:ro" \
      -e PEBBLE_VA_NOSLEEP=1 -e PEBBLE_WFE_NONCEREJECT=0 \
      "$LAB_IMAGE_REPO:ca" pebble -config /etc/pebble/pebble-config.json >/dev/null
    # A new Pebble knows none of the ACME accounts and certificates of the old one: make
    # running lab hosts start over, so their next converge gets a fresh account and
    # certificates (Let's Encrypt never forgets like this; only the lab needs it).
    local h
    for h in $(podman ps --filter label=iac.lab-host --format '{{.Names}}'); do
      log "Lab CA restarted: clearing ACME state on $h (the next converge re-issues)"
      podman exec "$h" rm -rf /etc/letsencrypt/accounts /etc/letsencrypt/live /etc/letsencrypt/archive /etc/letsencrypt/renewal || true
    done
  fi
  # Pebble validates HTTP-01 challenges against the addresses lab/hosts gives the names.
  { printf '127.0.0.1 localhost\n'; lab_hosts | awk '{ print }'; } \
    | podman exec -i "$LAB_CA_NAME" sh -c 'cat > /etc/hosts.new && cat /etc/hosts.new > /etc/hosts && rm /etc/hosts.new'
  local i
  for i in $(seq 1 50); do
    if curl -fsS --cacert "$ca_dir/acme-api-ca.pem" --resolve "acme.lab.test:15000:$LAB_CA_IP" \
         -o "$IAC_LAB_DIR/ca-root.pem.new" https://acme.lab.test:15000/roots/0 2>/dev/null; then
      # Keep every root this lab's CA has had: certificates issued before a restart of
      # the CA still verify (the lab's hosts keep them until they renew).
      touch "$IAC_LAB_DIR/ca-root.pem"
      grep -qxF "$(sed -n 2p "$IAC_LAB_DIR/ca-root.pem.new")" "$IAC_LAB_DIR/ca-root.pem" \
        || cat "$IAC_LAB_DIR/ca-root.pem.new" >>"$IAC_LAB_DIR/ca-root.pem"
      rm -f "$IAC_LAB_DIR/ca-root.pem.new"
      ensure_network
      log "Lab CA ready: ACME directory https://acme.lab.test:14000/dir, issuing root in ${IAC_LAB_DIR#"$REPO_ROOT"/}/ca-root.pem"
      return 0
    fi
    [ "$i" = 10 ] && podman logs --tail 5 "$LAB_CA_NAME" >&2
    sleep 0.3
  done
  podman logs --tail 20 "$LAB_CA_NAME" >&2 || true
  die "the lab CA did not answer on https://$LAB_CA_IP:15000"
}

down() {
  podman rm -f "$LAB_CA_NAME" >/dev/null 2>&1 || true
  rm -f "$IAC_LAB_DIR/ca-root.pem"
}

running() {
  [ "$(podman inspect --format '{{.State.Running}}' "$LAB_CA_NAME" 2>/dev/null)" = true ]
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  running) running ;;
  *) die "usage: ca.sh up|down|running" ;;
esac
