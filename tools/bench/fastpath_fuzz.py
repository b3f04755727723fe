"""Fuzz the native open path, TCP coalescing and offload cutting against their pure-Python
twins, optionally under AddressSanitizer.

Each input becomes a run of datagrams (valid ones sealed with a fixed key, then cut, flipped,
re-indexed, re-typed or replaced by raw bytes as the input says), a replay window (width and
a pre-accepted counter) and a message limit; the native ``_fastpath.BatchAead.open`` and
:class:`ipop.link.fastpath.PyBatchAead` open it from every stop on, and must return the same
stop, results and window, and ``seal`` the same bytes. Both again with a head: the same
run with every datagram behind one (some behind a cut or changed one), and payloads sealed
behind a head in place of a stripped prefix (some without it), as a relay and a receiver of
relayed links call them. The same input also makes a batch of TCP segments (one flow's, with
headers, lengths and sequence numbers broken among them, and raw bytes) that the native
``coalesce`` and ``ipop.vnet.gro.coalesce`` must turn into the same pairs, and an Ethernet
frame (IPv4 TCP or UDP, lengths and bits broken) that the native ``split_tcp`` and
``finish_frame`` and ``ipop.vnet.offload``'s must cut and finish alike, and a route with frames
and datagrams (valid, broken, raw) that the native ``Lane`` and ``ipop.link.lane.PyLane`` must
send, deliver and hand up alike, with the same windows and counters; after the inputs, the
lane's thread itself runs over a fake TAP and UDP sockets on 127.0.0.1 (``lane_thread``: every
frame and datagram sent, delivered or handed up, none lost, the batons passed). A difference
raises (a crash for the fuzzer). With atheris installed (``pip install atheris==3.0.0``, not
a dependency) the inputs are coverage-guided: the twins are instrumented Python whose branches
are the C code's; without it, a seeded random loop makes them.

``--asan`` builds ``ipop/link/_fastpath.c`` again with ``-fsanitize=address,undefined`` (gcc)
into a temporary folder, grows a corpus coverage-guided on the plain build (libFuzzer's
coverage breaks with gcc's libasan preloaded), then replays that corpus and as many random
inputs in a child with gcc's libasan preloaded and ``PYTHONMALLOC=malloc`` (so that every
bytes object is a malloc block ASan guards): an out-of-bounds read or write, a use after free
or undefined behaviour in the C code aborts it.

Run (the lead's CI, or by hand; prints one summary line)::

    python -m ipop.tools.bench.fastpath_fuzz --runs 20000            # plain
    python -m ipop.tools.bench.fastpath_fuzz --asan --runs 20000     # under ASan + UBSan
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import random
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "ipop" / "link" / "_fastpath.c"
KEY = bytes(range(32))
INDEX = 0x0A0B0C0D
_MODULE = "ipop.link._fastpath"


class Input:
    """Reads choices from the fuzzer's bytes (atheris' provider, or a random stream)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def byte(self) -> int:
        if self._at >= len(self._data):
            return 0
        self._at += 1
        return self._data[self._at - 1]

    def number(self, n: int) -> int:
        return int.from_bytes(bytes(self.byte() for _ in range(n)), "big")

    def raw(self, n: int) -> bytes:
        return bytes(self.byte() for _ in range(n))

    def done(self) -> bool:
        return self._at >= len(self._data)


