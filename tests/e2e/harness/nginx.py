"""Debian's nginx (`apt-get install nginx`, built `--with-http_realip_module`) as a reference for
the client-IP comparison: one process in the foreground (`daemon off; master_process off;`) on
loopback, its pid file, error log and temp directories in a work directory of its own, one
`server` per realip setting. Each server answers every request with 200 and the body
`$remote_addr\\n`: the client address nginx decided after its realip module ran (the TCP peer when
realip did not apply). `$realip_remote_addr` (the peer before realip) goes in a response header,
`x-peer`, so a test can tell "realip kept the peer" from "realip chose this address"."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import net

NGINX_BIN = shutil.which("nginx") or "/usr/sbin/nginx"


@dataclass
class RealIp:
    """One realip setting: `set_real_ip_from` (the peers whose header nginx believes),
    `real_ip_header` (X-Forwarded-For, or a one-address header such as CF-Connecting-IP) and
    `real_ip_recursive` (on: walk X-Forwarded-For from the right over trusted addresses; off:
    take its rightmost element)."""

    name: str
    set_real_ip_from: list[str]
    real_ip_header: str = "X-Forwarded-For"
    real_ip_recursive: bool = False
    port: int = field(default=0)


class Nginx:
    """`start()` checks the generated config with `nginx -t`, runs nginx and waits until every
    server listens on 127.0.0.1; `stop()` ends it (SIGTERM: nginx's fast shutdown);
    `port(name)` is a setting's port."""

    def __init__(self, settings: list[RealIp], *, workdir: Path | None = None) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="trustip-nginx-"))
        self.config_path = self.workdir / "nginx.conf"
        self.error_log = self.workdir / "error.log"
        self.output_path = self.workdir / "nginx.out"
        self.settings = {setting.name: setting for setting in settings}
        for setting in settings:
            if not setting.port:
                setting.port = net.free_port()
        self.config_path.write_text(self.config())
        self.process: subprocess.Popen | None = None

    def config(self) -> str:
        temp = self.workdir / "temp"
        temp.mkdir(exist_ok=True)
        servers = []
        for setting in self.settings.values():
            trusted = "".join(f"        set_real_ip_from {cidr};\n" for cidr in setting.set_real_ip_from)
            servers.append(
                f"    server {{  # {setting.name}\n"
                f"        listen 127.0.0.1:{setting.port};\n"
                f"{trusted}"
                f"        real_ip_header {setting.real_ip_header};\n"
                f"        real_ip_recursive {'on' if setting.real_ip_recursive else 'off'};\n"
                "        add_header x-peer $realip_remote_addr always;\n"
                '        return 200 "$remote_addr\\n";\n'
                "    }\n"
            )
        return (
            "daemon off;\n"
            "master_process off;\n"
            f"pid {self.workdir / 'nginx.pid'};\n"
            f"error_log {self.error_log} info;\n"
            "events { worker_connections 64; }\n"
            "http {\n"
            "    access_log off;\n"
            "    default_type text/plain;\n"
            f"    client_body_temp_path {temp / 'body'};\n"
            f"    proxy_temp_path {temp / 'proxy'};\n"
            f"    fastcgi_temp_path {temp / 'fastcgi'};\n"
            f"    uwsgi_temp_path {temp / 'uwsgi'};\n"
            f"    scgi_temp_path {temp / 'scgi'};\n"
            + "".join(servers)
            + "}\n"
        )

    def _command(self, *extra: str) -> list[str]:
        # -p: the prefix for relative paths; -e: the error log before the config is read
        # (Debian's built-in one is /var/log/nginx/error.log).
        return [NGINX_BIN, "-p", str(self.workdir), "-e", str(self.error_log), "-c", str(self.config_path), *extra]

    def start(self) -> "Nginx":
        if not Path(NGINX_BIN).is_file():
            raise RuntimeError(f"{NGINX_BIN} does not exist: install Debian's nginx (scripts/setup does, as root)")
        check = subprocess.run(self._command("-t"), capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx refused its config:\n{check.stdout}{check.stderr}\n{self.config()}")
        self._out = open(self.output_path, "wb")
        self.process = subprocess.Popen(
            self._command(), stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        for setting in self.settings.values():
            net.wait_listening("127.0.0.1", setting.port, alive=lambda: self.process.poll() is None)
        return self

    def stop(self) -> None:
        net.terminate(self.process)
        if hasattr(self, "_out"):
            self._out.close()

    def port(self, name: str) -> int:
        return self.settings[name].port

    def version(self) -> str:
        """`nginx -v`'s answer, e.g. "nginx/1.22.1"."""
        out = subprocess.run([NGINX_BIN, "-v"], capture_output=True, text=True)
        return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")

    def output_text(self) -> str:
        parts = []
        for path in (self.error_log, self.output_path):
            try:
                parts.append(f"--- {path} ---\n{path.read_text(errors='replace')}")
            except OSError:
                pass
        return "\n".join(parts)
