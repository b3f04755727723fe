"""The ipop virtual network running on a lab: one CA, a bundle and a config per host, ipopd.

:class:`IpopNet` owns what ipop puts on a :class:`tools.lab.lab.Lab`: ``prepare()`` makes the
network CA and every host's bundle with ``ipop-config`` (in-process, the same code as the CLI)
and writes each host's node TOML into the lab's per-host directory; ``start(host)`` runs a real
``ipopd`` in the host's namespace (its PID recorded by the lab, so ``down`` always ends it) and
points the namespace's resolver at the virtual gateway, where ipopd answers DNS for ``*.ipop``;
``wait_ready`` polls the host's control socket until the daemon holds a virtual IP.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from ipop.aio.control import ControlClient, ControlError
from ipop.status import Status
from tools import config_cli
from tools.lab.lab import Host, Lab

__all__ = ["DEFAULT_SUBNET", "IPOP_PORT", "IpopNet", "NotReady"]

IPOP_PORT = 5800
DEFAULT_SUBNET = IPv4Network("100.64.0.0/10")
POLL_S = 0.05


class NotReady(RuntimeError):
    """A daemon did not get its virtual IP in time (the message names the host and its log)."""


@dataclass(frozen=True, slots=True)
class HostFiles:
    config: Path
    bundle: Path
    socket: Path
    log: Path
    state_dir: Path


class IpopNet:
    def __init__(
        self,
        lab: Lab,
        *,
        network: str = "labnet",
        subnet: IPv4Network = DEFAULT_SUBNET,
        log_level: str = "info",
    ) -> None:
        self.lab = lab
        self.network = network
        self.subnet = subnet
        self.gateway = IPv4Address(int(subnet.network_address) + 1)
        self.log_level = log_level
        self.started_at: dict[str, float] = {}
        self._home = lab.workdir / "ca"

    def files(self, host: Host | str) -> HostFiles:
        d = self.lab.host_dir(host)
        return HostFiles(
            config=d / "node.toml",
            bundle=d / "bundle.toml",
            socket=d / "ipopd.sock",
            log=d / "ipopd.log",
            state_dir=d / "state",
        )

    def _config_cli(self, argv: list[str]) -> None:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = config_cli.main(["--home", str(self._home), *argv])
        if code != 0:
            raise RuntimeError(f"ipop-config {' '.join(argv)} failed: {err.getvalue().strip()}")

    def prepare(self, *, addressing: dict[str, str] | None = None) -> None:
        """CA, bundles and node configs for every host (``addressing``: host → "dhcp")."""
        boot = self.lab.bootstrap
        self._config_cli(
            [
                "init",
                self.network,
                "--subnet",
                str(self.subnet),
                "--bootstrap",
                f"{boot.ip}:{IPOP_PORT}",
            ]
        )
        for h in self.lab.hosts:
            f = self.files(h)
            self._config_cli(
                ["node", self.network, h.name, "--hostname", h.name, "--out", str(f.bundle)]
            )
            mode = (addressing or {}).get(h.name, "static")
            f.config.write_text(
                "\n".join(
                    [
                        f'bundle = "{f.bundle}"',
                        f'state_dir = "{f.state_dir}"',
                        f'listen = "0.0.0.0:{IPOP_PORT}"',
                        f'log_level = "{self.log_level}"',
                        "[tap]",
                        'name = "ipop0"',
                        f'addressing = "{mode}"',
                        "[control]",
                        f'socket = "{f.socket}"',
                        "",
                    ]
                )
            )

    def start(self, host: Host | str) -> None:
        h = self.lab.host(host)
        f = self.files(h)
        self.lab.write_resolv_conf(h, self.gateway)
        self.started_at[h.name] = time.monotonic()
        self.lab.spawn(
            h, [sys.executable, "-m", "tools.ipopd", "--config", str(f.config)], log_path=f.log
        )

    def start_all(self) -> None:
        # The bootstrap node first: the others' first handshake then finds it listening.
        order = sorted(self.lab.hosts, key=lambda h: not h.is_bootstrap)
        for h in order:
            self.start(h)

    def stop(self, host: Host | str) -> None:
        self.lab.stop(host)

    def client(self, host: Host | str) -> ControlClient:
        return ControlClient(self.files(host).socket)

    def status(self, host: Host | str) -> Status:
        return self.client(host).status()

    def wait_all_ready(
        self, hosts: list[Host], *, timeout_s: float
    ) -> dict[str, tuple[Status, float]]:
        """Poll every host at once; host → (status, monotonic time it was first seen ready)."""
        deadline = time.monotonic() + timeout_s
        done: dict[str, tuple[Status, float]] = {}
        while len(done) < len(hosts) and time.monotonic() < deadline:
            for h in hosts:
                if h.name in done:
                    continue
                try:
                    st = self.status(h)
                except ControlError:
                    continue
                if st.self_.vip is not None:
                    done[h.name] = (st, time.monotonic())
            time.sleep(POLL_S / 2)
        for h in hosts:
            if h.name not in done:
                self.wait_ready(h, timeout_s=0.0)  # raises NotReady with the log tail
        return done

    def wait_ready(self, host: Host | str, *, timeout_s: float) -> Status:
        """Poll until ``host``'s daemon holds a virtual IP; :class:`NotReady` after the deadline."""
        h = self.lab.host(host)
        deadline = time.monotonic() + timeout_s
        last = "no answer on the control socket"
        while True:
            try:
                st = self.status(h)
                if st.self_.vip is not None:
                    return st
                last = "joined, no virtual IP yet" if st.self_.routable else "not routable yet"
            except ControlError as exc:
                last = str(exc)
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)
        log = self.files(h).log
        tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
        raise NotReady(f"{h.name}: {last} after {timeout_s:.0f} s; log {log}: " + " | ".join(tail))
