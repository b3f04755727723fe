"""Router mode: the LAN side of a cluster (DHCP, proxy ARP, per-host leases and names)."""
