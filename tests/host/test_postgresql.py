"""PostgreSQL (roles/postgresql): loopback only, scram-sha-256 for every login, one
database and one role per consumer, nothing else let in. On a database host of its own
(docs/tiers.md) also its private address, for the app hosts only, over verified TLS only.

Privileged reads (psql as the postgres superuser, ss) run as root: directly in the lab,
through sudo where the inventory connects as an unprivileged user. Every check only reads
(the refused logins are logged by PostgreSQL, which no jail watches). Claim:
analytics.hardened; the inventory says which databases exist and any private address.
"""

from __future__ import annotations

import re
import shlex
import time
from typing import Any

import pytest
from appsock import reset_limits
from tiers import DB, db_client_hosts, db_clients_by_tier, inventory_host

from policy import require

# The hosts these checks are about (tests/host/tiers.py).
HOST_GROUPS = DB

pytestmark = pytest.mark.claim("analytics.hardened")
POLICY = require("analytics.hardened")
FORBIDDEN_METHODS = set(POLICY["forbidden_auth_methods"])


def _root(host, command: str):
    if host.user().name == "root":
        return host.run(command)
    with host.sudo():
        return host.run(command)


def psql(host, sql: str, database: str = "postgres") -> list[list[str]]:
    """Rows of a query run as the postgres superuser (peer over the Unix socket)."""
    psql_cmd = f"psql -X -A -t -F '|' -v ON_ERROR_STOP=1 -d {shlex.quote(database)} -c {shlex.quote(sql)}"
    result = _root(host, f"runuser -u postgres -- {psql_cmd}")
    assert result.rc == 0, result.stderr
    return [line.split("|") for line in result.stdout.splitlines() if line]


@pytest.fixture(scope="module")
def pg(hostvars) -> dict[str, Any]:
    clients = db_client_hosts(hostvars)
    by_tier = db_clients_by_tier(hostvars)
    others = hostvars["hostvars"]
    # Which database each remote host may reach: its tier's own (the app's database from the
    # app hosts, Umami's from the analytics hosts), never the other's.
    allowed = sorted(
        {(others[c].get("app_database_name", "platform_app"), others[c]["ansible_host"]) for c in by_tier["app"]}
        | {(others[c].get("umami_database_name", "umami"), others[c]["ansible_host"]) for c in by_tier["analytics"]}
    )
    return {
        "by_tier": by_tier,
        "allowed": allowed,
        # The app hosts that must reach this server over the network, and their addresses
        # (the inventory's topology: tests/host/tiers.py).
        "clients": clients,
        "client_addresses": {c: hostvars["hostvars"][c]["ansible_host"] for c in clients},
        "port": int(hostvars.get("postgresql_port", 5432)),
        "private_address": hostvars.get("postgresql_private_address", ""),
        "client_networks": hostvars.get("postgresql_client_networks", []),
        "databases": [db["name"] for db in hostvars.get("postgresql_databases", [])],
        "tls_names": hostvars.get("postgresql_tls_names", []),
        "pki_dir": hostvars.get("pki_dir", "/etc/platform-pki"),
    }


def test_server_is_running(host, evidence):
    version = psql(host, "SHOW server_version_num")[0][0]
    major = int(version) // 10000
    evidence("analytics.hardened", postgresql=int(version))
    assert major >= 15
    cluster = host.service(f"postgresql@{major}-main")
    assert cluster.is_running
    assert host.service("postgresql").is_enabled


def test_listens_on_loopback_only(host, pg, evidence):
    # Loopback (the policy), plus the host's private address if the inventory gives one.
    allowed = set(POLICY["listen_addresses"]) | ({pg["private_address"]} if pg["private_address"] else set())
    listeners = [
        line.split()[3].rsplit(":", 1)[0].strip("[]")
        for line in _root(host, "ss -ltnH").stdout.splitlines()
        if line.split()[3].rsplit(":", 1)[1] == str(pg["port"])
    ]
    evidence("analytics.hardened", postgresql_listens=sorted(listeners))
    assert listeners, f"nothing listens on port {pg['port']}"
    assert set(listeners) <= allowed, f"PostgreSQL listens on {listeners}, allowed: {sorted(allowed)}"


