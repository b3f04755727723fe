"""Runs of DATA datagrams sealed or opened in one call: the data path's native hot loop, and
its pure-Python twin (issue 16, first slice; DESIGN.md §8).

Measured first (``python -m ipop.tools.bench.dataplane_bench --count 50000``, 1,400-byte
packets, batch 64, Python 3.11, medians of 3 runs on this 2-core machine): the fast path's core
work was 2.5 µs per packet to seal (``NodeCore.seal_ip``) and 1.85 µs to open
(``NodeCore.receive_direct``); through the DataPlane with its checks and the TAP read, 4.5 and
2.35 µs. Of that, the AEAD itself is 0.55 µs (seal) and 0.63 µs (open); header and nonce
packing, the bytes concatenation and the ciphertext slice 0.15–0.2 µs; the three Python frames
per packet with keyword arguments (seal_ip -> seal_direct -> _seal; receive_direct ->
open_data -> rebind.heard) about 0.5 µs; the dict lookups keyed by NodeId (a dataclass whose
``__hash__`` is a Python call: ``is_linked`` twice, the peer table, the PMTU and shortcut
tables) 0.4–0.6 µs; the counters and the replay window 0.2–0.3 µs. So the crypto is a quarter
to a third, and the rest is per-packet Python bookkeeping that is the same for every packet
of a batch.

Design (the smallest module that removes most of it): a native object per key and
direction, :class:`BatchAead`, that seals a list of payloads with consecutive counters or
opens a *run* of datagrams under one receiver index in one call. It holds the key (an
OpenSSL EVP context, AES-256-GCM or ChaCha20-Poly1305, key schedule done once) and that
key's send counter; the replay window is handed in:

- the send counter is the BatchAead's own (``counter``; :class:`ipop.link.keys.Keypair`'s
  ``send_counter`` reads it): :meth:`BatchAead.seal_next` seals from it and advances it by
  the number sealed, :meth:`BatchAead.take` reserves counters for the per-packet path, both
  under the key's lock natively. One owner, so a counter never repeats whichever
  implementation, or thread (the lane's, :mod:`ipop.link.lane`), sealed. (``seal`` with an
  explicit counter is the pure operation the differential tests and the fuzzer compare);
- the replay window is the Keypair's (:func:`replay_window`: a
  :class:`ipop.link.replay.ReplayWindow`, or with the native backend its native twin
  ``_fastpath.Window``, which the lane's thread checks and marks too, under its lock);
  ``open`` checks, decrypts, and only then marks, as
  ``ReplayWindow.reject_reason`` / ``take`` define (invariant 3 of :mod:`ipop.link.layer`);
- every decision stays in Python: which keys are current, expiry by time, rekeys, roaming,
  which path, what a payload is (:meth:`ipop.link.layer.LinkLayer.seal_run` and
  ``open_run`` decide whether a batch may take this path at all, and fall back to the
  per-packet path otherwise). The native ``open`` stops at the first datagram that is not
  DATA under the index it was given, and reports per datagram either the plaintext or the
  drop reason (``expired_key`` past the message limit, ``too_old``, ``replay``,
  ``auth_failed``), the same strings the per-packet path counts;
- a rekey, key expiry or teardown drops the Keypair in Python, and its BatchAead goes with
  it: the native side never outlives or overrules the Python key state.

Result (same bench, DataPlane with its checks and the TAP read, medians of 3 runs of best of
5): TAP -> UDP 4.3 µs per packet one by one, 2.6 in runs with the twin, 2.3 in runs native;
UDP -> TAP 2.2, 1.9, 1.3. Alone, the native BatchAead seals or opens a 1,400-byte packet in
0.44 µs (the twin: 0.67 and 1.0), so native runs are bound by the AEAD; what remains per
packet is the TAP read, the packet checks and the loop around them, all Python by design.
A C extension (the aioquic model) rather than cffi: one call per run, and the window and
counters read and written in place without a conversion layer.

The two implementations: ``_fastpath.BatchAead`` (``ipop/link/_fastpath.c``, built by
``setup.py`` when a compiler and libcrypto's headers are there, optional) and
:class:`PyBatchAead` below, the definition, with the same wire bytes and the same verdicts
(``tests/unit/test_fastpath_diff.py`` feeds both the same datagrams). :data:`BACKEND` says
which one new keys get: the native one when it imports, unless the driver said otherwise
(:func:`use`; the daemon's data plane passes ``IPOP_FASTPATH=python|native|auto``). The data
plane seals and opens in runs with either (:mod:`ipop.aio.dataplane`): the runs alone, in
Python, took most of the per-packet bookkeeping away (measured above), so the pure path
gets them too, and the two differ in nothing but the class that does the crypto loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from cryptography.exceptions import InvalidTag

from ipop.errors import ConfigError
from ipop.link.crypto import CIPHER_IDS, Aead, nonce_for
from ipop.link.replay import ReplayWindow, Window
from ipop.wire.header import DATA_HEADER, DATA_HEADER_BYTES, DATA_MIN_BYTES, TYPE_DATA

__all__ = [
    "BACKEND",
    "BatchAead",
    "Coalesce",
    "FinishFrame",
    "PyBatchAead",
    "SplitTcp",
    "batch_aead",
    "native_class",
    "native_coalesce",
    "native_offload",
    "use",
]

# The reason a datagram past the message limit is dropped (LINK_DROP_REASONS).
REASON_EXPIRED: Final = "expired_key"
REASON_AUTH: Final = "auth_failed"

_U64_MAX = 2**64 - 1
_HDR_PACK = DATA_HEADER.pack
_HDR_UNPACK_FROM = DATA_HEADER.unpack_from

Payload = bytes | bytearray | memoryview


class BatchAead(Protocol):
    """What both implementations offer (one direction's key)."""

    def seal(
        self,
        index: int,
        counter: int,
        payloads: Sequence[Payload],
        head: bytes = b"",
        strip: bytes = b"",
    ) -> list[bytes]:
        """DATA datagrams for ``payloads`` under the peer's ``index``, with counters
        ``counter``, ``counter + 1``, ...: the caller advances its counter by the number
        returned. Each plaintext is ``head`` and what follows ``strip`` in the payload; with
        ``strip``, the run stops at the first payload that does not start with it or has
        nothing after it (a relay's forwards to one target re-sealed for it, no copy)."""
        ...

    @property
    def counter(self) -> int:
        """The next send counter: this key's own, which :meth:`take` and :meth:`seal_next`
        advance (the one owner, whoever seals: Python, or the lane's thread)."""
        ...

    def take(self, n: int) -> int:
        """Reserve ``n`` send counters; returns the first."""
        ...

    def seal_next(
        self, index: int, payloads: Sequence[Payload], head: bytes = b"", strip: bytes = b""
    ) -> list[bytes]:
        """:meth:`seal` from :attr:`counter`, which advances by the number sealed, both under
        the key's lock (natively), so no other sealer can take those counters meanwhile."""
        ...

    def open(
        self,
        datagrams: list[bytes],
        start: int,
        index: int,
        limit: int,
        window: Window,
        head: bytes = b"",
    ) -> tuple[int, list[bytes | str]]:
        """Open ``datagrams[start:]`` while each is ``head`` then DATA under our ``index``:
        ``(stop, results)`` with ``stop`` the first datagram not taken, and per datagram
        taken its plaintext or its drop reason. Counters at or past ``limit`` are
        ``expired_key``; ``window`` is checked before and marked after each tag verified.
        (``head``: the datagrams inside a run of one origin's RELAY_DELIVER messages.)"""
        ...


class PyBatchAead:
    """The pure-Python :class:`BatchAead`: the definition the native one is held equal to."""

    __slots__ = ("_aead", "counter")

    def __init__(self, cipher_id: int, key: bytes) -> None:
        names = {v: k for k, v in CIPHER_IDS.items()}
        if cipher_id not in names:
            raise ValueError("unknown cipher id")
        self._aead = Aead(names[cipher_id], key).primitive
        self.counter = 0

    def take(self, n: int) -> int:
        first = self.counter
        if n < 0 or first + n > _U64_MAX:
            raise ValueError("counter out of range")
        self.counter = first + n
        return first

    def seal_next(
        self, index: int, payloads: Sequence[Payload], head: bytes = b"", strip: bytes = b""
    ) -> list[bytes]:
        out = self.seal(index, self.counter, payloads, head, strip)
        self.counter += len(out)
        return out

    def seal(
        self,
        index: int,
        counter: int,
        payloads: Sequence[Payload],
        head: bytes = b"",
        strip: bytes = b"",
    ) -> list[bytes]:
        out = []
        encrypt = self._aead.encrypt
        cut = len(strip)
        for i, payload in enumerate(payloads):
            if cut and (len(payload) <= cut or payload[:cut] != strip):
                break
            header = _HDR_PACK(TYPE_DATA, index, counter + i)
            body = head + payload[cut:] if head or cut else payload
            out.append(header + encrypt(nonce_for(counter + i), body, header))
        return out

    def open(
        self,
        datagrams: list[bytes],
        start: int,
        index: int,
        limit: int,
        window: Window,
        head: bytes = b"",
    ) -> tuple[int, list[bytes | str]]:
        results: list[bytes | str] = []
        decrypt = self._aead.decrypt
        i, n = min(max(start, 0), len(datagrams)), len(datagrams)
        skip = len(head)
        while i < n:
            data = datagrams[i]
            if type(data) is not bytes or (skip and not data.startswith(head)):
                break
            data = data[skip:] if skip else data
            if len(data) < DATA_MIN_BYTES or data[0] != TYPE_DATA:
                break
            _, got_index, counter = _HDR_UNPACK_FROM(data)
            if got_index != index:
                break
            i += 1
            if counter >= limit:
                results.append(REASON_EXPIRED)
                continue
            reason = window.reject_reason(counter)
            if reason is not None:
                results.append(reason)
                continue
            try:
                payload = decrypt(
                    nonce_for(counter), data[DATA_HEADER_BYTES:], data[:DATA_HEADER_BYTES]
                )
            except InvalidTag:
                results.append(REASON_AUTH)
                continue
            window.take(counter)  # (checked above: taken)
            results.append(payload)
        return i, results


def native_class() -> Callable[[int, bytes], BatchAead] | None:
    """The native implementation, None if it was not built (or does not load)."""
    try:
        from ipop.link import _fastpath  # type: ignore[attr-defined]
    except ImportError:
        return None
    cls: Callable[[int, bytes], BatchAead] = _fastpath.BatchAead
    return cls


_native = native_class()
_CLASS: Callable[[int, bytes], BatchAead] = PyBatchAead if _native is None else _native
# Which implementation new keys get: "native" when it was built, else "python" (see use()).
BACKEND = "python" if _native is None else "native"


def use(choice: str) -> str:
    """Pick the implementation for keys made from now on: ``"auto"`` (native if built),
    ``"python"``, or ``"native"``; returns :data:`BACKEND`. Anything else, or ``"native"``
    without the module, is a ConfigError naming the fix (ipopd prints it and exits 2). The
    driver calls it with ``IPOP_FASTPATH`` (a core reads no environment)."""
    global _CLASS, BACKEND
    if choice not in ("auto", "python", "native"):
        raise ConfigError(
            "IPOP_FASTPATH", f"{choice!r} is not a data path", "set it to auto, python or native"
        )
    if choice == "native" and _native is None:
        raise ConfigError(
            "IPOP_FASTPATH",
            "native, but ipop.link._fastpath was not built",
            "install gcc, python3-dev and libssl-dev and reinstall ipop, or use auto",
        )
    if choice == "python" or _native is None:
        _CLASS, BACKEND = PyBatchAead, "python"
    else:
        _CLASS, BACKEND = _native, "native"
    return BACKEND


# A batch's TCP segments coalesced for the TAP: (virtio header, packet) pairs to write.
Coalesce = Callable[[Sequence[Payload]], list[tuple[bytes, Payload]]]


def native_coalesce() -> Coalesce | None:
    """The native twin of :func:`ipop.vnet.gro.coalesce` (the definition: same pairs, the
    packets that stay apart returned as the very objects given), when :data:`BACKEND` is
    native; None: the caller uses the definition. Here because the native module is this
    layer's; coalescing is the data plane's (ipop.aio.dataplane picks one when it starts).
    Measured (``python -m ipop.tools.bench.gro_bench``): see that module."""
    mod = _native_module()
    if mod is None:
        return None
    fn: Coalesce = mod.coalesce
    return fn


def _native_module() -> Any:
    """The native module when :data:`BACKEND` is native, else None (the callers of the
    ``native_*`` functions then use the pure-Python definitions)."""
    if _CLASS is PyBatchAead or _native is None:
        return None
    from ipop.link import _fastpath  # type: ignore[attr-defined]

    return _fastpath


# A TAP frame's TCP batch cut into segments, or the drop reason (ipop.vnet.offload.split_tcp:
# frame, IP bytes per segment at most, data bytes per segment (0: any), what replaces the
# Ethernet header); and a frame's begun TCP/UDP checksum finished in place, or the drop reason
# (ipop.vnet.offload.finish_frame).
SplitTcp = Callable[..., "list[bytearray] | str"]
FinishFrame = Callable[[bytearray | memoryview], "str | None"]


def native_offload() -> tuple[SplitTcp, FinishFrame] | None:
    """The native twins of :func:`ipop.vnet.offload.split_tcp` and
    :func:`~ipop.vnet.offload.finish_frame` (the definitions: the same segments, fields and
    verdicts; reasons as the strings the definitions' ``CsumDrop`` values are), when
    :data:`BACKEND` is native; None: the caller uses the definitions. As
    :func:`native_coalesce`, for the data plane."""
    mod = _native_module()
    if mod is None:
        return None
    split: SplitTcp = mod.split_tcp
    finish: FinishFrame = mod.finish_frame
    return split, finish


def replay_window(width: int) -> Window:
    """A key's replay window for the backend :data:`BACKEND`: the native one (which the TAP
    lane's thread may share, :mod:`ipop.link.lane`) or :class:`ReplayWindow`."""
    mod = _native_module()
    if mod is None:
        return ReplayWindow(width)
    window: Window = mod.Window(width)
    return window


def batch_aead(cipher: str, key: bytes) -> BatchAead:
    """One direction's :class:`BatchAead` for a session key (the backend :data:`BACKEND`)."""
    return _CLASS(CIPHER_IDS[cipher], key)
