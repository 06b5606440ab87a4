#!/usr/bin/env bash
# app-test.sh: run the reference app's own tests (app/tests) in .venv-app, a virtualenv
# holding exactly the app's hash-pinned runtime lock (app/requirements.lock) plus its test
# tools (app/requirements-test.txt). Rebuilt only when either file changes.
# The tests run on both stores: files/SQLite, and a real PostgreSQL, here a throwaway
# cluster from pg_virtualenv (postgresql-common, scripts/bootstrap.sh installs it), removed
# when pytest ends. With PLATFORM_TEST_DATABASE_URL set, that server is used instead.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
source "$(dirname "$0")/lab/lib.sh"
venv=$REPO_ROOT/.venv-app
stamp=$venv/.requirements.sha256
want=$(cat "$REPO_ROOT/app/requirements.lock" "$REPO_ROOT/app/requirements-test.txt" | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "Creating .venv-app for the app's tests (app/requirements.lock, app/requirements-test.txt)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --require-hashes -r "$REPO_ROOT/app/requirements.lock" 2>&1 | { grep -v 'is ignored: it is neither' || true; }
  [ "${PIPESTATUS[0]}" -eq 0 ] || die "pip install -r app/requirements.lock failed: is PyPI reachable?"
  "$venv/bin/pip" install -q -r "$REPO_ROOT/app/requirements-test.txt" 2>&1 | { grep -v 'is ignored: it is neither' || true; }
  [ "${PIPESTATUS[0]}" -eq 0 ] || die "pip install -r app/requirements-test.txt failed: is PyPI reachable?"
  echo "$want" >"$stamp"
fi
cd "$REPO_ROOT/app"
pytest=("$venv/bin/python" -m pytest -p no:cacheprovider -q "$@")
# The PostgreSQL cases fail rather than skip when no server is found (tests/conftest.py).
export PLATFORM_TEST_REQUIRE_DATABASE=1
if [ -n "${PLATFORM_TEST_DATABASE_URL:-}" ]; then
  exec "${pytest[@]}"
fi
command -v pg_virtualenv >/dev/null 2>&1 \
  || die "pg_virtualenv is missing (the PostgreSQL cases need it): run scripts/bootstrap.sh, or apt-get install postgresql postgresql-common"
# -t: the cluster lives in a temporary directory even as root (not /etc/postgresql, and
# /etc/postgresql-common/pg_service.conf stays untouched). When pytest fails, pg_virtualenv
# shows the tail of the server's log: there without the text of failed statements (the
# tests provoke some errors on purpose).
exec pg_virtualenv -t -o log_min_error_statement=panic "${pytest[@]}"
