#!/usr/bin/env bash
# End-to-end check of an extracted umami bundle against a PostgreSQL database.
#
#   DATABASE_URL=postgresql://umami:...@127.0.0.1/umami scripts/umami/smoke.sh /path/to/umami-2.10.0
#
# Runs bin/migrate.sh twice and bin/set-admin-password.js twice, starts `node server.js`
# on 127.0.0.1:${SMOKE_PORT:-3300}, then checks: heartbeat, the default admin/umami login
# is refused, the new password logs in, a website can be created, /script.js is served,
# a pageview sent to /api/send is counted by /api/websites/<id>/stats. Prints the
# server's idle RSS. Stops the server on exit.
#
# Environment: DATABASE_URL (required); UMAMI_ADMIN_PASSWORD (default: a random one,
# never printed); SMOKE_PORT (default 3300); SMOKE_EXPECT_FRESH=1 to require that the
# first migration run applies something (an empty database).
# Needs: bash, curl, node, psql. Exit 0 only if every check passed.
set -euo pipefail

bundle=${1:?usage: DATABASE_URL=... $0 /path/to/extracted/umami-2.10.0}
bundle=$(cd "$bundle" && pwd)
: "${DATABASE_URL:?DATABASE_URL must be set}"
port=${SMOKE_PORT:-3300}
base="http://127.0.0.1:$port"

passed=0
failed=0
ok() {
  echo "PASS: $*"
  passed=$((passed + 1))
}
ko() {
  echo "FAIL: $*"
  failed=$((failed + 1))
}
check() { # check <description> <command...>
  local what=$1
  shift
  if "$@"; then ok "$what"; else ko "$what"; fi
}
json() { # json <expression over `d`> <<<"$json_text"
  node -e 'let s="";process.stdin.on("data",c=>s+=c).on("end",()=>{const d=JSON.parse(s);const v=eval(process.argv[1]);process.stdout.write(v===undefined?"":String(v))})' "$1"
}

server_pid=""
workdir=$(mktemp -d)
cleanup() {
  if [[ -n $server_pid ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$workdir"
}
trap cleanup EXIT

if [[ -z ${UMAMI_ADMIN_PASSWORD:-} ]]; then
  UMAMI_ADMIN_PASSWORD=$(node -e 'process.stdout.write(require("crypto").randomBytes(18).toString("base64url"))')
fi
export UMAMI_ADMIN_PASSWORD

# 1. Migrations, twice.
first=$("$bundle/bin/migrate.sh" | tail -n 1)
echo "migrate #1: $first"
if [[ ${SMOKE_EXPECT_FRESH:-0} == 1 ]]; then
  check "first migration run applies the migrations" test "${first%% applied*}" = "CHANGED:"
else
  check "first migration run succeeds" test -n "$first"
fi
second=$("$bundle/bin/migrate.sh" | tail -n 1)
echo "migrate #2: $second"
check "second migration run changes nothing" test "$second" = "OK: up to date"

# 2. Admin password, twice (a new password each smoke run, so the first one changes).
first=$(node "$bundle/bin/set-admin-password.js")
echo "set-admin-password #1: $first"
check "first password run changes it" test "$first" = "CHANGED: password set"
second=$(node "$bundle/bin/set-admin-password.js")
echo "set-admin-password #2: $second"
check "second password run changes nothing" test "$second" = "OK: unchanged"

# 3. The server (refuse to test whatever else might already listen on the port).
if curl -s -o /dev/null "$base/"; then
  echo "FAIL: something already listens on 127.0.0.1:$port (set SMOKE_PORT)"
  exit 1
fi
app_secret=$(node -e 'process.stdout.write(require("crypto").randomBytes(32).toString("hex"))')
(cd "$bundle" && exec env HOSTNAME=127.0.0.1 PORT="$port" APP_SECRET="$app_secret" \
  DISABLE_TELEMETRY=1 DISABLE_UPDATES=1 CLIENT_IP_HEADER=x-real-ip \
  node server.js >"$workdir/server.log" 2>&1) &
server_pid=$!
t0=$(date +%s%N)
code=000
for _ in $(seq 1 120); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$base/api/heartbeat" || true)
  [[ $code == 200 ]] && break
  sleep 0.25
done
echo "heartbeat after $((($(date +%s%N) - t0) / 1000000)) ms"
ours() { [[ $code == 200 ]] && kill -0 "$server_pid" 2>/dev/null; }
check "GET /api/heartbeat -> 200 from our server (pid $server_pid)" ours
if [[ $code != 200 ]]; then
  cat "$workdir/server.log"
  exit 1
fi

login() { # login <user> <password> -> writes body to $workdir/login.json, prints status
  PW=$2 node -e 'process.stdout.write(JSON.stringify({username:process.argv[1],password:process.env.PW}))' "$1" |
    curl -s -o "$workdir/login.json" -w '%{http_code}' -H 'content-type: application/json' \
      --data-binary @- "$base/api/auth/login"
}
# The password goes to node through the environment and to curl through stdin, never argv.
code=$(login admin umami)
check "login admin/umami -> 401 (got $code)" test "$code" = 401
code=$(login "${UMAMI_ADMIN_USER:-admin}" "$UMAMI_ADMIN_PASSWORD")
token=$(json 'd.token' <"$workdir/login.json" || true)
check "login with the new password -> 200 and a token (got $code)" test "$code" = 200 -a -n "$token"

auth=(-H "authorization: Bearer $token" -H 'content-type: application/json')
body=$(curl -s -w '\n%{http_code}' "${auth[@]}" --data '{"name":"smoke","domain":"smoke.example.test"}' "$base/api/websites")
code=${body##*$'\n'}
website=$(json 'd.id' <<<"${body%$'\n'*}" || true)
check "POST /api/websites -> 200 and an id (got $code)" test "$code" = 200 -a -n "$website"

code=$(curl -s -o "$workdir/script.js" -w '%{http_code}' "$base/script.js")
check "GET /script.js -> 200 (got $code, $(wc -c <"$workdir/script.js") bytes)" test "$code" = 200

ua='Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36'
payload=$(node -e 'process.stdout.write(JSON.stringify({type:"event",payload:{website:process.argv[1],hostname:"smoke.example.test",language:"en-US",screen:"1920x1080",title:"Smoke",url:"/smoke",referrer:""}}))' "$website")
code=$(curl -s -o /dev/null -w '%{http_code}' -H "user-agent: $ua" -H 'x-real-ip: 198.51.100.23' \
  -H 'content-type: application/json' --data "$payload" "$base/api/send")
check "POST /api/send (pageview) -> 200 (got $code)" test "$code" = 200

now=$(($(date +%s) * 1000))
stats=$(curl -s "${auth[@]}" "$base/api/websites/$website/stats?startAt=$((now - 3600000))&endAt=$((now + 60000))")
pageviews=$(json 'd.pageviews.value' <<<"$stats" || true)
echo "stats: $stats"
check "stats count the pageview (pageviews=$pageviews)" test "${pageviews:-0}" -ge 1

sleep 2
rss_kb=$(ps -o rss= -p "$server_pid" | tr -d ' ')
echo "server RSS: $((rss_kb / 1024)) MB"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
