"""ipopd: the node daemon's composition root (config + bundle → Daemon + local services + control).

Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 2 for a bad config or bundle (one line on
stderr naming the key and the fix), 1 when the daemon failed while running.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING

from ipop.aio.commands import DaemonControl
from ipop.aio.control import ControlServer
from ipop.aio.daemon import Daemon, DaemonSettings
from ipop.aio.local import ServedSide
from ipop.aio.sysdns import system_dns_for
from ipop.bundle import Bundle, load_bundle
from ipop.config import MetricsConfig, NodeConfig, WebConfig, load_config
from ipop.dhcp_dns.dhcp import DhcpServer
from ipop.dhcp_dns.dns import DnsResolver, Zone
from ipop.dhcp_dns.services import TapServices, TapServicesRunner
from ipop.errors import ConfigError
from ipop.promtext import CONTENT_TYPE
from ipop.report import prefixed
from ipop.status import DnsStatus
from ipop.tools import imports_done

if TYPE_CHECKING:
    from ipop.aio.localhttp import LocalHttpServer

log = logging.getLogger("ipopd")

_LEVELS = {
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}


class _KeyValueFormatter(logging.Formatter):
    """One line per record: ``ts=… level=… logger=… <message>``; the message holds key=value."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
        line += f"logger={record.name} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class NodeServices:
    """DHCP and DNS of the virtual gateway on this node's TAP (the daemon answers ARP itself).

    The only DHCP client on a node's TAP is its own kernel: it gets the DHT-allocated address
    once the daemon has it (``address_assigned``); until then its DISCOVERs go unanswered and
    are retransmitted, as RFC 2131 clients do. ``others``: the daemon's other networks, whose
    names this gateway answers too (:class:`ipop.dhcp_dns.dns.Zone`), each in its own network.
    """

    def __init__(
        self, daemon: ServedSide, cfg: NodeConfig, others: Sequence[ServedSide] = ()
    ) -> None:
        self.daemon = daemon
        self.dhcp_mode = cfg.tap.addressing == "dhcp"
        gateway = daemon.gateway
        upstream = cfg.dns.upstream[0] if cfg.dns.upstream else None
        self.services = TapServices(
            gateway_ip=gateway,
            subnet=daemon.subnet,
            dhcp=DhcpServer(
                gateway,
                daemon.subnet,
                dns_ip=gateway,
                domain=daemon.suffix,
                mtu=daemon.tap.mtu if daemon.tap is not None else None,
                lease_s=int(cfg.dht.lease_s),
            )
            if self.dhcp_mode
            else None,
            dns=DnsResolver(
                daemon.subnet,
                suffix=daemon.suffix,
                other_zones=[Zone(o.suffix, o.subnet) for o in others],
                upstream=upstream is not None,
            )
            if cfg.dns.enabled
            else None,
        )
        if self.services.dns is not None:
            for zone in self.services.dns.shadowed:
                log.warning(
                    "event=dns_suffix_shared gateway=%s suffix=%s subnet=%s: names under it "
                    "are this network's here; the other network's are answered at its own "
                    "gateway (give the networks distinct suffixes to resolve both anywhere)",
                    gateway,
                    zone.suffix,
                    zone.subnet,
                )
        self.runner = TapServicesRunner(
            self.services,
            daemon.write_frame,
            daemon.dns_lookup,
            (upstream.host, upstream.port) if upstream is not None else None,
            other_lookups=[o.dns_lookup for o in others],
        )

    def feed(self, frame: bytes, *, now: float) -> bool:
        return self.runner.feed(frame, now=now)

    def address_assigned(self, vip: IPv4Address) -> None:
        dhcp = self.services.dhcp
        tap = self.daemon.tap
        if dhcp is not None and tap is not None:
            dhcp.assign(tap.mac, vip)

    def dns_status(self) -> DnsStatus | None:
        return self.services.dns_status()

    def drops(self) -> dict[str, int]:
        s = self.services
        # dns_* reasons are in dns_status() (and reach the status drops as dns.*).
        out = {f"tap.{k}": v for k, v in s.drops.items() if not k.startswith("dns_")}
        if s.dhcp is not None:
            out.update({f"dhcp.{k}": v for k, v in s.dhcp.drops.items()})
        return out

    async def close(self) -> None:
        await self.runner.close()


