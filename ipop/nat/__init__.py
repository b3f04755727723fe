"""NAT discovery and traversal: the NAT kind vocabulary (:mod:`ipop.nat.kinds`).

One home for what the node learns about the NATs in front of it and how it gets through them.
"""