def test_pg_hba_has_no_weak_methods(host, pg, evidence):
    """The rules the server reads (pg_hba_file_rules): scram-sha-256, or peer for postgres."""
    rules = psql(
        host,
        "SELECT line_number, type, array_to_string(database, ','), array_to_string(user_name, ','),"
        " coalesce(address, ''), coalesce(auth_method, ''), coalesce(error, '') FROM pg_hba_file_rules",
    )
    rule_masks = dict(psql(host, "SELECT line_number, coalesce(netmask, '') FROM pg_hba_file_rules"))
    evidence("analytics.hardened", pg_hba_methods=sorted({r[5] for r in rules}), pg_hba_rules=len(rules))
    assert rules, "pg_hba.conf has no rules"
    for line, kind, databases, users, address, method, error in rules:
        where = f"pg_hba.conf line {line}"
        assert not error, f"{where}: {error}"
        assert method not in FORBIDDEN_METHODS, f"{where}: {method}"
        if method == "peer":
            assert (kind, users) == ("local", "postgres"), f"{where}: peer for {users} over {kind}"
            continue
        assert method == POLICY["database_auth"], f"{where}: {method}"
        # Each consumer reaches its own database only, never "all".
        assert databases == users and databases in pg["databases"], f"{where}: {users} -> {databases}"
        if kind == "host":
            assert address == "127.0.0.1", f"{where}: plain TCP from {address}"
        elif kind == "hostssl":
            # Exactly the app hosts' own addresses (/32), never a network range.
            assert pg["private_address"], f"{where}: remote rule without a private address"
            assert address in pg["client_addresses"].values(), f"{where}: hostssl from {address}"
            assert rule_masks.get(line) == "255.255.255.255", f"{where}: a range ({rule_masks.get(line)})"
    remote = sorted({(r[2], r[4]) for r in rules if r[1] == "hostssl"})
    evidence("analytics.hardened", pg_hba_remote=[f"{d} from {a}" for d, a in remote])
    assert remote == pg["allowed"], f"hostssl (database, address) {remote}, the tiers want {pg['allowed']}"


def test_rules_on_disk_are_loaded(host):
    """No rendered file waits for a reload: the server loaded its files after they changed."""
    loaded = float(psql(host, "SELECT extract(epoch FROM pg_conf_load_time())")[0][0])
    hba_file = psql(host, "SHOW hba_file")[0][0]
    assert host.file(hba_file).mtime.timestamp() <= loaded
    assert psql(host, "SELECT count(*) FROM pg_settings WHERE pending_restart")[0][0] == "0"


def test_passwords_are_scram_verifiers(host, evidence):
    encryption = psql(host, "SHOW password_encryption")[0][0]
    evidence("analytics.hardened", password_encryption=encryption)
    assert encryption == POLICY["database_auth"]
    weak = psql(
        host,
        "SELECT rolname FROM pg_authid WHERE rolpassword IS NOT NULL AND rolpassword NOT LIKE 'SCRAM-SHA-256$%'",
    )
    assert not weak, f"roles with non-SCRAM passwords: {weak}"
    assert psql(host, "SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'postgres'")[0][0] == "t"


def test_one_database_per_consumer(host, pg):
    assert pg["databases"], "postgresql_databases is empty"
    for name in pg["databases"]:
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", name), f"unexpected database name {name!r}"
        rows = psql(
            host,
            "SELECT pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), r.rolsuper, r.rolcreaterole,"  # noqa: S608 (name checked)
            " r.rolcreatedb, r.rolcanlogin, d.datacl IS NOT NULL,"
            " (SELECT count(*) FROM aclexplode(d.datacl) a WHERE a.grantee = 0 AND a.privilege_type = 'CONNECT')"
            f" FROM pg_database d JOIN pg_roles r ON r.rolname = '{name}' WHERE d.datname = '{name}'",
        )
        assert rows, f"database or role {name} missing"
        owner, encoding, superuser, createrole, createdb, login, has_acl, public_connect = rows[0]
        assert owner == name
        assert encoding == "UTF8"
        assert (superuser, createrole, createdb, login) == ("f", "f", "f", "t")
        assert has_acl == "t" and public_connect == "0", f"PUBLIC may connect to {name}"
        assert not POLICY["public_connect"]


