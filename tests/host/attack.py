"""Probes that talk to the edge the way an attacker (or a browser) does, from the controller:
raw HTTP/1.1 over TLS with any SNI and Host, HTTP/2 with any :authority (the `h2` library),
and many idle connections from one address. Every socket is closed before a function
returns, also when it fails.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions

USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) edge-attack-check"


@dataclass
class Answer:
    """One response, or None-like fields when the server closed without answering."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    protocol: str = ""
    closed_without_answer: bool = False

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def _tls(probe, port: int, sni: str, alpn: list[str] | None, timeout: float) -> ssl.SSLSocket:
    sock = probe.connect(port, timeout)
    try:
        ctx = probe.context()
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx.wrap_socket(sock, server_hostname=sni)
    except BaseException:
        sock.close()
        raise


def http1(probe, sni: str | None, host_header: str | None, path: str = "/", *, port: int | None = None,
          timeout: float = 10) -> Answer:
    """One HTTP/1.1 request over a raw socket: TLS with SNI `sni` (plain HTTP when None) and
    the Host header `host_header` (none at all when None), exactly as written here."""
    port = port or (443 if sni else 80)
    sock = _tls(probe, port, sni, ["http/1.1"], timeout) if sni else probe.connect(port, timeout)
    try:
        head = f"GET {path} HTTP/1.1\r\n"
        if host_header is not None:
            head += f"Host: {host_header}\r\n"
        head += f"User-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        sock.sendall(head.encode())
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    if not data:
        return Answer(None, protocol="HTTP/1.1", closed_without_answer=True)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(lines[0].split()[1]), headers, body, "HTTP/1.1")


class H2:
    """One HTTP/2 connection (TLS with SNI `sni`, ALPN h2) that sends GETs as parallel
    streams and can be reused, like a browser's. Use as a context manager."""

    def __init__(self, probe, sni: str, *, timeout: float = 10) -> None:
        self.timeout = timeout
        self.sock = _tls(probe, 443, sni, ["h2"], timeout)
        try:
            assert self.sock.selected_alpn_protocol() == "h2", (
                f"{sni}: no HTTP/2 (ALPN {self.sock.selected_alpn_protocol()})")
            self.conn = h2.connection.H2Connection(
                h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
            self.conn.initiate_connection()
            self.sock.sendall(self.conn.data_to_send())
        except BaseException:
            self.sock.close()
            raise
        self.terminated = False

    def __enter__(self) -> H2:
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def get(self, requests: Iterable[tuple[str, str]]) -> list[Answer]:
        """GET each (:authority, :path) as parallel streams; one Answer per request."""
        streams: dict[int, Answer] = {}
        order = []
        for authority, path in requests:
            sid = self.conn.get_next_available_stream_id()
            self.conn.send_headers(sid, [(":method", "GET"), (":scheme", "https"), (":authority", authority),
                                         (":path", path), ("user-agent", USER_AGENT), ("accept", "*/*")],
                                   end_stream=True)
            streams[sid] = Answer(None, protocol="HTTP/2")
            order.append(sid)
        open_streams = set(order)
        try:
            self.sock.sendall(self.conn.data_to_send())
        except (OSError, ssl.SSLError):
            open_streams.clear()
            self.terminated = True
        deadline = time.monotonic() + self.timeout
        while open_streams and time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except (OSError, ssl.SSLError):
                data = b""
            if not data:
                self.terminated = True
                break
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.terminated = True
                break
            for event in events:
                sid = getattr(event, "stream_id", None)
                if isinstance(event, h2.events.ResponseReceived):
                    hdrs = dict(event.headers)
                    streams[sid].status = int(hdrs.pop(":status"))
                    streams[sid].headers = {k.lower(): v for k, v in hdrs.items()}
                elif isinstance(event, h2.events.DataReceived):
                    streams[sid].body += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    open_streams.discard(sid)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    self.terminated = True
                    open_streams.clear()
            out = self.conn.data_to_send()
            if out:
                self.sock.sendall(out)
        for answer in streams.values():
            if answer.status is None:
                answer.closed_without_answer = True
        return [streams[sid] for sid in order]


def h2_get(probe, sni: str, requests: Iterable[tuple[str, str]], *, timeout: float = 10) -> list[Answer]:
    """GET requests as parallel streams of ONE new HTTP/2 connection with SNI `sni`; each
    request is (:authority, :path). Returns one Answer per request, in order."""
    with H2(probe, sni, timeout=timeout) as conn:
        return conn.get(requests)


@dataclass
class Flood:
    """What happened to COUNT connections opened at once from one address and left idle."""

    attempted: int
    accepted: int
    refused: int
    # Seconds from the end of the handshake until the server closed it, per accepted one
    # (None: still open when the watch ended).
    closed_after: list[float | None]

    @property
    def still_open(self) -> int:
        return sum(1 for c in self.closed_after if c is None)


def _connect_all(probe, port: int, count: int, timeout: float) -> list[tuple[socket.socket, float]]:
    """COUNT TCP connections started at the same moment (non-blocking connects); those the
    server accepted within `timeout`, with the moment each was established (the server's
    timers run from its accept). The others are closed."""
    pending: list[socket.socket] = []
    accepted: list[tuple[socket.socket, float]] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET6 if ":" in probe.address else socket.AF_INET, socket.SOCK_STREAM)
            pending.append(sock)
            if probe.source:
                sock.bind((probe.source, 0))
            sock.setblocking(False)
            sock.connect_ex((probe.address, port))
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            _, writable, _ = select.select([], pending, [], max(0.0, deadline - time.monotonic()))
            for sock in writable:
                pending.remove(sock)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    accepted.append((sock, time.monotonic()))
                else:
                    sock.close()
        return accepted
    except BaseException:
        for sock, _ in accepted:
            sock.close()
        raise
    finally:
        for sock in pending:
            sock.close()


