"""A slow, lossy switch for `cargo xtask chaos` where the kernel has no netem.

Opens one TAP device per host (NAME1..NAMEn; the xtask moves each into its
host namespace), learns which port each MAC address sits behind, and
forwards every Ethernet frame after a delay drawn uniformly from
DELAY +/- JITTER ms, dropping LOSS of them. Frames are scheduled one by one,
so frames sent closer together than the jitter overtake each other: that is
the reordering. Prints one JSON line when ready and one with its counts
every second (frames, dropped, delivered, reordered); stops on SIGTERM.
Standard library only.
"""

import fcntl
import heapq
import json
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def emit(obj):
    print(json.dumps(obj, separators=(",", ":")), flush=True)


def open_tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def main():
    prefix, count = sys.argv[1], int(sys.argv[2])
    delay, jitter = float(sys.argv[3]) / 1e3, float(sys.argv[4]) / 1e3
    loss = float(sys.argv[5])
    taps = [open_tap(f"{prefix}{i}") for i in range(1, count + 1)]
    port_of_fd = {fd: i for i, fd in enumerate(taps)}
    mac_port = {}
    queue = []  # (due, order, out_fd, frame, flow, seq)
    sent_seq = {}  # flow -> next sequence number at sending
    last_seq = {}  # flow -> highest sequence number delivered
    stats = {"frames": 0, "dropped": 0, "delivered": 0, "reordered": 0}
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    emit({"event": "ready", "taps": [f"{prefix}{i}" for i in range(1, count + 1)]})
    order = 0
    next_report = time.monotonic() + 1.0
    while running[0]:
        now = time.monotonic()
        timeout = 0.2
        if queue:
            timeout = max(0.0, min(timeout, queue[0][0] - now))
        try:
            ready, _, _ = select.select(taps, [], [], timeout)
        except InterruptedError:
            continue
        for fd in ready:
            while True:
                try:
                    frame = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if len(frame) < 14:
                    continue
                src_port = port_of_fd[fd]
                mac_port[frame[6:12]] = src_port
                dst = mac_port.get(frame[0:6])
                outs = [dst] if dst is not None and not frame[0] & 1 else [
                    p for p in range(len(taps)) if p != src_port]
                for out in outs:
                    if out == src_port:
                        continue
                    stats["frames"] += 1
                    flow = (src_port, out)
                    seq = sent_seq.get(flow, 0)
                    sent_seq[flow] = seq + 1
                    if random.random() < loss:
                        stats["dropped"] += 1
                        continue
                    due = time.monotonic() + delay + random.uniform(-jitter, jitter)
                    order += 1
                    heapq.heappush(queue, (due, order, taps[out], frame, flow, seq))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, fd, frame, flow, seq = heapq.heappop(queue)
            if seq < last_seq.get(flow, -1):
                stats["reordered"] += 1
            else:
                last_seq[flow] = seq
            try:
                os.write(fd, frame)
                stats["delivered"] += 1
            except OSError:
                stats["dropped"] += 1
        if now >= next_report:
            next_report = now + 1.0
            emit(dict(stats, event="stats"))
    emit(dict(stats, event="stats"))


main()