# The HTML page runs no script and loads nothing from elsewhere; its inline style is all.
WEB_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'",
    "Referrer-Policy": "no-referrer",
}


def http_servers(daemon: Daemon, metrics: MetricsConfig, web: WebConfig) -> list[LocalHttpServer]:
    """The local HTTP listeners the config asks for: ``[metrics]`` (``/metrics``) and ``[web]``
    (the page, ``/map.svg``, ``/status.json`` and ``/metrics``), each counting its own drops
    under its own layer."""
    servers: list[LocalHttpServer] = []
    if metrics.listen is None and web.listen is None:
        return servers
    # Imported only when a listener is configured: the page and the map are ~5 ms of a
    # daemon's import CPU that a node without [web] never needs (issue 14's cold start).
    from ipop.aio.localhttp import LocalHttpServer, Page
    from ipop.overlaymap import render_map
    from ipop.webpage import render_page

    by_layer: dict[str, LocalHttpServer] = {}

    def metrics_page() -> str:
        mine = {
            k: v for layer, srv in by_layer.items() for k, v in prefixed(layer, srv.drops).items()
        }
        return daemon.metrics_text(max_peers=metrics.max_peers, drops=mine)

    if metrics.listen is not None:
        by_layer["metrics"] = LocalHttpServer(
            metrics.listen, {"/metrics": Page(CONTENT_TYPE, metrics_page)}
        )
        servers.append(by_layer["metrics"])
    if web.listen is not None:
        pages = {
            "/": Page(
                "text/html; charset=utf-8",
                lambda: render_page(
                    daemon.status(), refresh_s=web.refresh_s, max_peers=web.max_peers
                ),
                WEB_PAGE_HEADERS,
            ),
            "/map.svg": Page(
                "image/svg+xml; charset=utf-8",
                lambda: render_map([daemon.status()], max_peers=web.max_peers),
                WEB_PAGE_HEADERS,
            ),
            "/status.json": Page(
                "application/json; charset=utf-8",
                lambda: daemon.status().to_json(indent=2) + "\n",
            ),
            "/metrics": Page(CONTENT_TYPE, metrics_page),
        }
        by_layer["web"] = LocalHttpServer(web.listen, pages, key="web.listen", check_host=True)
        servers.append(by_layer["web"])
    return servers


async def serve(
    daemon: Daemon,
    control_socket: Path,
    metrics: MetricsConfig,
    web: WebConfig | None = None,
) -> None:
    """Run ``daemon`` with its control socket, and its metrics and web page if configured,
    until it stops (shared with ipop-router)."""
    control = ControlServer(control_socket, DaemonControl(daemon))
    servers = http_servers(daemon, metrics, web or WebConfig())
    try:
        for server in servers:
            await server.start()
        await control.start()
        await daemon.run()
    finally:
        await control.close()
        for server in servers:
            await server.close()


# kademlia's modules log under these names; its filters must sit on each (a logger's filters
# do not see its children's records).
KADEMLIA_LOGGERS = ("kademlia.protocol", "kademlia.network", "kademlia.crawling")


