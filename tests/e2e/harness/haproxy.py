"""HAProxy as the L4 load balancer: `mode tcp`, `send-proxy-v2` (or v1), run in the foreground;
optionally with HTTP health checks of the backend server sent with a PROXY header
(`check check-send-proxy`), whose result is read from a stats socket."""

from __future__ import annotations

import csv
import io
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from . import net

HAPROXY_BIN = shutil.which("haproxy") or "/usr/sbin/haproxy"


class HAProxyProcess:
    """HAProxy in the foreground (`-db`) on the configuration a subclass wrote to
    `config_path`, its output in `output_path`; `start()` checks the configuration first and
    waits until `listen_address` (host, port) accepts connections."""

    config_path: Path
    output_path: Path
    process: subprocess.Popen | None = None

    def listen_address(self) -> tuple[str, int]:
        raise NotImplementedError

    def start(self):
        check = subprocess.run([HAPROXY_BIN, "-c", "-f", str(self.config_path)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused its config:\n{check.stdout}{check.stderr}")
        self._out = open(self.output_path, "wb")
        self.process = subprocess.Popen(
            [HAPROXY_BIN, "-db", "-f", str(self.config_path)],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        host, port = self.listen_address()
        net.wait_listening(host, port, alive=lambda: self.process.poll() is None)
        return self

    def stop(self) -> None:
        net.terminate(self.process)
        if hasattr(self, "_out"):
            self._out.close()

    def output_text(self) -> str:
        try:
            return self.output_path.read_text(errors="replace")
        except OSError:
            return ""


class HAProxy(HAProxyProcess):
    """Listens on `bind_ip`:`port` and forwards every TCP connection to the backend, from source
    address `source_ip` (the direct peer Envoy sees), prefixed with a PROXY v2 header carrying the
    client's address. `proxy_v2_options` e.g. "unique-id,authority,crc32c"; `unique_id_format`
    is HAProxy's log-format for the unique id (sent as TLV 0x05 with the unique-id option).
    `send_proxy` "v2" (`send-proxy-v2`, the default) or "v1" (`send-proxy`).

    `health_check` (a path, e.g. "/healthz/ready"): HAProxy checks the server with
    `GET <path> HTTP/1.1` every `check_inter` (`rise 1 fall 1`: one check decides), preceded by a
    PROXY header of the server's version when `check_send_proxy` (HAProxy 2.6 then sends a v2
    LOCAL header, or a v1 `PROXY TCP4` line naming the check connection's own addresses). HTTP/1.1
    with a Host header because Envoy answers HTTP/1.0, HAProxy's default, with 426. A stats
    socket (`level admin`) in the work directory then tells the server's state: `server_stat()`,
    `wait_for_status()`."""

    BACKEND = "envoy"
    SERVER = "envoy"

    def __init__(
        self,
        backend_port: int,
        *,
        bind_ip: str = "127.0.0.5",
        source_ip: str = "127.0.0.5",
        backend_ip: str = "127.0.0.1",
        proxy_v2_options: str | None = None,
        unique_id_format: str | None = None,
        workdir: Path | None = None,
        send_proxy: str = "v2",
        health_check: str | None = None,
        check_send_proxy: bool = True,
        check_inter: str = "200ms",
        check_host: str = "trustip.test",
    ) -> None:
        self.bind_ip = bind_ip
        self.port = net.free_port(bind_ip)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="trustip-haproxy-"))
        self.config_path = self.workdir / "haproxy.cfg"
        self.output_path = self.workdir / "haproxy.out"
        self.stats_socket = self.workdir / "haproxy.sock" if health_check else None
        send = {"v2": "send-proxy-v2", "v1": "send-proxy"}[send_proxy]
        server = f"server {self.SERVER} {backend_ip}:{backend_port} {send} source {source_ip}"
        if proxy_v2_options:
            server += f" proxy-v2-options {proxy_v2_options}"
        unique = f"    unique-id-format {unique_id_format}\n" if unique_id_format else ""
        stats = f"    stats socket {self.stats_socket} level admin\n" if health_check else ""
        check = ""
        if health_check:
            server += f" check inter {check_inter} rise 1 fall 1"
            if check_send_proxy:
                server += " check-send-proxy"
            check = (
                "    timeout check 2s\n"
                "    option httpchk\n"
                f"    http-check send meth GET uri {health_check} ver HTTP/1.1 hdr Host {check_host}\n"
            )
        self.config_path.write_text(
            "global\n"
            "    log stderr format raw local0 info\n"
            f"{stats}"
            "defaults\n"
            "    mode tcp\n"
            "    log global\n"
            "    timeout connect 2s\n"
            "    timeout client 30s\n"
            "    timeout server 30s\n"
            "frontend lb\n"
            f"    bind {bind_ip}:{self.port}\n"
            f"{unique}"
            "    default_backend envoy\n"
            f"backend {self.BACKEND}\n"
            f"{check}"
            f"    {server}\n"
        )
        self.process: subprocess.Popen | None = None

    def listen_address(self) -> tuple[str, int]:
        return self.bind_ip, self.port

    # --- health checks (with `health_check`) ----------------------------------------------

    def command(self, line: str, timeout: float = 5.0) -> str:
        """One command on the stats socket (`show stat`, `show servers state`), its answer."""
        assert self.stats_socket is not None, "no stats socket: start HAProxy with health_check"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.stats_socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def server_stat(self) -> dict[str, str]:
        """The backend server's row of `show stat` (CSV): `status` (UP, DOWN, ...),
        `check_status` (L7OK, L7STS, L7RSP, ...; "* " in front while a check runs),
        `check_code` (the HTTP status of the last check), `last_chk`, `chkfail`, `chkdown`."""
        text = self.command("show stat").lstrip("# ")
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("pxname") == self.BACKEND and row.get("svname") == self.SERVER:
                return row
        raise AssertionError(f"no {self.BACKEND}/{self.SERVER} row in show stat:\n{text}")

    def wait_for_check(self, timeout: float = 10.0) -> dict[str, str]:
        """Waits until a check has finished (check_status no longer INI); with `rise 1 fall 1`
        the row's status then says what that check made of the server."""
        deadline = time.monotonic() + timeout
        while True:
            row = self.server_stat()
            if row.get("check_status", "").removeprefix("* ") not in ("", "INI", "UNK"):
                return row
            if time.monotonic() > deadline:
                raise AssertionError(f"no check finished after {timeout}s: {row}\n{self.output_text()[-4000:]}")
            time.sleep(0.05)

    def wait_for_status(self, status: str, timeout: float = 10.0) -> dict[str, str]:
        """Waits until a finished check (not INI) has left the server in `status` ("UP" or
        "DOWN"); returns that `show stat` row, or fails with the last one seen."""
        deadline = time.monotonic() + timeout
        while True:
            row = self.server_stat()
            check_status = row.get("check_status", "").removeprefix("* ")
            if row.get("status") == status and check_status not in ("", "INI", "UNK"):
                return row
            if time.monotonic() > deadline:
                raise AssertionError(f"server not {status} after {timeout}s: {row}\n{self.output_text()[-4000:]}")
            time.sleep(0.05)
