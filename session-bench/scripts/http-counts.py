#!/usr/bin/env python3
"""Instructions and heap allocations per HTTP request of `session-bench serve VARIANT`.

    python3 session-bench/scripts/http-counts.py target/release/session-bench sessions

Runs the server under valgrind twice (callgrind for instructions, memcheck for the heap
summary), each time for a short and a long series of sequential GETs from 50 visitors with
their cookies, one connection per request, and prints the difference divided by the number
of extra requests: the start-up and the visitors' first requests cancel out. Counts include
the TCP accept and close of each connection. Instruction counts do not depend on the
machine's load, so two builds can be compared on a busy machine.
"""
import os, re, signal, socket, subprocess, sys, tempfile

SHORT, LONG, VISITORS = 200, 1200, 50


def get(addr, cookie=None):
    host, port = addr.split(":")
    s = socket.create_connection((host, int(port)))
    req = f"GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n"
    if cookie:
        req += f"Cookie: {cookie}\r\n"
    s.sendall((req + "\r\n").encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    m = re.search(rb"set-cookie: ([^;\r\n]+)", data, re.I)
    return m.group(1).decode() if m else None


def serve(tool_args, binary, variant, n):
    p = subprocess.Popen(
        ["valgrind", *tool_args, binary, "serve", variant, "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    addr = p.stdout.readline().strip().split("http://")[1]
    cookies = [get(addr) or "x=1" for _ in range(VISITORS)]
    for i in range(n):
        get(addr, cookies[i % VISITORS])
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    return err


def instructions(binary, variant, n):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cg.out")
        serve(["--tool=callgrind", f"--callgrind-out-file={out}"], binary, variant, n)
        for line in open(out):
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise SystemExit("no totals in the callgrind output")


def allocations(binary, variant, n):
    err = serve(["--tool=memcheck", "--leak-check=no"], binary, variant, n)
    m = re.search(r"total heap usage: ([\d,]+) allocs", err)
    if not m:
        raise SystemExit("no heap summary from memcheck:\n" + err[-2000:])
    return int(m.group(1).replace(",", ""))


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    binary, variant = sys.argv[1], sys.argv[2]
    extra = LONG - SHORT
    ins = (instructions(binary, variant, LONG) - instructions(binary, variant, SHORT)) / extra
    allocs = (allocations(binary, variant, LONG) - allocations(binary, variant, SHORT)) / extra
    print(f"{variant}: {ins / 1000:.1f}k instructions, {allocs:.1f} allocations per request")


if __name__ == "__main__":
    main()