def _handshake(probe, sock: socket.socket, established: float, sni: str, timeout: float):
    try:
        sock.setblocking(True)
        sock.settimeout(timeout)
        ctx = probe.context()
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx.wrap_socket(sock, server_hostname=sni), established
    except (OSError, ssl.SSLError):
        sock.close()
        return None


def idle_flood(probe, count: int, *, sni: str | None, port: int = 443, watch: float = 25,
               connect_timeout: float = 5, workers: int = 32) -> Flood:
    """Open COUNT connections at once from the probe's address (TLS handshakes completed
    when `sni` is given), send nothing, and watch until `watch` seconds after they were
    established which of them the server closes and when (seconds since established)."""
    opened: list[tuple[socket.socket, float]] = []
    tcp: list[tuple[socket.socket, float]] = []
    try:
        tcp = _connect_all(probe, port, count, connect_timeout)
        if sni:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(lambda st: _handshake(probe, st[0], st[1], sni, 10), tcp))
            opened = [r for r in results if r is not None]
        else:
            opened = tcp
        tcp = []
        for sock, _ in opened:
            # Non-blocking: a TLS 1.3 session ticket makes the socket readable without
            # any application data; recv must not then wait for more.
            sock.setblocking(False)
        closed_after: dict[int, float] = {}
        deadline = min((t for _, t in opened), default=time.monotonic()) + watch
        live = {s.fileno(): (s, t) for s, t in opened}
        while live and time.monotonic() < deadline:
            readable, _, _ = select.select(list(live), [], [], min(1.0, max(0.0, deadline - time.monotonic())))
            for fd in readable:
                sock, start = live[fd]
                try:
                    raw = sock.recv(1024)
                except (ssl.SSLWantReadError, BlockingIOError):
                    continue
                except (OSError, ssl.SSLError):
                    raw = b""
                if not raw:
                    closed_after[fd] = time.monotonic() - start
                    del live[fd]
        fds = [s.fileno() for s, _ in opened]
        return Flood(count, len(opened), count - len(opened), [closed_after.get(fd) for fd in fds])
    finally:
        for sock, _ in tcp:
            sock.close()
        for sock, _ in opened:
            with contextlib.suppress(OSError):
                sock.close()


def slow_headers(probe, sni: str, host_header: str, *, interval: float = 2, watch: float = 30,
                 timeout: float = 10) -> float | None:
    """Slowloris: send a request line, then one header byte every `interval` seconds, never
    finishing the header. Seconds until the server closed the connection (None: still open
    after `watch`)."""
    sock = _tls(probe, 443, sni, ["http/1.1"], timeout)
    try:
        start = time.monotonic()
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host_header}\r\nX-Slow: ".encode())
        sock.setblocking(False)  # see idle_flood: a session ticket is not an answer
        while time.monotonic() - start < watch:
            readable, _, _ = select.select([sock], [], [], interval)
            if readable:
                try:
                    if not sock.recv(4096):
                        return time.monotonic() - start
                except (ssl.SSLWantReadError, BlockingIOError):
                    continue
                except (OSError, ssl.SSLError):
                    return time.monotonic() - start
                # A 408 or 400 answer, then the close: keep reading until it closes.
                continue
            try:
                sock.sendall(b"a")
            except (OSError, ssl.SSLError):
                return time.monotonic() - start
        return None
    finally:
        sock.close()


def missing_policy_headers(headers: dict[str, str], spec: dict[str, dict]) -> list[str]:
    """What in `headers` (lower-case names) falls short of the policy's header spec
    (headers.security: max_age_min / equals / present / contains per header)."""
    problems = []
    for name, rule in spec.items():
        value = headers.get(name.lower())
        if value is None:
            problems.append(f"{name} missing")
            continue
        if "max_age_min" in rule:
            ages = [int(p.split("=", 1)[1]) for p in value.split(";") if p.strip().lower().startswith("max-age=")]
            if not ages or ages[0] < rule["max_age_min"]:
                problems.append(f"{name}: {value!r} (max-age below {rule['max_age_min']})")
        if "equals" in rule and value not in rule["equals"]:
            problems.append(f"{name}: {value!r} not one of {rule['equals']}")
        for part in rule.get("contains", []):
            if part not in value:
                problems.append(f"{name}: {value!r} lacks {part!r}")
    return problems


def wait_closed(sock: socket.socket, watch: float) -> float | None:
    """Seconds until the server closes an idle connection (None: still open after
    `watch`). Any data that arrives meanwhile (a TLS session ticket, an HTTP/2 GOAWAY) is
    read and ignored."""
    start = time.monotonic()
    sock.setblocking(False)
    while time.monotonic() - start < watch:
        readable, _, _ = select.select([sock], [], [], 1.0)
        if not readable:
            continue
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except (ssl.SSLWantReadError, BlockingIOError):
            continue
        except (OSError, ssl.SSLError):
            return time.monotonic() - start
    return None


def keepalive_idle(probe, name: str, path: str, watch: float) -> float | None:
    """One HTTP/1.1 keep-alive request, then silence: seconds until the server closes it."""
    sock = _tls(probe, 443, name, ["http/1.1"], 10)
    try:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {name}\r\nUser-Agent: {USER_AGENT}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            if not chunk:
                return 0.0
            head += chunk
        return wait_closed(sock, watch)
    finally:
        sock.close()
