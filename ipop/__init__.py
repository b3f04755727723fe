"""ipop: IP over P2P, a serverless peer-to-peer virtual network (the core package).

Layers (DESIGN.md §2): ``wire`` → ``link`` → ``overlay`` → ``dht`` / ``vnet``; ``aio`` is the
only place that does real I/O; ``testing`` holds the simulator and fakes.
"""

__version__ = "0.1.0"