def test_logins_without_the_password_are_refused(host, pg, evidence):
    for name in pg["databases"]:
        wrong = host.run(
            f"PGPASSWORD=not-the-password PGCONNECT_TIMEOUT=5 psql -X -w -h 127.0.0.1 -p {pg['port']}"
            f" -U {name} -d {name} -c 'SELECT 1'"
        )
        assert wrong.rc != 0
        assert "password authentication failed" in wrong.stderr
    # The superuser has no network rule at all.
    superuser = host.run(
        f"PGCONNECT_TIMEOUT=5 psql -X -w -h 127.0.0.1 -p {pg['port']} -U postgres -d postgres -c 'SELECT 1'"
    )
    evidence("analytics.hardened", superuser_network_login="refused" if superuser.rc else "accepted")
    assert superuser.rc != 0 or POLICY["superuser_network_login"]
    assert "no pg_hba.conf entry" in superuser.stderr


def test_tls_is_verifiable_against_the_private_ca(host, pg, evidence):
    """With postgresql_tls_names, a client that trusts only the toolkit's private CA (roles/pki)
    verifies the server's certificate and its address (what sslmode=verify-full does), over
    TLS 1.2 or 1.3, and only the postgres group reads the key."""
    version = psql(host, "SHOW ssl_min_protocol_version")[0][0]
    evidence("analytics.hardened", postgresql_ssl_min_protocol=version)
    assert version in ("TLSv1.2", "TLSv1.3"), version
    if not pg["tls_names"]:
        pytest.skip("postgresql_tls_names is empty: the server keeps the distribution's self-signed certificate")
    probe = _root(host, (
        f"openssl s_client -starttls postgres -connect 127.0.0.1:{pg['port']} -brief -verify_return_error"
        f" -CAfile {shlex.quote(pg['pki_dir'])}/ca.pem -verify_ip 127.0.0.1 </dev/null 2>&1"))
    protocol = re.search(r"Protocol version: (\S+)", probe.stdout)
    key = host.file(f"{pg['pki_dir']}/postgresql.key")
    evidence("analytics.hardened", postgresql_tls_verified="Verification: OK" in probe.stdout,
             postgresql_tls_protocol=protocol.group(1) if protocol else None,
             postgresql_key=f"{key.mode:o} {key.user}:{key.group}")
    assert probe.rc == 0 and "Verification: OK" in probe.stdout, probe.stdout[-1500:]
    assert protocol and protocol.group(1) in ("TLSv1.2", "TLSv1.3"), probe.stdout[-1500:]
    assert (key.mode, key.user, key.group) == (0o640, "root", "postgres")


# The CA file roles/umami installs on an app host with a remote database (roles/umami/vars).
UMAMI_DATABASE_CA = "/etc/ssl/umami-database-ca.pem"
# ... and roles/app's (vars/main.yml: /etc/ssl/<app_service_name>-database-ca.pem).
APP_DATABASE_CA = "/etc/ssl/platform-database-ca.pem"
# A login attempt on Umami's loopback port (never banned): Umami looks the user up.
LOGIN_ATTEMPT = """
import json, sys, urllib.error, urllib.request
body = json.dumps({"username": "tls-probe", "password": "not-the-password"}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/api/auth/login", data=body,
                             headers={"Content-Type": "application/json"})
try:
    print(urllib.request.urlopen(req, timeout=60).status)
except urllib.error.HTTPError as e:
    print(e.code)
"""


# A login attempt to the app over its unix socket, as root on the app host (no nginx).
APP_LOGIN = """
import json, socket, sys
body = json.dumps({"username": "tls-probe", "password": "not-the-password"}).encode()
s = socket.socket(socket.AF_UNIX)
s.settimeout(60)
s.connect(sys.argv[1])
s.sendall(b"POST /api/auth/login HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n"
          b"Content-Type: application/json\\r\\nContent-Length: %d\\r\\n\\r\\n%s" % (len(body), body))
print(s.recv(200).decode(errors="replace").splitlines()[0])
"""


def _sessions(host, client_address: str, database: str) -> list[list[str]]:
    """TLS state of the sessions of DATABASE's role from CLIENT_ADDRESS (polled up to 5 s)."""
    sessions: list[list[str]] = []
    for _ in range(20):
        sessions = psql(host, (
            "SELECT s.ssl, coalesce(s.version, '') FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"  # noqa: S608
            f" WHERE a.client_addr = '{client_address}' AND a.usename = '{database}'"))
        if sessions:
            break
        time.sleep(0.25)
    return sessions


