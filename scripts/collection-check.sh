#!/usr/bin/env bash
# collection-check.sh [IMAGE]: prove the collection works the way a consumer uses it.
#   1. `ansible-galaxy collection build` makes the artifact from this repository;
#   2. it is installed offline into an empty collections path in a scratch directory outside
#      the repository (its dependencies come from the pinned `ansible` package);
#   3. a consumer playbook there (three lines: hosts, roles, hardened.platform.nginx) applies
#      the edge role alone to a fresh lab host (col-edge, default image ubuntu2404) with only
#      the nginx_* variables, twice: the second run must report changed=0;
#   4. from outside, the site answers over TLS with a certificate from the lab's ACME server,
#      HSTS and the security headers, and HTTP redirects to HTTPS.
# The host and the scratch directory are removed at the end, whatever happens.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
source "$(dirname "$0")/lab/lib.sh"

image=${1:-ubuntu2404}
name=col-edge
site=www.col.lab.test
ip=$(lab_host_ip "$name")
start=$(date +%s)
step() { log "[collection-check] [$(( $(date +%s) - start ))s] $*"; }

work=$(mktemp -d /tmp/collection-check.XXXXXX)
ca_was_running=false
"$REPO_ROOT/scripts/lab/ca.sh" running && ca_was_running=true
cleanup() {
  "$REPO_ROOT/scripts/lab/host.sh" down "$name" >/dev/null 2>&1 || true
  # The CA stays only if it ran before this check (a lab that is up keeps using it).
  $ca_was_running || "$REPO_ROOT/scripts/lab/ca.sh" down >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

step "building the artifact (ansible-galaxy collection build)"
version=$(awk '/^version:/ {print $2}' "$REPO_ROOT/galaxy.yml")
(cd "$REPO_ROOT" && ansible-galaxy collection build --force --output-path "$work/dist" . >/dev/null)
artifact="$work/dist/hardened-platform-$version.tar.gz"
[ -s "$artifact" ] || die "the build made no $artifact"

consumer="$work/consumer"
mkdir -p "$consumer/group_vars"
cat >"$consumer/ansible.cfg" <<CFG
[defaults]
collections_path = ./collections
interpreter_python = auto_silent
host_key_checking = false
[ssh_connection]
pipelining = true
CFG
# Nothing of this repository's settings may leak into the consumer's run.
consumer_env=(env -u ANSIBLE_CONFIG -u ANSIBLE_COLLECTIONS_PATH -u ANSIBLE_COLLECTIONS_PATHS
              -u ANSIBLE_ROLES_PATH -u ANSIBLE_PRIVATE_KEY_FILE -u ANSIBLE_INVENTORY)

step "installing it offline into an empty collections path ($consumer/collections)"
(cd "$consumer" && "${consumer_env[@]}" ansible-galaxy collection install --offline -p ./collections "$artifact" >/dev/null)
(cd "$consumer" && "${consumer_env[@]}" ansible-doc -t role -l hardened.platform) | grep -q '^hardened.platform.nginx:' \
  || die "ansible-doc does not list hardened.platform.nginx from the installed artifact"

cat >"$consumer/site.yml" <<'YML'
- hosts: edge
  roles:
    - hardened.platform.nginx
YML
cat >"$consumer/inventory.yml" <<YML
all:
  children:
    edge:
      hosts:
        $name:
          ansible_host: $ip
          ansible_user: root
          ansible_ssh_private_key_file: $IAC_LAB_DIR/ssh/id_ed25519
          ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
YML
cat >"$consumer/group_vars/edge.yml" <<YML
nginx_sites:
  - name: www
    server_names: [$site]
    upstream: http://127.0.0.1:8000
nginx_acme_server: https://acme.lab.test:14000/dir
nginx_acme_server_ca: "{{ lookup('ansible.builtin.file', '$IAC_LAB_DIR/ca/acme-api-ca.pem') }}"
nginx_acme_email: ops@col.lab.test
nginx_security_txt_contact: mailto:security@col.lab.test
nginx_security_txt_expires: "$(( $(date -u +%Y) + 1 ))-01-01T00:00:00Z"
YML

step "starting a fresh lab host $name ($image) and the lab CA"
"$REPO_ROOT/scripts/lab/ca.sh" up >/dev/null
"$REPO_ROOT/scripts/lab/host.sh" down "$name" >/dev/null 2>&1 || true
"$REPO_ROOT/scripts/lab/host.sh" up "$name" "$image" >/dev/null

for run in 1 2; do
  step "consumer playbook, run $run: hardened.platform.nginx alone on $name"
  if ! (cd "$consumer" && "${consumer_env[@]}" ANSIBLE_FORCE_COLOR=0 \
          ansible-playbook -i inventory.yml site.yml >"$work/run$run.log" 2>&1); then
    tail -40 "$work/run$run.log" >&2
    die "the consumer playbook failed on run $run"
  fi
  recap=$(grep -E "^$name +:" "$work/run$run.log" | tail -1)
  echo "    $recap" >&2
done
echo "$recap" | grep -q 'changed=0 ' || die "the second run of the edge role alone changed something: $recap"

step "probing https://$site/ from outside"
headers=$(curl -sS -o /dev/null -D - --cacert "$IAC_LAB_DIR/ca-root.pem" --resolve "$site:443:$ip" "https://$site/.well-known/security.txt")
for want in 'HTTP/[0-9.]+ 200' 'strict-transport-security: max-age=31536000' 'x-content-type-options: nosniff' \
            'x-frame-options: DENY' 'content-security-policy: '; do
  grep -qiE "^$want" <<<"$headers" || die "https://$site/ lacks '$want'; it answered:"$'\n'"$headers"
done
redirect=$(curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' --resolve "$site:80:$ip" "http://$site/x")
[ "$redirect" = "301 https://$site/x" ] || die "http://$site/x answered '$redirect', not a 301 to https"
issuer=$(openssl s_client -connect "$ip:443" -servername "$site" </dev/null 2>/dev/null | openssl x509 -noout -issuer)
step "passed: built, installed offline, applied alone twice (second: changed=0), TLS from the lab CA ($issuer), HSTS, headers, 301"
