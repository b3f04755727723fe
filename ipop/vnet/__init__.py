"""Packets from and to the TAP: parse, ARP, vIP → node table, anti-spoofing."""