# A PostgreSQL startup message without TLS (protocol 3.0); prints the server's error message,
# or "asked for a password" when it went on to authentication.
PLAIN_STARTUP = """
import socket, struct, sys
host, port, user, database = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
params = b"user\\0" + user.encode() + b"\\0database\\0" + database.encode() + b"\\0\\0"
with socket.create_connection((host, port), timeout=5) as s:
    s.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
    data = s.recv(65536)
if data[:1] == b"E":
    print(" ".join(f[1:].decode() for f in data[5:].split(b"\\0") if f[:1] == b"M"))
else:
    print("asked for a password" if data[:1] == b"R" else repr(data[:40]))
"""


def test_app_hosts_reach_it_over_verified_tls_only(request, host, hostvars, pg, evidence):
    """Database traffic between tiers (docs/tiers.md), seen from both ends. From each app
    host: a connection without TLS is refused before any password is asked, and the server
    proves its private address with a certificate from the private CA. On this host: every
    session Umami opens from there (a login attempt on the app host's loopback makes it
    query) is encrypted, TLS 1.2 or 1.3 (pg_stat_ssl)."""
    if not pg["clients"]:
        pytest.skip("no app host uses this database over the network: PostgreSQL serves loopback only")
    address, port = pg["private_address"], pg["port"]
    assert address, "app hosts use this database, but postgresql_private_address is empty"
    for name, client_address in pg["client_addresses"].items():
        client = inventory_host(request, name)
        theirs = hostvars["hostvars"][name]
        # The database of this host's tier (the first one it may reach) for the plain attempt.
        database = next(d for d, a in pg["allowed"] if a == client_address)
        # The CA this host's consumer verifies the server with (Umami's or the app's copy).
        ca_file = UMAMI_DATABASE_CA if name in pg["by_tier"]["analytics"] else APP_DATABASE_CA
        # A plain startup message (no SSLRequest first), in Python's standard library: an app
        # host has no psql. The server must refuse it before it asks for a password.
        plain = client.run(f"python3 -c {shlex.quote(PLAIN_STARTUP)} {address} {port} {database} {database}")
        assert plain.rc == 0, plain.stderr[-500:]
        assert "no pg_hba.conf entry" in plain.stdout and "no encryption" in plain.stdout, plain.stdout
        probe = _root(client, (
            f"openssl s_client -starttls postgres -connect {address}:{port} -brief -verify_return_error"
            f" -CAfile {ca_file} -verify_ip {address} </dev/null 2>&1"))
        assert "Verification: OK" in probe.stdout, probe.stdout[-1500:]
        evidence("analytics.hardened", tier_client=name, plain_connection="refused", server_certificate_verified=True)
        if name in pg["by_tier"]["analytics"]:
            # Umami queries its database for a login attempt (refused: no such user).
            umami = theirs.get("umami_database_name", "umami")
            umami_port = int(theirs.get("umami_port", 3000))
            login = client.run(f"python3 -c {shlex.quote(LOGIN_ATTEMPT)} {umami_port}")
            assert login.stdout.strip() == "401", (login.stdout, login.stderr)
            _assert_tls_sessions(host, evidence, name, client_address, umami, "its login attempt")
        if name in pg["by_tier"]["app"]:
            # The app's own database (portfolios, per-user limits): a login attempt of a user
            # that does not exist makes the app ask its limiter there (401); the check then
            # lifts what the attempt counted.
            app_database = theirs.get("app_database_name", "platform_app")
            try:
                ping = client.run(f"python3 -c {shlex.quote(APP_LOGIN)} /run/platform/app.sock")
                assert ping.stdout.startswith("HTTP/1.1 401"), (ping.stdout, ping.stderr)
                _assert_tls_sessions(host, evidence, name, client_address, app_database, "a request to its app")
            finally:
                reset_limits(client, "tls-probe")


def _assert_tls_sessions(host, evidence, name: str, client_address: str, database: str, after: str) -> None:
    sessions = _sessions(host, client_address, database)
    evidence("analytics.hardened", tier_client=name, database=database, sessions_tls=[s[1] or "none" for s in sessions])
    assert sessions, f"no session of {database} from {name} ({client_address}) after {after}"
    for ssl, version in sessions:
        assert ssl == "t" and version in ("TLSv1.2", "TLSv1.3"), sessions
