#!/usr/bin/env bash
# benchmarks/umami.sh [HOST] [--rebuild]: figures for self-hosted analytics on a converged
# lab host (default lab-web; playbooks/analytics.yml applied):
#  1. the bundle: size of the cached tarball and of the unpacked release, its build date;
#     with --rebuild, a fresh build into a temporary cache, timed (wall time, peak RSS of
#     its largest process: ~6 minutes and ~2.5 GB of RAM, refused while another build
#     runs); the controller is shared, so concurrent work skews both figures;
#  2. Umami's RSS idle (after a restart and a heartbeat) and after 1,000 pageviews;
#  3. pageviews/s accepted by /api/send, twice, each line saying which path it took:
#     on the host's loopback (127.0.0.1:<port>, X-Real-IP set as nginx would): Umami's own
#     capacity, and the load behind the RSS figure; then through nginx
#     (https://analytics.<domain>/ from the controller, verified against the lab CA) when
#     the edge answers, where nginx's per-IP limit on /api/ applies: the figure is
#     "accepted", 429s are counted separately.
# The pageviews go to a temporary website inserted (and removed with its data) as the
# postgres superuser on the host, so no Umami password is needed. The bundle is looked up
# with scripts/umami/build-bundle.sh: a cache hit, unless its recipe changed (then it
# builds, ~5 minutes). A measurement, not a test.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
source "$(dirname "$0")/../scripts/lab/lib.sh"
cd "$REPO_ROOT"

host=lab-web rebuild=0
for arg in "$@"; do
  case $arg in
    --rebuild) rebuild=1 ;;
    -*) die "usage: benchmarks/umami.sh [HOST] [--rebuild]" ;;
    *) host=$arg ;;
  esac
done
ip=$(lab_host_ip "$host")
site=$(lab_hosts | awk -v n="$host" '$2 == n { for (i = 3; i <= NF; i++) if ($i ~ /^analytics\./) print $i }')
[ -n "$site" ] || die "$host has no analytics.* name in lab/hosts"
domain=${site#analytics.}
pageviews=${UMAMI_BENCH_PAGEVIEWS:-1000}
concurrency=${UMAMI_BENCH_CONCURRENCY:-8}
ssh_host() {
  ssh -i "$IAC_LAB_DIR/ssh/id_ed25519" -o BatchMode=yes -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "root@$ip" "$@"
}

# --- 1. Bundle ---------------------------------------------------------------------------
cache=${UMAMI_BUNDLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iac-platform/umami}
build_line="not measured (pass --rebuild)"
if [ "$rebuild" = 1 ]; then
  if pgrep -f 'scripts/umami/build-bundle.sh' >/dev/null; then
    die "a bundle build is running already; wait for it (pgrep -af build-bundle)"
  fi
  tmpcache=$(mktemp -d /tmp/umami-bench-cache.XXXXXX)
  log "Building the bundle into $tmpcache (several minutes)"
  /usr/bin/time -f '%e %M' -o "$tmpcache/time" env UMAMI_BUNDLE_CACHE="$tmpcache" \
    scripts/umami/build-bundle.sh >"$tmpcache/out" 2>"$tmpcache/log" || { tail -n 30 "$tmpcache/log"; die "build failed"; }
  read -r wall peak_kb <"$tmpcache/time"
  build_line=$(printf '%.0f s wall, peak RSS of its largest process %.1f GB (%s cores)' "$wall" "$(python3 -c "print($peak_kb / 1048576)")" "$(nproc)")
  rm -rf "$tmpcache"
fi
tarball=$(scripts/umami/build-bundle.sh 2>/dev/null | tail -n 1)
[ -f "$tarball" ] || die "no cached bundle in $cache"
info=$(tar -xzOf "$tarball" umami-2.10.0/BUNDLE-INFO.json 2>/dev/null || tar -xzOf "$tarball" --wildcards '*/BUNDLE-INFO.json')
build_date=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["build_date"])' <<<"$info")
tar_mb=$(du -m "$tarball" | cut -f1)
release=$(ssh_host 'readlink -f /opt/umami/current')
release_mb=$(ssh_host "du -sm $release | cut -f1")

