"""ipop-lab: an emulated internet with real NATs in network namespaces on one machine.

``topology`` (what to build, from TOML), ``natrules`` (netfilter rule sets per NAT kind),
``netns`` (thin wrappers over ip/iptables/nft/sysctl), ``lab`` (the :class:`~ipop.tools.lab.lab.Lab`
that builds, runs processes in and tears down a topology) and ``main`` (the ``ipop-lab`` CLI).
"""
