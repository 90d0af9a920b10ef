#!/usr/bin/env python3
"""Round-trip time of an OPTIONS through each TARGET: prints, per target in the order
given, "median p90" in microseconds, all on one line. The targets take turns probe by
probe, so that each sees the same machine: on a shared VM the speed drifts from second to
second, and one target probed after another was once 99 then 148 us for the same relay.
ci/bench-lb.sh runs it against a callee directly, a relay that does nothing
(ci/null_relay.c) and a balancer; the differences are what a hop costs here and what the
balancer adds.

    lb_latency.py COUNT HOST:PORT...
"""
import socket
import statistics
import sys
import time

count = int(sys.argv[1])
targets = [t.rsplit(":", 1) for t in sys.argv[2:]]
socks = []
for _ in targets:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.5)
    socks.append(s)
rtts = [[] for _ in targets]
for i in range(count):
    for k, (host, port) in enumerate(targets):
        sock = socks[k]
        me = "127.0.0.1:%d" % sock.getsockname()[1]
        msg = (
            "OPTIONS sip:probe@%s:%s SIP/2.0\r\n"
            "Via: SIP/2.0/UDP %s;branch=z9hG4bKlat%d\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:lat@127.0.0.1>;tag=l%d\r\n"
            "To: <sip:probe@%s>\r\nCall-ID: lat-%d-%d-%f\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n" % (host, port, me, i, i, host, k, i, time.time())
        ).encode()
        start = time.perf_counter_ns()
        sock.sendto(msg, (host, int(port)))
        try:
            while True:
                data = sock.recv(65535)
                if data.startswith(b"SIP/2.0 200") and (b"branch=z9hG4bKlat%d" % i) in data:
                    rtts[k].append((time.perf_counter_ns() - start) / 1000)
                    break
        except socket.timeout:
            pass
        time.sleep(0.001)
out = []
for (host, port), r in zip(targets, rtts):
    if len(r) < count // 2:
        print("%s:%s answered %d of %d" % (host, port, len(r), count))
        sys.exit(1)
    r.sort()
    out.append("%d %d" % (statistics.median(r), r[int(len(r) * 0.9)]))
print(" ".join(out))