# --- 2./3. RSS and pageviews -------------------------------------------------------------
port=$(ssh_host "systemctl show -p Environment --value umami.service" | tr ' ' '\n' | sed -n 's/^PORT=//p')
website=$(python3 -c 'import uuid; print(uuid.uuid4())')
psql_umami() { ssh_host "cd / && runuser -u postgres -- psql -X -A -t -v ON_ERROR_STOP=1 -d umami -c \"$1\""; }
cleanup() {
  psql_umami "DELETE FROM website_event WHERE website_id = '$website'; DELETE FROM session WHERE website_id = '$website'; DELETE FROM website WHERE website_id = '$website';" >/dev/null 2>&1 || true
}
trap cleanup EXIT
psql_umami "INSERT INTO website (website_id, name, domain, user_id) SELECT '$website', 'benchmark', 'www.$domain', user_id FROM \\\"user\\\" ORDER BY created_at LIMIT 1;" >/dev/null

# shellcheck disable=SC2016 # expanded on the host
rss_mb() { ssh_host 'ps -o rss= -p "$(systemctl show -p MainPID --value umami.service)"' | awk '{ printf "%.0f", $1 / 1024 }'; }
log "Restarting umami.service for the idle figure"
ssh_host "systemctl restart umami.service; for i in \$(seq 60); do python3 -c 'import urllib.request; urllib.request.urlopen(\"http://127.0.0.1:$port/api/heartbeat\", timeout=2)' 2>/dev/null && break; sleep 1; done; sleep 10"
rss_idle=$(rss_mb)

# The load generator: keep-alive connections, one thread each, counting status codes.
read -r -d '' load <<'PY' || true
import http.client, json, socket, ssl, sys, threading, time
mode, address, port, name, website, domain, total, conc, ca, sources = sys.argv[1:11]
port, total, conc, sources = int(port), int(total), int(conc), [s for s in sources.split(",") if s]
ua = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
counts, lock, sent = {}, threading.Lock(), [0]
def connect(n):
    if mode == "https":
        ctx = ssl.create_default_context(cafile=ca or None)
        conn = http.client.HTTPSConnection(address, port, timeout=60, context=ctx)
        src = (sources[n % len(sources)], 0) if sources else None
        raw = socket.create_connection((address, port), timeout=60, source_address=src)
        conn.sock = ctx.wrap_socket(raw, server_hostname=name)
        return conn
    return http.client.HTTPConnection(address, port, timeout=60)
def worker(n):
    conn = connect(n)
    while True:
        with lock:
            if sent[0] >= total:
                break
            sent[0] += 1
            i = sent[0]
        body = json.dumps({"type": "event", "payload": {"website": website, "hostname": domain,
            "url": f"/bench/{i % 50}", "referrer": "", "language": "en-US", "screen": "1920x1080", "title": "bench"}})
        headers = {"Host": name, "Content-Type": "application/json", "User-Agent": ua, "Origin": f"https://{domain}"}
        if mode == "http":
            headers["X-Real-IP"] = "192.0.2.10"
        try:
            conn.request("POST", "/api/send", body=body, headers=headers)
            resp = conn.getresponse(); resp.read(); status = resp.status
            if resp.getheader("Connection", "").lower() == "close":
                conn.close(); conn = connect(n)
        except Exception as e:
            status = type(e).__name__; conn.close(); conn = connect(n)
        with lock:
            counts[status] = counts.get(status, 0) + 1
start = time.monotonic()
threads = [threading.Thread(target=worker, args=(n,)) for n in range(conc)]
for t in threads: t.start()
for t in threads: t.join()
elapsed = time.monotonic() - start
print(json.dumps({"elapsed": elapsed, "counts": {str(k): v for k, v in counts.items()}}))
PY