class QuietKademlia(logging.Filter):
    """kademlia's warnings are debug lines here.

    They are expected misses: "no response from <id>:0" is a contact that left or has not
    finished joining (a start of 20 daemons logged 56-100 of them), "no known neighbors" a
    lookup before the table filled. The DHT service counts and reports its own failures.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).getEffectiveLevel() <= logging.DEBUG
        return True


def setup_logging(level: str) -> None:
    """Structured key=value lines on stderr at ``level`` (shared with ipop-router)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_KeyValueFormatter())
    logging.basicConfig(level=_LEVELS[level], handlers=[handler], force=True)
    # kademlia logs every RPC at info: shown only at debug.
    logging.getLogger("kademlia").setLevel(logging.NOTSET if level == "debug" else logging.WARNING)
    for name in KADEMLIA_LOGGERS:
        lg = logging.getLogger(name)
        if not any(isinstance(f, QuietKademlia) for f in lg.filters):
            lg.addFilter(QuietKademlia())


def run_daemon(
    prog: str,
    daemon: Daemon,
    control_socket: Path,
    metrics: MetricsConfig | None = None,
    web: WebConfig | None = None,
) -> int:
    """Serve until stopped; the exit code: 0 clean stop, 2 bad config found late, 1 failure."""
    try:
        asyncio.run(serve(daemon, control_socket, metrics or MetricsConfig(), web))
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        logging.getLogger(prog).exception("event=failed error=%s", exc)
        return 1
    return 0


def load_valid_bundle(path: Path) -> Bundle:
    """The bundle at ``path``, valid now; ConfigError naming the problem otherwise."""
    bundle = load_bundle(path)
    problems = bundle.problems(now=time.time())
    if problems:
        key, problem, fix = problems[0]
        raise ConfigError(key, f"{problem} in {path}", fix)
    return bundle


def load_networks(cfg: NodeConfig) -> list[tuple[Bundle, str]]:
    """The ``[[network]]`` tables' bundles (valid now) and TAP names; the daemon checks that
    they share the first bundle's overlay and key."""
    out = []
    for i, net in enumerate(cfg.networks):
        try:
            out.append((load_valid_bundle(net.bundle), net.tap_name))
        except ConfigError as exc:
            raise ConfigError(
                f"network[{i}].bundle", f"{exc.key}: {exc.problem}", exc.fix
            ) from None
    return out


def config_arg(prog: str, description: str, config_help: str, argv: list[str] | None) -> str:
    """The ``--config FILE`` a daemon takes, and nothing else (shared with ipop-router).

    The command line every service manager and the lab give, ``--config FILE``, is taken as
    argparse takes it; anything else (``--help``, a typo, ``--config=FILE``) goes to argparse.
    Why not always argparse: importing it and building a parser cost ~22 M instructions (~3%
    of a daemon's CPU to ``event=started``; its help formatter imports shutil, bz2 and lzma),
    and 31 daemons starting at once on two cores wait on each other's CPU (issue 14).
    """
    args = sys.argv[1:] if argv is None else argv
    # A value starting with "-" is an option to argparse (or a negative number): its call.
    if len(args) == 2 and args[0] == "--config" and not args[1].startswith("-"):
        return args[1]
    import argparse

    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--config", required=True, help=config_help)
    config: str = ap.parse_args(args).config
    return config


def main(argv: list[str] | None = None) -> int:
    config = config_arg(
        "ipopd", "the ipop node daemon", "node TOML (deploy/ipop.example.toml)", argv
    )
    imports_done()  # keep what they compiled for the next start; collect garbage from here
    try:
        cfg = load_config(config)
        bundle = load_valid_bundle(cfg.bundle)
        networks = load_networks(cfg)
        settings = DaemonSettings.from_config(cfg, bundle_hostname=bundle.hostname)
        system_dns = system_dns_for(cfg.dns.system, dns_enabled=cfg.dns.enabled)
        daemon = Daemon(
            bundle,
            settings,
            # Each network's gateway also answers the daemon's other networks' names.
            services=lambda d: NodeServices(
                d, cfg, [o for o in daemon.served_sides() if o is not d]
            ),
            system_dns=system_dns,
            networks=networks,
        )
    except ConfigError as exc:
        print(f"ipopd: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.log_level)
    return run_daemon("ipopd", daemon, cfg.control.socket, cfg.metrics, cfg.web)


if __name__ == "__main__":
    sys.exit(main())
