"""A small HTTP/2 client over cleartext (h2c, prior knowledge) from a chosen source address,
optionally preceded by a PROXY header, for the hostile corpus: many requests as streams of one
connection, header names and values sent exactly as given (the `h2` package's own validation and
normalisation are off, so a test can send what a hostile client would: uppercase names, repeated
fields, odd bytes)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from .client import connect


@dataclass
class H2Response:
    """One stream's outcome: `status` None when the stream was reset or the connection ended
    before a response (`reset` then says which error code, if any)."""

    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    reset: int | None = None
    goaway: int | None = None  # the GOAWAY error code that ended the stream unanswered
    ended: bool = False


def requests(
    port: int,
    streams: list[list[tuple[bytes, bytes]]],
    *,
    source: str = "127.0.0.1",
    dest: str | None = None,
    proxy: bytes = b"",
    timeout: float = 10.0,
) -> list[H2Response]:
    """Sends each entry of `streams` (a full header list, pseudo-headers first) as a request
    without a body on its own stream of one h2c connection, and returns one H2Response per
    stream, in order. A connection Envoy closes or refuses gives responses with status None."""
    if dest is None:
        dest = "::1" if ":" in source else "127.0.0.1"
    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=config)
    sock = connect(source, dest, port, timeout)
    results: dict[int, H2Response] = {}
    order: list[int] = []
    try:
        conn.initiate_connection()
        for headers in streams:
            stream_id = conn.get_next_available_stream_id()
            conn.send_headers(stream_id, headers, end_stream=True)
            results[stream_id] = H2Response()
            order.append(stream_id)
        try:
            sock.sendall(proxy + conn.data_to_send())
        except (BrokenPipeError, ConnectionResetError):
            return [results[s] for s in order]
        pending = set(order)
        while pending:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, socket.timeout, OSError):
                break
            if not data:
                break
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                break
            for event in events:
                response = results.get(getattr(event, "stream_id", 0) or 0)
                if isinstance(event, h2.events.ResponseReceived) and response:
                    response.headers = list(event.headers)
                    for name, value in event.headers:
                        if name == b":status":
                            response.status = int(value)
                elif isinstance(event, h2.events.DataReceived) and response:
                    response.body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded) and response:
                    response.ended = True
                    pending.discard(event.stream_id)
                elif isinstance(event, h2.events.StreamReset) and response:
                    response.reset = int(event.error_code)
                    pending.discard(event.stream_id)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    # GOAWAY: with an error, nothing more comes (Envoy then closes after its
                    # delayed-close timeout); without one, streams up to last_stream_id finish.
                    last = event.last_stream_id or 0
                    for stream_id in list(pending):
                        if event.error_code or stream_id > last:
                            results[stream_id].goaway = int(event.error_code)
                            pending.discard(stream_id)
            outgoing = conn.data_to_send()
            if outgoing:
                try:
                    sock.sendall(outgoing)
                except OSError:
                    break
    finally:
        sock.close()
    return [results[s] for s in order]
