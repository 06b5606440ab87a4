"""Run ON the host: send N HTTPS requests to nginx from one loopback source address.

Usage: python3 - NAME PATH COUNT SOURCE [FORGE_XFF]
Prints JSON: statuses, the time of each response (seconds from the start), elapsed
seconds, and the headers and body of the first 429.
Each request uses a new connection from SOURCE (e.g. 127.0.0.57), so nginx sees SOURCE
as the client address: per-IP limits can be measured without touching the controller's
own budget. The certificate is not verified here (tests/host/test_tls.py does that).
Standard library only: the host needs nothing installed for it.
"""

import http.client
import json
import random
import socket
import ssl
import sys
import time

name, path, count, source = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
forge = len(sys.argv) > 5 and sys.argv[5] == "forge"
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
statuses, times, first_429 = [], [], None
start = time.monotonic()
for _ in range(count):
    raw = socket.create_connection(("127.0.0.1", 443), timeout=10, source_address=(source, 0))
    conn = http.client.HTTPConnection(name, 443, timeout=10)
    conn.sock = ctx.wrap_socket(raw, server_hostname=name)
    headers = {"Host": name}
    if forge:
        headers["X-Forwarded-For"] = f"203.0.113.{random.randint(1, 254)}"
        headers["X-Real-IP"] = headers["X-Forwarded-For"]
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    statuses.append(resp.status)
    times.append(round(time.monotonic() - start, 4))
    if resp.status == 429 and first_429 is None:
        first_429 = {"headers": {k.lower(): v for k, v in resp.getheaders()}, "body": body.decode(errors="replace")}
    conn.close()
elapsed = time.monotonic() - start
print(json.dumps({"statuses": statuses, "times": times, "elapsed": elapsed, "first_429": first_429}))
