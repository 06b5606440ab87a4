#!/usr/bin/env bash
# benchmarks/tls_edge.sh [HOST]: on a converged lab host (default lab-web), measure
#  1. HTTPS requests/s through the hardened edge configuration vs Debian's stock TLS site
#     (the ratio; target >= 0.9), with wrk over keep-alive connections;
#  2. full TLS handshakes/s with the site's ECDSA P-256 certificate vs an RSA-2048 one
#     (openssl s_time -new).
# Rate limits are lifted for the measurement only: the two servers are temporary copies
# on 127.0.0.1:9443/9444/9445 without limit_req, removed (and nginx reloaded) at the end.
# Load stays on the host's loopback. A measurement, not a test: it prints figures.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
source "$(dirname "$0")/../scripts/lab/lib.sh"
host=${1:-lab-web}
ip=$(lab_host_ip "$host")
ssh_host() {
  ssh -i "$IAC_LAB_DIR/ssh/id_ed25519" -o BatchMode=yes -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "root@$ip" "$@"
}

ssh_host bash -s <<'REMOTE'
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
site=$(ls /etc/nginx/platform/sites/ | head -n 1); site=${site%.conf}
conf=/etc/nginx/platform/sites/zz-benchmark.conf
cleanup() { rm -f "$conf"; nginx -t -q && systemctl reload nginx; }
trap cleanup EXIT
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-rsa \
  -keyout /tmp/bench-rsa.key -out /tmp/bench-rsa.pem 2>/dev/null
[ -f /etc/ssl/certs/ssl-cert-snakeoil.pem ] || make-ssl-cert generate-default-snakeoil
cat >"$conf" <<NGINX
# Temporary (benchmarks/tls_edge.sh): hardened edge without rate limits.
server {
    listen 127.0.0.1:9443 ssl;
    http2 on;
    ssl_certificate /etc/nginx/tls/$site/fullchain.pem;
    ssl_certificate_key /etc/nginx/tls/$site/privkey.pem;
    include /etc/nginx/platform/headers/$site.conf;
    location = /bench { alias /etc/nginx/platform/security.txt; default_type text/plain; include /etc/nginx/platform/headers/$site.conf; }
}
# Debian's stock TLS site (snippets/snakeoil.conf, no extra headers, distro TLS defaults).
server {
    listen 127.0.0.1:9444 ssl;
    ssl_certificate /etc/ssl/certs/ssl-cert-snakeoil.pem;
    ssl_certificate_key /etc/ssl/private/ssl-cert-snakeoil.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers HIGH:!aNULL:!MD5;
    location = /bench { alias /etc/nginx/platform/security.txt; default_type text/plain; }
}
# The hardened settings with an RSA-2048 certificate, for the handshake comparison.
server {
    listen 127.0.0.1:9445 ssl;
    ssl_certificate /tmp/bench-rsa.pem;
    ssl_certificate_key /tmp/bench-rsa.key;
    location = /bench { return 200; }
}
NGINX
# nginx < 1.25.1 has no `http2 on`.
nginx -t -q 2>/dev/null || sed -i 's/^    http2 on;$//' "$conf"
nginx -t -q && systemctl reload nginx && sleep 1
rps() { wrk -t2 -c32 -d10s "https://127.0.0.1:$1/bench" | awk '/Requests\/sec/ { print $2 }'; }
# "N connections in S real seconds": full handshakes (no session reuse) per second.
hs() { timeout 20 openssl s_time -connect "127.0.0.1:$1" -new -time 8 2>/dev/null | awk '/connections in/ && /real/ { printf "%.0f", $1 / $4; exit }'; }
hard=$(rps 9443); stock=$(rps 9444)
ecdsa=$(hs 9443); rsa=$(hs 9445)
echo
echo "TLS edge benchmark on $(hostname) ($(nproc) cores, $(nginx -v 2>&1 | cut -d/ -f2), $(date -u +%F))"
printf '%-44s %12s\n' "HTTPS req/s, hardened edge (wrk -c32 10s)" "$hard"
printf '%-44s %12s\n' "HTTPS req/s, Debian stock TLS site" "$stock"
awk -v a="$hard" -v b="$stock" 'BEGIN { printf "%-44s %12.2f  (target >= 0.90)\n", "ratio hardened/stock", a / b }'
printf '%-44s %12s\n' "full TLS handshakes/s, ECDSA P-256" "$ecdsa"
printf '%-44s %12s\n' "full TLS handshakes/s, RSA-2048" "$rsa"
REMOTE
