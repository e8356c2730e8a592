"""A real image registry (the CNCF distribution registry, Debian's docker-registry) served
on 127.0.0.1 with a throwaway root: push an image, get its pinned `name@sha256:` reference."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CONFIG = """\
version: 0.1
log: {{level: error}}
storage:
  filesystem: {{rootdirectory: {root}}}
  delete: {{enabled: true}}
http: {{addr: "127.0.0.1:{port}"}}
"""


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def push(self, image: str, name: str, tag: str = "test") -> str:
        """Push local `image` as NAME:TAG; the pinned reference `HOST/NAME@sha256:...`.
        The pushed tag is then removed locally, so that using the reference pulls it."""
        target = f"{self.host}/{name}:{tag}"
        for argv in (["docker", "tag", image, target], ["docker", "push", "-q", target]):
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
        digests = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", target],
            capture_output=True,
            text=True,
            check=True,
        )
        prefix = f"{self.host}/{name}@"
        [pinned] = [d for d in json.loads(digests.stdout) if d.startswith(prefix)]
        for ref in (target, pinned):
            subprocess.run(["docker", "rmi", ref], capture_output=True)
        return str(pinned)

    def manifest_digest(self, name: str, tag: str) -> str:
        request = urllib.request.Request(
            f"http://{self.host}/v2/{name}/manifests/{tag}",
            method="HEAD",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return str(answer.headers["Docker-Content-Digest"])


def start(root: Path) -> Registry:
    """Serve a registry whose storage is `root`, on a free loopback port; wait until its
    API answers (bounded). Raises RuntimeError when docker-registry is not installed."""
    program = shutil.which("docker-registry")
    if program is None:
        raise RuntimeError("docker-registry is not installed (bash scripts/registry-up.sh)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (root / "data").mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(CONFIG.format(root=root / "data", port=port))
    log = (root / "registry.log").open("wb")
    process = subprocess.Popen([program, "serve", str(config)], stdout=log, stderr=log)
    registry = Registry(f"127.0.0.1:{port}", process)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {(root / 'registry.log').read_text()}")
        try:
            with urllib.request.urlopen(f"http://{registry.host}/v2/", timeout=1) as answer:
                if answer.status == 200:
                    return registry
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            registry.stop()
            raise RuntimeError(f"docker-registry on {registry.host} did not answer in 30 s")
        time.sleep(0.05)  # poll: the registry's API answering
