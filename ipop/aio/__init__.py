"""The only layer that touches sockets, the TAP, threads, signals and the real clock."""
