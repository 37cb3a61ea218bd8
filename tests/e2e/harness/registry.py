"""A CNCF distribution registry (Debian's `docker-registry`, `docker-registry serve CONFIG`) on a
free loopback port, plain HTTP, storing blobs in a scratch directory. Ready when `GET /v2/`
answers 200."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import net

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"


class Registry:
    def __init__(self, *, host: str = "127.0.0.1", workdir: Path | None = None) -> None:
        self.host = host
        self.port = net.free_port(host)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="trustip-registry-"))
        self.storage = self.workdir / "storage"
        self.config_path = self.workdir / "config.yml"
        self.log_path = self.workdir / "registry.log"
        self.process: subprocess.Popen | None = None
        self.config_path.write_text(
            "version: 0.1\n"
            "log:\n"
            "  level: info\n"
            "storage:\n"
            "  filesystem:\n"
            f"    rootdirectory: {self.storage}\n"
            "  delete:\n"
            "    enabled: true\n"
            "http:\n"
            f"  addr: {host}:{self.port}\n"
        )

    @property
    def address(self) -> str:
        """host:port, as in an image reference (`127.0.0.1:5000/trustip:tag`)."""
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> "Registry":
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not answer /v2/ within {timeout}s:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        net.terminate(self.process)
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> "Registry":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
