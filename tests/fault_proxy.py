#!/usr/bin/env python3
"""A small HTTP/1.1 proxy that misbehaves on purpose, for the remote-store tests.

It listens on 127.0.0.1:PORT and forwards each request to UPSTREAM (one upstream connection
per request), and on the way it can:
  --p503 P      answer a request with 503 Service Unavailable instead of forwarding it
  --p429 P      answer a request with 429 Too Many Requests
  --preset P    send the response head and half the body, then reset the connection (RST)
  --ptruncate P send the response head and half the body, then close cleanly (FIN)
  --forbid TEXT answer 403 Forbidden to every request whose request line contains TEXT
  --delay S     hold each response for a random time up to S seconds
  --die-after N forward N chunk downloads (GET .../chunks/...), then exit: the server is
                "gone" mid-restore (plan's HEAD checks and index reads do not count)
Every response goes out with "Connection: close", so a client opens a connection per request.
GET /__stats answers with what it did so far (JSON), so a test can check faults happened.
Deterministic with --seed. Standard library only.
"""

import argparse
import json
import random
import socket
import struct
import sys
import threading
import time


def read_head(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        part = conn.recv(65536)
        if not part:
            return None, b""
        data += part
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest


def content_length(head):
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def with_close(head):
    lines = [
        line
        for line in head.split(b"\r\n")
        if line.partition(b":")[0].strip().lower() not in (b"connection", b"keep-alive")
    ]
    lines.append(b"Connection: close")
    return b"\r\n".join(lines)


def reset(conn):
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


class Proxy:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.forwarded = 0
        self.stats = {"503": 0, "429": 0, "403": 0, "reset": 0, "truncate": 0, "ok": 0, "most_403_per_path": 0, "most_in_flight": 0}
        self.in_flight = 0
        self.forbidden = {}

    def roll(self):
        with self.lock:
            return self.rng.random(), self.rng.random() * self.args.delay

    def handle(self, conn):
        with self.lock:
            self.in_flight += 1
            self.stats["most_in_flight"] = max(self.stats["most_in_flight"], self.in_flight)
        counted = [True]

        # A request stops counting as in flight before the last bytes of its answer go out:
        # the client can only start its next request after they arrive, so the count never
        # includes an answered request whose handler thread has not finished yet.
        def release():
            if counted[0]:
                counted[0] = False
                with self.lock:
                    self.in_flight -= 1

        try:
            self.answer(conn, release)
        finally:
            release()

    def answer(self, conn, release):
        try:
            head, rest = read_head(conn)
            if head is None:
                conn.close()
                return
            need = content_length(head) - len(rest)
            while need > 0:
                part = conn.recv(min(need, 1 << 20))
                if not part:
                    break
                rest += part
                need -= len(part)
            if head.startswith(b"GET /__stats "):
                with self.lock:
                    body = json.dumps(self.stats).encode()
                release()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
                conn.close()
                return
            r, delay = self.roll()
            a = self.args
            if a.forbid and a.forbid.encode() in head.split(b"\r\n")[0]:
                self.count("403")
                with self.lock:
                    line = head.split(b"\r\n")[0]
                    self.forbidden[line] = self.forbidden.get(line, 0) + 1
                    self.stats["most_403_per_path"] = max(self.forbidden.values())
                release()
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                conn.close()
                return
            if r < a.p503:
                self.count("503")
                release()
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                conn.close()
                return
            if r < a.p503 + a.p429:
                self.count("429")
                release()
                conn.sendall(b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                conn.close()
                return
            is_chunk_get = head.startswith(b"GET ") and b"/chunks/" in head.split(b"\r\n")[0]
            with self.lock:
                self.forwarded += is_chunk_get
                n = self.forwarded
            if a.die_after and is_chunk_get and n > a.die_after:
                reset(conn)
                self.die()
                return
            up = socket.create_connection((a.upstream_host, a.upstream_port))
            up.sendall(with_close(head) + b"\r\n\r\n" + rest)
            response = b""
            while True:
                part = up.recv(1 << 20)
                if not part:
                    break
                response += part
            up.close()
            rhead, _, body = response.partition(b"\r\n\r\n")
            if delay:
                time.sleep(delay)
            if r < a.p503 + a.p429 + a.preset and len(body) > 1:
                self.count("reset")
                release()
                conn.sendall(with_close(rhead) + b"\r\n\r\n" + body[: len(body) // 2])
                reset(conn)
                return
            if r < a.p503 + a.p429 + a.preset + a.ptruncate and len(body) > 1:
                self.count("truncate")
                release()
                conn.sendall(with_close(rhead) + b"\r\n\r\n" + body[: len(body) // 2])
                conn.close()
                return
            self.count("ok")
            release()
            conn.sendall(with_close(rhead) + b"\r\n\r\n" + body)
            conn.close()
        except OSError:
            try:
                conn.close()
            except OSError:
                pass

    def count(self, what):
        with self.lock:
            self.stats[what] += 1

    def die(self):
        print(f"fault_proxy: gone after {self.args.die_after} requests", file=sys.stderr, flush=True)
        import os

        os._exit(0)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="HOST:PORT")
    p.add_argument("--p503", type=float, default=0.0)
    p.add_argument("--p429", type=float, default=0.0)
    p.add_argument("--preset", type=float, default=0.0)
    p.add_argument("--ptruncate", type=float, default=0.0)
    p.add_argument("--forbid", default="")
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--die-after", type=int, default=0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    host, _, port = args.upstream.rpartition(":")
    args.upstream_host, args.upstream_port = host, int(port)
    proxy = Proxy(args)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(256)
    print(f"fault_proxy listening on 127.0.0.1:{args.port}", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=proxy.handle, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