summary() {
  python3 -c '
import json, sys
r = json.loads(sys.argv[1]); c = r["counts"]; ok = c.get("200", 0); t = r["elapsed"]
other = ", ".join(f"{k}: {v}" for k, v in sorted(c.items()) if k != "200") or "none"
print(f"{ok} of {sum(c.values())} accepted in {t:.1f} s = {ok / t:.1f}/s (refused/failed: {other})")' "$1"
}

# Umami itself, on the host's loopback: its capacity, and the load for the RSS figure.
log "Sending $pageviews pageviews on the host's loopback"
loopback=$(ssh_host "python3 -c $(printf '%q' "$load") http 127.0.0.1 $port 127.0.0.1 $website www.$domain $pageviews $concurrency '' ''")
rss_after=$(rss_mb)
stored=$(psql_umami "SELECT count(*) FROM website_event WHERE website_id = '$website'")

# Through the TLS edge, when it answers: what a visitor's browser goes through, nginx's
# per-IP rate limit on /api/ included. The controller sends from its lab probe addresses
# (IAC_PROBE_SOURCES), one per connection, so the limit applies per connection.
edge="not measured: https://$site/api/heartbeat does not answer (nginx absent?)"
ca=${IAC_CA_BUNDLE:-$IAC_LAB_DIR/ca-root.pem}
if python3 - "$ip" "$site" "$ca" <<'PY' 2>/dev/null; then
import socket, ssl, sys, http.client
ip, name, ca = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=ca)
conn = http.client.HTTPSConnection(ip, 443, timeout=10, context=ctx)
conn.sock = ctx.wrap_socket(socket.create_connection((ip, 443), timeout=10), server_hostname=name)
conn.request("GET", "/api/heartbeat", headers={"Host": name})
sys.exit(0 if conn.getresponse().status == 200 else 1)
PY
  sources=""
  if [[ ${IAC_PROBE_SOURCES:-} =~ ^([0-9]+\.[0-9]+\.[0-9]+)\.([0-9]+)-([0-9]+)$ ]]; then
    mine=$(ip -4 -o addr show 2>/dev/null || true)
    for i in $(seq "${BASH_REMATCH[2]}" "${BASH_REMATCH[3]}"); do
      a="${BASH_REMATCH[1]}.$i"
      [[ $mine == *"inet $a/"* ]] && sources+="${sources:+,}$a"
    done
  fi
  log "Sending $pageviews pageviews through nginx"
  through=$(python3 -c "$load" https "$ip" 443 "$site" "$website" "www.$domain" "$pageviews" "$concurrency" "$ca" "$sources")
  edge="$(summary "$through"); from $(tr -cd , <<<"$sources" | wc -c | awk -v s="$sources" '{ print (s == "" ? 1 : $1 + 1) }') client address(es)"
fi

# shellcheck disable=SC2016 # expanded on the host
printf '\nUmami on %s (%s, %s cores, %s)\n' "$host" "$(ssh_host '. /etc/os-release; echo $PRETTY_NAME')" "$(ssh_host nproc)" "$(date -u +%F)"
printf '%-34s %s\n' "bundle" "$(basename "$tarball"), built $build_date"
printf '%-34s %s MB compressed, %s MB unpacked on the host\n' "bundle size" "$tar_mb" "$release_mb"
printf '%-34s %s\n' "bundle build time" "$build_line"
printf '%-34s %s MB\n' "RSS idle (restart + heartbeat)" "$rss_idle"
printf '%-34s %s MB\n' "RSS after $pageviews pageviews" "$rss_after"
printf '%-34s %s\n' "pageviews/s, loopback (Umami)" "$(summary "$loopback"); $concurrency connections"
printf '%-34s %s\n' "pageviews stored after loopback" "$stored"
printf '%-34s %s\n' "pageviews/s, through nginx" "$edge"
