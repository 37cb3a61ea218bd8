"""HAProxy as the L4 load balancer: `mode tcp`, `send-proxy-v2`, run in the foreground."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from . import net

HAPROXY_BIN = shutil.which("haproxy") or "/usr/sbin/haproxy"


class HAProxy:
    """Listens on `bind_ip`:`port` and forwards every TCP connection to the backend, from source
    address `source_ip` (the direct peer Envoy sees), prefixed with a PROXY v2 header carrying the
    client's address. `proxy_v2_options` e.g. "unique-id,authority,crc32c"; `unique_id_format`
    is HAProxy's log-format for the unique id (sent as TLV 0x05 with the unique-id option)."""

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
    ) -> None:
        self.bind_ip = bind_ip
        self.port = net.free_port(bind_ip)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="trustip-haproxy-"))
        self.config_path = self.workdir / "haproxy.cfg"
        self.output_path = self.workdir / "haproxy.out"
        server = f"server envoy {backend_ip}:{backend_port} send-proxy-v2 source {source_ip}"
        if proxy_v2_options:
            server += f" proxy-v2-options {proxy_v2_options}"
        unique = f"    unique-id-format {unique_id_format}\n" if unique_id_format else ""
        self.config_path.write_text(
            "global\n"
            "    log stderr format raw local0 info\n"
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
            "backend envoy\n"
            f"    {server}\n"
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> "HAProxy":
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
        net.wait_listening(self.bind_ip, self.port, alive=lambda: self.process.poll() is None)
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
