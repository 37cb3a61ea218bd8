"""Steady load for the reload tests: client threads that send requests one after the other
(a pause of a few milliseconds between them), on keep-alive connections or on a new connection
each, and record every request's outcome with the time its connection was opened.

A keep-alive client behaves as HTTP/1.1 says a client may without retrying anything: it sends
the next request on the same connection until a response says `connection: close`, then opens
a new connection. A connection that ends before a whole response arrived is a failed request
(`Record.error`), never retried, so a run with no error is a run where no request failed.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from . import client
from .client import Response, _complete, parse_response

_connection_ids = itertools.count(1)


class ConnectionClosed(Exception):
    """The connection ended (EOF, reset, timeout) before a whole response arrived."""


class KeepAliveConnection:
    """One HTTP/1.1 connection from `source` to `dest`:`port`, `proxy` (a PROXY header) sent
    first; `request()` sends one request (no `connection: close`) and reads its response."""

    def __init__(self, port: int, *, source: str, dest: str = "127.0.0.1", proxy: bytes = b"", timeout: float = 10.0):
        self.id = next(_connection_ids)
        self.opened = time.monotonic()
        self.sock = socket.create_connection((dest, port), timeout=timeout, source_address=(source, 0))
        self.proxy = proxy
        self.requests = 0

    def request(self, headers: list[tuple[str, str]], test_id: str) -> Response:
        lines = ["GET / HTTP/1.1", "host: trustip.test", f"x-test-id: {test_id}"]
        lines += [f"{name}: {value}" for name, value in headers]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode()
        if self.requests == 0:
            data = self.proxy + data
        self.requests += 1
        received = b""
        try:
            self.sock.sendall(data)
            while not _complete(received):
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionClosed(f"closed after {len(received)} response bytes: {received[:200]!r}")
                received += chunk
        except OSError as error:
            raise ConnectionClosed(f"{type(error).__name__}: {error} after {len(received)} response bytes") from error
        response = parse_response(received)
        response.test_id = test_id
        return response

    def close(self) -> None:
        self.sock.close()


@dataclass
class Record:
    """One request: which worker sent it, on which connection (opened at `opened`, monotonic),
    the how-many-th on it (0: the first), and what came back (`response` None: `error`)."""

    worker: str
    connection: int
    opened: float
    index: int
    sent: float
    done: float
    response: Response | None = None
    error: str = ""

    @property
    def closing(self) -> bool:
        """The response said `connection: close` (Envoy draining the connection)."""
        return self.response is not None and (self.response.header("connection") or "").lower() == "close"


@dataclass
class Worker:
    """A client: `source` connects to `dest`:`port` (Envoy, or the load balancer), sends `proxy`
    first (a PROXY header, or nothing through the load balancer) and `headers` with every
    request; `keep_alive` keeps the connection, else each request opens its own (and says
    `connection: close`). `pause` seconds between requests keep the machine usable."""

    name: str
    port: int
    source: str
    dest: str = "127.0.0.1"
    proxy: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    keep_alive: bool = True
    pause: float = 0.002


class Load:
    """Runs `workers`, one thread each, from `start()` until `stop()`; `records` is every
    request they sent, in the order they finished (a context manager does both)."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(worker,), daemon=True) for worker in workers]

    def __enter__(self) -> "Load":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _record(self, record: Record) -> None:
        with self._lock:
            self.records.append(record)

    def snapshot(self) -> list[Record]:
        with self._lock:
            return list(self.records)

    def _run(self, worker: Worker) -> None:
        run = self._keep_alive if worker.keep_alive else self._one_per_connection
        while not self._stop.is_set():
            run(worker)
            time.sleep(worker.pause)

    def _one_per_connection(self, worker: Worker) -> None:
        opened = time.monotonic()
        record = Record(worker.name, next(_connection_ids), opened, 0, opened, opened)
        try:
            record.response = client.request(
                worker.port, worker.headers, source=worker.source, dest=worker.dest, proxy=worker.proxy
            )
        except OSError as error:
            record.error = f"{type(error).__name__}: {error}"
        record.done = time.monotonic()
        self._record(record)

    def _keep_alive(self, worker: Worker) -> None:
        """One connection, used until a response closes it, an error, or stop()."""
        opened = time.monotonic()
        try:
            connection = KeepAliveConnection(worker.port, source=worker.source, dest=worker.dest, proxy=worker.proxy)
        except OSError as error:
            number = next(_connection_ids)
            self._record(Record(worker.name, number, opened, 0, opened, time.monotonic(), error=f"connect: {error}"))
            return
        try:
            while not self._stop.is_set():
                index = connection.requests
                record = Record(worker.name, connection.id, connection.opened, index, time.monotonic(), 0.0)
                try:
                    record.response = connection.request(worker.headers, uuid.uuid4().hex)
                except ConnectionClosed as error:
                    record.error = str(error)
                record.done = time.monotonic()
                self._record(record)
                if record.error or record.closing:
                    return
                time.sleep(worker.pause)
        finally:
            connection.close()
