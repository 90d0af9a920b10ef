#!/usr/bin/env python3
"""Round-trip time of an OPTIONS through TARGET, one at a time: prints the median and the
90th percentile in microseconds. ci/bench-lb.sh runs it against the balancer, Kamailio's
dispatcher and a callee directly (the difference is what the proxy adds).

    lb_latency.py HOST:PORT COUNT
"""
import socket
import statistics
import sys
import time

host, port = sys.argv[1].rsplit(":", 1)
count = int(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
sock.settimeout(0.5)
me = "127.0.0.1:%d" % sock.getsockname()[1]
rtts = []
for i in range(count):
    msg = (
        "OPTIONS sip:probe@%s:%s SIP/2.0\r\n"
        "Via: SIP/2.0/UDP %s;branch=z9hG4bKlat%d\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:lat@127.0.0.1>;tag=l%d\r\n"
        "To: <sip:probe@%s>\r\nCall-ID: lat-%d-%f\r\nCSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n" % (host, port, me, i, i, host, i, time.time())
    ).encode()
    start = time.perf_counter_ns()
    sock.sendto(msg, (host, int(port)))
    try:
        while True:
            data = sock.recv(65535)
            if data.startswith(b"SIP/2.0 200") and (b"branch=z9hG4bKlat%d" % i) in data:
                rtts.append((time.perf_counter_ns() - start) / 1000)
                break
    except socket.timeout:
        pass
    time.sleep(0.002)
if len(rtts) < count // 2:
    print("answered %d of %d" % (len(rtts), count))
    sys.exit(1)
rtts.sort()
print("%d %d" % (statistics.median(rtts), rtts[int(len(rtts) * 0.9)]))