def one_input(data: bytes, native: Any, twin: Any, windows_of: Any) -> None:
    """One fuzz case: build the run ``data`` describes, compare both implementations.
    ``windows_of``: the native module's Window class and ReplayWindow (the twin's)."""
    inp = Input(data)
    width = 1 + inp.number(2) % 300
    limit = 1 + inp.number(2) * (1 + inp.byte())
    # The relay's and the receiver's forms: sealed behind a head in place of a stripped one,
    # opened behind a head (every datagram's below, some with the head cut or changed).
    head, strip = inp.raw(inp.byte() % 24), inp.raw(inp.byte() % 4)
    bodies = [(strip if inp.byte() % 4 else b"") + inp.raw(inp.byte() % 40) for _ in range(6)]
    counter = inp.number(2)
    if twin.seal(INDEX, counter, bodies, head, strip) != native.seal(
        INDEX, counter, bodies, head, strip
    ):
        raise AssertionError("seal with a head differs")
    datagrams: list[bytes] = []
    while not inp.done() and len(datagrams) < 64:
        op = inp.byte() % 8
        counter = inp.number(2) % 1200
        payload = inp.raw(inp.byte() % 48)
        d = twin.seal(INDEX, counter, [payload])[0]
        if d != native.seal(INDEX, counter, [payload])[0]:
            raise AssertionError(f"seal differs at counter {counter}")
        at = inp.byte()
        if op == 1:
            d = d[: at % (len(d) + 1)]
        elif op == 2:
            b = bytearray(d)
            b[at % len(b)] ^= 1 << (inp.byte() % 8)
            d = bytes(b)
        elif op == 3:
            d = d[:1] + inp.raw(4) + d[5:]
        elif op == 4:
            d = bytes([inp.byte()]) + d[1:]
        elif op == 5:
            d = inp.raw(at % 64)
        elif op == 6 and datagrams:
            d = datagrams[at % len(datagrams)]  # a replay
        datagrams.append(d)
    pre = inp.number(2) % 1200
    wrapped = [_behind(head, d) for d in datagrams]
    for run, behind in ((datagrams, b""), (wrapped, head)):
        windows = [windows_of[0](width), windows_of[1](width)]
        if pre % 3 == 0:
            for w in windows:
                w.take(pre)
        i = 0
        while i <= len(run):
            got_n = native.open(run, i, INDEX, limit, windows[0], behind)
            got_t = twin.open(run, i, INDEX, limit, windows[1], behind)
            if got_n != got_t:
                raise AssertionError(f"open differs from {i}: native {got_n!r}, twin {got_t!r}")
            if (windows[0].top, windows[0].seen) != (windows[1].top, windows[1].seen):
                raise AssertionError(f"windows differ after opening from {i}")
            i = got_n[0] + 1 if got_n[0] >= i else i + 1


