"""DHCP server and DNS resolver for the virtual network: pure handlers and thin adapters."""
