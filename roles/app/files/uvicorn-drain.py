"""uvicorn's own command line (same options), with one change: a stopping worker drains.

Installed by roles/app as /usr/local/libexec/uvicorn-drain.py and run by the release's
interpreter (<release>/venv/bin/python /usr/local/libexec/uvicorn-drain.py MODULE:APP --fd 3 ...),
so it imports the release's own uvicorn.

Why: on SIGTERM (every release switch and restart) uvicorn stops listening and at once
closes every connection that has no request in progress. A connection it accepted a moment
before, whose request is still unread in the socket buffer, counts as idle: it is closed with
unread data, which the client sees as a reset (ConnectionResetError). The listening socket
belongs to systemd (platform.socket), so nothing waiting in its queue is lost; only those
accepted-but-unread connections were. Here a stopping worker stops accepting, then waits
DRAIN_SECONDS for the requests already accepted to arrive, then shuts down as uvicorn does
(requests in progress finish; --timeout-graceful-shutdown still bounds it).
benchmarks/uvicorn_switch.py measured 17 resets in 10 switches under load with uvicorn
itself, 0 with this; tests/unit/test_uvicorn_drain.py keeps it so.

With a uvicorn whose internals differ (no Server.shutdown(sockets)), it runs uvicorn unchanged.
"""

import asyncio
import importlib
import inspect
import sys

import uvicorn

DRAIN_SECONDS = 0.5


class DrainingServer(uvicorn.Server):
    async def shutdown(self, sockets=None):
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        await asyncio.sleep(DRAIN_SECONDS)
        await super().shutdown(sockets=None)


# At import, not only under __main__: uvicorn's worker processes (multiprocessing's spawn)
# import this file again, and build their server from uvicorn.supervisors.multiprocess.
if "sockets" in inspect.signature(uvicorn.Server.shutdown).parameters:
    for name in ("uvicorn.main", "uvicorn.supervisors.multiprocess"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "Server", None) is uvicorn.Server:
            module.Server = DrainingServer

if __name__ == "__main__":
    # `uvicorn.main` is also the name of the package's main function: take the module.
    sys.exit(importlib.import_module("uvicorn.main").main())
