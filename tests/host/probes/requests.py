"""Run ON the host: HTTPS requests to this host's nginx from a chosen source address.

Usage: echo SPEC_B64 | base64 -d ... | python3 - SPEC_B64
SPEC (JSON, base64): {"address": "10.89.77.43", "source": "10.89.77.43", "name": "analytics.example",
                      "parallel": false, "requests": [{"method": "GET", "path": "/", "headers": {}, "body": ""}]}
Prints JSON: one {"status", "headers", "body"} per request (status null when nginx closed
the connection without an answer, as with 444). `source` is the client address nginx sees:
the host's own public address looks like any outside client that is not in the admin
networks; 127.0.0.1 is the path an SSH tunnel takes. Each request uses its own connection.
The certificate is not verified here (tests/host/test_tls.py does that).
Standard library only: the host needs nothing installed for it.
"""

import base64
import http.client
import json
import socket
import ssl
import sys
from concurrent.futures import ThreadPoolExecutor

spec = json.loads(base64.b64decode(sys.argv[1]))
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE


def one(req):
    raw = socket.create_connection((spec["address"], 443), timeout=60, source_address=(spec["source"], 0))
    conn = http.client.HTTPConnection(spec["name"], 443, timeout=60)
    try:
        conn.sock = ctx.wrap_socket(raw, server_hostname=spec["name"])
        body = req.get("body") or None
        conn.request(req.get("method", "GET"), req["path"], body=body,
                     headers={"Host": spec["name"], **req.get("headers", {})})
        resp = conn.getresponse()
        data = resp.read()
        return {"status": resp.status, "headers": {k.lower(): v for k, v in resp.getheaders()},
                "body": data[:300].decode(errors="replace")}
    except (ConnectionError, http.client.RemoteDisconnected, ssl.SSLError):
        return {"status": None, "headers": {}, "body": ""}
    finally:
        conn.close()
        raw.close()


if spec.get("parallel"):
    with ThreadPoolExecutor(max_workers=len(spec["requests"]) or 1) as pool:
        results = list(pool.map(one, spec["requests"]))
else:
    results = [one(r) for r in spec["requests"]]
print(json.dumps(results))
