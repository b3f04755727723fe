"""NAT discovery and traversal: what a node learns about the NATs in front of it, and how it
gets through them.

- :mod:`ipop.nat.kinds`: the one vocabulary of NAT kinds (:class:`~ipop.nat.kinds.NatKind`).
- :mod:`ipop.nat.stun`: the sans-IO STUN agent (server, CHANGE-REQUEST, client transactions)
  and the classification of mapping and filtering behaviour into a kind.
- :mod:`ipop.nat.netcheck`: the ``ipop netcheck`` procedure and its JSON document.
- :mod:`ipop.nat.portguess`: port guessing toward a symmetric NAT.
"""