def coalesce_input(data: bytes, native: Any, twin: Any) -> None:
    """One fuzz case of TCP receive coalescing: a batch ``data`` describes (one flow's
    segments, in sequence or not, with headers changed, lengths wrong, other flows and raw
    bytes among them, as bytes, bytearray or memoryview), coalesced by the native
    ``_fastpath.coalesce`` and by ``ipop.vnet.gro.coalesce``: the same pairs, byte for byte,
    and the packets left apart returned as the very objects given."""
    inp = Input(data)
    thl = 20 + 4 * (inp.byte() % 11)
    ip = bytearray(inp.raw(20))
    ip[0], ip[9] = 0x45, 6
    ip[6] = (ip[6] & 0x40) if inp.byte() % 4 else ip[6]  # DF alone, mostly
    ip[7] = 0 if inp.byte() % 4 else ip[7]
    tcp = bytearray(inp.raw(thl))
    tcp[12] = (thl // 4) << 4
    seq = inp.number(4)
    size = 1 + inp.number(2) % 1460
    packets: list[bytes | bytearray | memoryview] = []
    while not inp.done() and len(packets) < 80:
        op = inp.byte() % 12
        n = size if op < 6 else 1 + inp.number(2) % 1500
        head = bytearray(ip + tcp)
        head[24:28] = seq.to_bytes(4, "big")
        head[33] = 0x10 | (0x08 if op == 6 else 0)
        if op == 7:
            head[inp.byte() % len(head)] ^= 1 << (inp.byte() % 8)
        elif op == 8:
            head[24:28] = inp.raw(4)  # out of sequence
        pkt = bytearray(head + bytes(n))
        pkt[2:4] = (len(pkt) & 0xFFFF).to_bytes(2, "big")
        if op == 9:
            pkt[2:4] = inp.raw(2)  # a total length that lies
        elif op == 10:
            pkt = bytearray(inp.raw(inp.byte() % 80))
        elif op == 11:
            pkt = pkt[: inp.number(2) % (len(pkt) + 1)]
        if op not in (8, 10):
            seq = (seq + n) & 0xFFFFFFFF
        kind = inp.byte() % 3
        packets.append(bytes(pkt) if kind == 0 else pkt if kind == 1 else memoryview(bytes(pkt)))
    got_n, got_t = native(packets), twin(packets)
    if len(got_n) != len(got_t):
        raise AssertionError(f"coalesce: {len(got_n)} pairs native, {len(got_t)} twin")
    for k, ((vn, pn), (vt, pt)) in enumerate(zip(got_n, got_t, strict=True)):
        if bytes(vn) != bytes(vt) or bytes(pn) != bytes(pt):
            raise AssertionError(f"coalesce differs at pair {k}")
        if vt == bytes(10) and pn is not pt:
            raise AssertionError(f"coalesce: pair {k} is not the packet given")


def lane_input(data: bytes, native: Any) -> None:
    """One fuzz case of the lane (:mod:`ipop.link.lane`): a route (vIPs, limits, expiry from
    the input), then frames and datagrams the input describes (valid ones to and from the
    route, with bytes flipped, cut, re-addressed, or raw bytes), each given to the native
    ``Lane`` and to ``PyLane``: the same datagrams out, packets in, hand-ups, windows,
    counters and harvests."""
    from ipop.link.fastpath import PyBatchAead
    from ipop.link.lane import PyLane
    from ipop.link.replay import ReplayWindow

    inp = Input(data)
    lead = b"\x06\x02"
    width = 1 + inp.byte() % 64
    vips = tuple(0x64400000 + inp.byte() % 4 for _ in range(1 + inp.byte() % 3))
    me = 0x64400000 + inp.byte() % 4
    # The rekey threshold and message limit: small (the edge) or out of reach; a frame size.
    limits = tuple(1 + inp.byte() % 80 if inp.byte() % 4 == 0 else 1 << 40 for _ in range(2))
    limits += (40 + inp.number(2) % 1600,)
    eth = bytes(24) if inp.byte() % 4 else b""
    sides = []
    for lane, aead, window in (
        (native.Lane(-1, -1, -1, -1, lead), native.BatchAead, native.Window),
        (PyLane(lead), PyBatchAead, ReplayWindow),
    ):
        send, recv, w = aead(1, KEY), aead(1, KEY[::-1]), window(width)
        lane.set_local((me,), eth)
        lane.route(INDEX, vips, send, 7, "127.0.0.1", 9, limits[2], limits[0], 50.0, recv, w,
                   limits[1])  # fmt: skip
        sides.append((lane, send, w))
    peer = PyBatchAead(1, KEY[::-1])
    now = 0.0
    while not inp.done():
        now += inp.byte() / 256  # the route expires at 50 s
        kind = inp.byte() % 3
        # Mostly what a route takes (its peer's vIPs, ours), else any of five addresses.
        src = vips[0] if inp.byte() % 2 else 0x64400000 + inp.byte() % 5
        dst = (me if kind else vips[-1]) if inp.byte() % 2 else 0x64400000 + inp.byte() % 5
        packet = bytearray(20 + inp.number(2) % 1700)
        packet[0], packet[12:16], packet[16:20] = (
            0x45,
            src.to_bytes(4, "big"),
            dst.to_bytes(4, "big"),
        )
        if kind == 0:
            item = bytes(10) + bytes(12) + b"\x08\x00" + packet
        elif kind == 1:
            plain = lead + packet if inp.byte() % 4 else inp.raw(inp.byte() % 40)
            item = peer.seal(INDEX + inp.byte() % 2 * (inp.byte() % 3), inp.byte() % 80, [plain])[0]
        else:
            item = inp.raw(inp.byte())
        buf = bytearray(item)
        for _ in range(inp.byte() % 8 // 5):  # a flip in a quarter of them
            if buf:
                buf[inp.number(2) % len(buf)] ^= 1 << (inp.byte() % 8)
        if inp.byte() % 6 == 1:
            buf = buf[: inp.number(2) % (len(buf) + 1)]
        port = 9 if inp.byte() % 4 else 10
        if kind == 0 or (kind == 2 and inp.byte() % 2):
            got = [lane.process(bytes(buf), now) for lane, _, _ in sides]
        else:
            got = [lane.receive(bytes(buf), "127.0.0.1", port, now) for lane, _, _ in sides]
        if got[0] != got[1]:
            raise AssertionError(f"lane differs: native {got[0]!r}, twin {got[1]!r}")
        states = [(s.counter, w.top, bytes(w.seen)) for _, s, w in sides]
        if states[0] != states[1]:
            raise AssertionError(f"lane state differs: {states}")
    if sides[0][0].harvest() != sides[1][0].harvest():
        raise AssertionError("lane harvests differ")


LANE_FRAMES = 400  # frames (and as many datagrams) lane_thread feeds a running lane


def lane_thread(native: Any, seed: int, frames: int = LANE_FRAMES) -> int:
    """The lane's thread itself (what ``lane_input`` cannot reach: its reads, hand-ups, batons
    and stop), over a fake TAP (a SOCK_SEQPACKET pair) and UDP sockets on 127.0.0.1: random
    frames and datagrams, some for its route and valid, the rest not or broken, each either
    sent (frames: a datagram the peer opens to the frame's packet), delivered (datagrams:
    the packet on the TAP) or handed up whole; nothing lost, nothing else. Returns how many
    it fed. Bounded: ``frames`` of each, 10 s."""
    import select
    import socket
    import time

    from ipop.link.fastpath import PyBatchAead
    from ipop.link.replay import ReplayWindow

    rng = random.Random(seed)
    lead, me, vip = b"\x06\x02", 0x64400001, 0x64400002
    eth = bytes(10) + bytes(12) + b"\x08\x00"
    kernel, tap = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ups = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(2)]
    udp, peer = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    socks = [kernel, tap, udp, peer, *(s for pair in ups for s in pair)]
    try:
        for s in (udp, peer):
            s.bind(("127.0.0.1", 0))
        for s in (tap, udp, kernel):
            s.setblocking(False)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        lane = native.Lane(tap.fileno(), udp.fileno(), ups[0][1].fileno(), ups[1][1].fileno(), lead)
        send, recv, window = (
            native.BatchAead(1, KEY),
            native.BatchAead(1, KEY[::-1]),
            native.Window(64),
        )
        peer_port = peer.getsockname()[1]
        lane.route(INDEX, (vip,), send, 7, "127.0.0.1", peer_port, 1500, 1 << 40,
                   time.monotonic() + 60, recv, window, 1 << 40)  # fmt: skip
        lane.set_local((me,), eth)
        lane.start()
        opener, sealer = PyBatchAead(1, KEY), PyBatchAead(1, KEY[::-1])
        # The peer's window: each datagram the lane sends opens once (a replay would not).
        peer_window = ReplayWindow(4 * frames)
        seen = [0, 0, 0]  # sent to the peer, written to the TAP, handed up or read by "Python"

        def drain(wait: float) -> None:
            ready, _, _ = select.select([peer, kernel, ups[0][0], ups[1][0]], [], [], wait)
            for s in ready:
                data = s.recv(70000)
                if s is peer:
                    opened = opener.open([data], 0, 7, 1 << 40, peer_window)[1]
                    if not opened or not isinstance(opened[0], bytes) or opened[0][:2] != lead:
                        raise AssertionError("the lane sent what does not open to a packet")
                    seen[0] += 1
                elif s is kernel:
                    if data[:24] != eth:
                        raise AssertionError("the lane wrote a packet behind another header")
                    seen[1] += 1
                else:  # Python holds that fd's baton: it reads the fd until empty, as the
                    # data plane does, then gives it back
                    seen[2] += 1
                    which = 0 if s is ups[0][0] else 1
                    with contextlib.suppress(BlockingIOError):
                        while True:
                            (tap, udp)[which].recv(70000)
                            seen[2] += 1
                    lane.done(which, 1)

        expect_out = fed = 0
        for k in range(frames):
            packet = bytearray(20 + rng.randrange(1400))
            good = rng.random() < 0.7
            packet[0] = 0x45
            packet[12:16] = (vip if good else me).to_bytes(4, "big")
            packet[16:20] = (vip if good else me + 9).to_bytes(4, "big")
            while True:  # the TAP's queue may be full while "Python" holds its baton
                try:
                    kernel.send(eth + bytes(packet))
                    break
                except BlockingIOError:
                    drain(0.01)
            inner = bytes(packet[:12]) + vip.to_bytes(4, "big") + me.to_bytes(4, "big")
            dgram = sealer.seal(INDEX, k, [lead + inner + bytes(packet[20:])])[0]
            if not good:
                dgram = dgram[:-1] + bytes([dgram[-1] ^ 1]) if k % 2 else rng.randbytes(40)
            peer.sendto(dgram, udp.getsockname())
            expect_out += good
            fed += 2
            drain(0)
        deadline = time.monotonic() + 10
        while sum(seen) < fed and time.monotonic() < deadline:
            drain(0.5)
        got_out, got_in, up = seen
        if got_out + got_in + up != fed:
            raise AssertionError(f"lane thread: {got_out}+{got_in}+{up} of {fed} accounted")
        expect_in = lane.stats()["delivered"]
        if got_in != expect_in or got_out > expect_out:
            raise AssertionError("lane thread: counts differ from its stats")
        lane.stop()
        return fed
    finally:
        for s in socks:
            s.close()


def offload_input(data: bytes, native: Any) -> None:
    """One fuzz case of the TAP's offloads: an Ethernet frame ``data`` describes (IPv4 TCP or
    UDP, header lengths, flags and lengths from the input, bits flipped, cut short) cut by the
    native ``split_tcp`` and by ``ipop.vnet.offload.split_tcp`` at an MTU and segment size
    from the input, with or without a lead; and finished in place by both ``finish_frame``:
    the same segments, fields and verdicts, byte for byte."""
    from ipop.vnet import offload

    inp = Input(data)
    ihl = 20 + 4 * (inp.byte() % 3)
    thl = 20 + 4 * (inp.byte() % 11)
    proto = (6, 6, 6, 17, inp.byte())[inp.byte() % 5]
    body = bytes(inp.number(2) % 4000)  # zeros: the choices below read the input
    ip = bytearray(inp.raw(ihl))
    ip[0] = 0x40 | (ihl // 4)
    ip[6] &= 0x40 if inp.byte() % 4 else 0xFF
    ip[7] = 0 if inp.byte() % 4 else ip[7]
    ip[9] = proto
    tcp = bytearray(inp.raw(thl))
    tcp[12] = (thl // 4) << 4
    pkt = ip + tcp + body
    pkt[2:4] = (len(pkt) & 0xFFFF).to_bytes(2, "big")
    frame = bytearray(bytes(12) + b"\x08\x00" + pkt)
    for _ in range(inp.byte() % 4):
        at = inp.number(2) % len(frame)
        frame[at] ^= 1 << (inp.byte() % 8)
    if inp.byte() % 5 == 1:
        frame = frame[: inp.number(2) % (len(frame) + 1)]
    mtu = (1500, 1124, 576, 68, inp.number(2) - 100)[inp.byte() % 5]
    mss = (0, 1448, 1000, 1, inp.number(2) - 100)[inp.byte() % 5]
    lead = (None, None, b"\x06\x02", b"", inp.raw(6))[inp.byte() % 5]
    if not inp.done():  # the rest of the input as the data, when there is some
        rest = inp.raw(len(data))
        frame[-len(body) or len(frame) :] = rest[: len(body)].ljust(len(body), b"\0")
    got_t = offload.split_tcp(bytes(frame), mtu, mss, lead=lead)
    got_n = native.split_tcp(bytes(frame), mtu, mss, lead=lead)
    if got_n != got_t:
        raise AssertionError(f"split_tcp differs: native {got_n!r:.80}, twin {got_t!r:.80}")
    f_t, f_n = bytearray(frame), bytearray(frame)
    why_t, why_n = offload.finish_frame(f_t), native.finish_frame(f_n)
    if why_t != why_n or f_t != f_n:
        raise AssertionError(f"finish_frame differs: native {why_n!r}, twin {why_t!r}")


def _behind(head: bytes, d: bytes) -> bytes:
    """``d`` behind ``head``; for some (by d's last byte), the head cut short or changed."""
    pick = d[-1] % 8 if d else 0
    if pick == 1:
        return head[:-1] + d
    if pick == 2 and head:
        return bytes([head[0] ^ 1]) + head[1:] + d
    return head + d


def _load_native(path: str | None) -> ModuleType:
    """The native module: the ASan build at ``path`` if given, else the installed one."""
    if path is None:
        return importlib.import_module(_MODULE)
    spec = importlib.util.spec_from_file_location(_MODULE, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE] = mod  # before ipop.link.fastpath looks for it
    spec.loader.exec_module(mod)
    return mod


def fuzz(runs: int, seed: int, native_path: str | None, corpus: Path | None, guided: bool) -> int:
    """Run ``runs`` inputs; returns how many (with atheris, libFuzzer exits at the end).
    ``guided``: with atheris if installed, growing ``corpus``; else every file in ``corpus``
    first, then seeded random inputs."""
    mod = _load_native(native_path)
    atheris: Any = None
    with contextlib.suppress(ImportError):  # not a dependency (see the module docstring)
        atheris = importlib.import_module("atheris")
    if atheris is None or not guided:
        from ipop.link.fastpath import PyBatchAead
        from ipop.link.replay import ReplayWindow
        from ipop.vnet.gro import coalesce

        native, twin = mod.BatchAead(1, KEY), PyBatchAead(1, KEY)
        files = sorted(corpus.iterdir()) if corpus is not None and corpus.is_dir() else []
        for f in files:
            one_input(f.read_bytes(), native, twin, (mod.Window, ReplayWindow))
            coalesce_input(f.read_bytes(), mod.coalesce, coalesce)
            offload_input(f.read_bytes(), mod)
            lane_input(f.read_bytes(), mod)
        rng = random.Random(seed)
        for _ in range(runs):
            data = rng.randbytes(rng.randrange(8, 600))
            one_input(data, native, twin, (mod.Window, ReplayWindow))
            coalesce_input(data, mod.coalesce, coalesce)
            offload_input(data, mod)
            lane_input(data, mod)
        return len(files) + runs + lane_thread(mod, seed)
    # The twin's and the window's branches (the C code's, in Python) guide the inputs.
    with atheris.instrument_imports(
        include=[
            "ipop.link.fastpath",
            "ipop.link.lane",
            "ipop.link.replay",
            "ipop.vnet.gro",
            "ipop.vnet.offload",
        ]
    ):
        from ipop.link.fastpath import PyBatchAead
        from ipop.link.replay import ReplayWindow
        from ipop.vnet.gro import coalesce
    native, twin = mod.BatchAead(1, KEY), PyBatchAead(1, KEY)
    case = atheris.instrument_func(one_input)
    gro_case = atheris.instrument_func(coalesce_input)
    offload_case = atheris.instrument_func(offload_input)
    lane_case = atheris.instrument_func(lane_input)

    def test_one(data: bytes) -> None:
        case(data, native, twin, (mod.Window, ReplayWindow))
        gro_case(data, mod.coalesce, coalesce)
        offload_case(data, mod)
        lane_case(data, mod)

    print(f"fastpath_fuzz: atheris, {runs} inputs, native == twin checked on each", flush=True)
    argv = [sys.argv[0], f"-runs={runs}", f"-seed={seed}", "-max_len=800"]
    if corpus is not None:
        corpus.mkdir(parents=True, exist_ok=True)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one)
    atheris.Fuzz()  # exits: 0 when every input passed
    return runs


def build_asan(out_dir: Path) -> Path:
    """``_fastpath.c`` compiled with ASan and UBSan into ``out_dir``; the module's path."""
    ext = sysconfig.get_config_var("EXT_SUFFIX")
    target = out_dir / f"_fastpath{ext}"
    cmd = [
        os.environ.get("CC", "gcc"),
        "-shared",
        "-fPIC",
        "-O1",
        "-g",
        "-fno-omit-frame-pointer",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=undefined",
        f"-I{sysconfig.get_paths()['include']}",
        str(SOURCE),
        "-o",
        str(target),
        "-lcrypto",
    ]
    subprocess.run(cmd, check=True)
    return target


def main() -> None:
    ap = argparse.ArgumentParser(prog="fastpath_fuzz", description=__doc__)
    ap.add_argument("--runs", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--corpus", type=Path, help="libFuzzer corpus folder (kept, grown)")
    ap.add_argument("--asan", action="store_true", help="build with ASan+UBSan, run under it")
    ap.add_argument("--native", help=argparse.SUPPRESS)  # the child's ASan build
    ap.add_argument("--replay", action="store_true", help=argparse.SUPPRESS)  # the ASan child
    args = ap.parse_args()
    if not args.asan:
        done = fuzz(args.runs, args.seed, args.native, args.corpus, not args.replay)
        where = "ASan+UBSan build" if args.native else "installed build"
        print(f"fastpath_fuzz: {done} inputs, native == twin on every one ({where})")
        return
    libasan = subprocess.run(
        [os.environ.get("CC", "gcc"), "-print-file-name=libasan.so"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="fastpath-asan-") as tmp:
        target = build_asan(Path(tmp))
        corpus = args.corpus or Path(tmp) / "corpus"
        me = [sys.executable, "-m", "ipop.tools.bench.fastpath_fuzz", "--seed", str(args.seed)]
        me += ["--corpus", str(corpus)]
        # 1. Coverage-guided (atheris, if installed) on the plain build: libFuzzer's coverage
        # does not work with gcc's libasan preloaded, so the corpus is grown here ...
        rc = subprocess.run([*me, "--runs", str(args.runs)]).returncode
        if rc != 0:
            sys.exit(rc)
        # 2. ... and replayed, with as many random inputs again, on the ASan+UBSan build.
        env = dict(os.environ)
        env.update(
            LD_PRELOAD=libasan,
            ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
            UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
            PYTHONMALLOC="malloc",
        )
        child = [*me, "--runs", str(args.runs), "--native", str(target), "--replay"]
        sys.exit(subprocess.run(child, env=env).returncode)


if __name__ == "__main__":
    main()
