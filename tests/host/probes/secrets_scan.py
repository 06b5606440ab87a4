"""Run ON the host, as root: look for the app's secrets where they must never appear.

Usage: python3 - ENV_FILE APP_SOCKET PATH...
(SECRETS_SCAN_UNITS in the environment: the units to search, space-separated; default the
platform app's.)
Reads the secrets from ENV_FILE (the root-only file systemd hands the app) and searches the
process list, the journal of the current boot, the app's unit files and the app's answers
to GET PATH on its own socket (APP_SOCKET: 127.0.0.1:8000, or a unix socket's path).
Prints JSON with the NAMES of the secrets found where, never a value: the secrets never
leave the host and never appear in a command line.
Standard library only.
"""

import http.client
import json
import os
import re
import socket
import subprocess
import sys

env_file, target, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
secrets = {}
with open(env_file, encoding="utf-8") as env:
    for line in env:
        key, _, value = line.strip().partition("=")
        value = value.strip().strip("'\"")
        if re.search(r"SECRET|_KEY|TOKEN|PASSWORD", key) and len(value) >= 8:
            secrets[key] = value


def found_in(text):
    return sorted(name for name, value in secrets.items() if value in text)


found = {
    "process_arguments": found_in(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout),
    "unit_files": found_in(subprocess.run(
        ["systemctl", "cat", *os.environ.get("SECRETS_SCAN_UNITS", "platform.service platform-candidate.service "
                                             "platform.socket platform-actionlog.service").split()],
        capture_output=True, text=True).stdout),
}
journal_hits, lines = set(), 0
with subprocess.Popen(["journalctl", "--no-pager", "--output=cat", "--boot"], stdout=subprocess.PIPE,
                      text=True, errors="replace") as proc:
    for line in proc.stdout:
        lines += 1
        journal_hits.update(found_in(line))
found["journal"] = sorted(journal_hits)


class AppConnection(http.client.HTTPConnection):
    def connect(self):
        if target.startswith("/"):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(10)
            self.sock.connect(target)
        else:
            address, _, port = target.rpartition(":")
            self.sock = socket.create_connection((address.strip("[]"), int(port)), timeout=10)


responses, response_hits = {}, set()
for path in paths:
    conn = AppConnection("localhost", timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read().decode(errors="replace")
    responses[path] = resp.status
    response_hits.update(found_in(str(resp.headers) + body))
    conn.close()
found["responses"] = sorted(response_hits)
print(json.dumps({"secrets": sorted(secrets), "found": found, "journal_lines": lines, "responses": responses}))
