"""ipop-router: router mode's composition root (config + bundle → Daemon + its LAN + control).

``ipop-router --config FILE``: FILE is a node config with a ``[router]`` section
(``deploy/router.example.toml``). Exit codes as ipopd: 0 after a clean stop, 2 for a bad config
or bundle, 1 when the router failed while running.
"""

from __future__ import annotations

import sys

from ipop.aio.daemon import DaemonSettings
from ipop.errors import ConfigError
from ipop.router.config import check_authority, load_router_config
from ipop.router.daemon import router_daemon
from ipop.tools import imports_done
from ipop.tools.ipopd import config_arg, load_valid_bundle, run_daemon, setup_logging


def main(argv: list[str] | None = None) -> int:
    config = config_arg(
        "ipop-router", "ipop router mode", "router TOML (deploy/router.example.toml)", argv
    )
    imports_done()  # keep what they compiled for the next start; collect garbage from here
    try:
        cfg = load_router_config(config)
        node = cfg.node
        bundle = load_valid_bundle(node.bundle)
        check_authority(cfg.router, bundle.membership().node_cert)
        settings = DaemonSettings.from_config(node, bundle_hostname=bundle.hostname)
    except ConfigError as exc:
        print(f"ipop-router: {exc}", file=sys.stderr)
        return 2
    setup_logging(node.log_level)
    daemon = router_daemon(
        bundle,
        settings,
        cfg.router,
        dns_enabled=node.dns.enabled,
        upstream=node.dns.upstream[0] if node.dns.upstream else None,
    )
    return run_daemon("ipop-router", daemon, node.control.socket, node.metrics, node.web)


if __name__ == "__main__":
    sys.exit(main())
