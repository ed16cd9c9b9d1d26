#!/usr/bin/env python3
"""An HTTP server that behaves like a hostile or broken store, for the bad-network tests.

  hostile_http.py PORT MODE [DIR]

MODE:
  drip   every GET of an object answers 200 with a Content-Length of 1000, then sends one byte
         a second (config.json is served honestly, so the store opens)
  bomb   every GET of an object answers 200 and streams zeros without end (no length)
  maze   no catalogue; every directory page links to a deeper directory "a/" and a sibling
         "b/", without end
  auth   serves DIR, but only to requests with Basic credentials user:s3cret (401 otherwise)
Listens on 127.0.0.1 only. Standard library only.
"""

import base64
import http.server
import json
import os
import sys
import time

PORT, MODE = int(sys.argv[1]), sys.argv[2]
ROOT = sys.argv[3] if len(sys.argv) > 3 else "."
CONFIG = json.dumps(
    {"format": "restore-store", "version": 1, "chunk_size": 1048576, "hash": "blake3",
     "compression": "zstd"}
).encode()


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=ROOT, **kwargs)

    def log_message(self, *args):
        pass

    def send_bytes(self, body, status=200, ctype="application/octet-stream"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def hostile(self):
        path = self.path.split("?")[0]
        if MODE == "auth":
            want = "Basic " + base64.b64encode(b"user:s3cret").decode()
            if self.headers.get("Authorization") != want:
                self.send_bytes(b"who are you?", 401, "text/plain")
                return True
            return False
        if path.endswith("/config.json"):
            self.send_bytes(CONFIG, ctype="application/json")
            return True
        if MODE == "drip" and self.command == "GET":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(1)
            except OSError:
                pass
            self.close_connection = True
            return True
        if MODE == "bomb" and self.command == "GET":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            block = bytes(1 << 16)
            try:
                while True:
                    self.wfile.write(block)
            except OSError:
                pass
            self.close_connection = True
            return True
        if MODE == "maze":
            if path.endswith("/index.json"):
                self.send_bytes(b"not here", 404, "text/plain")
            elif path.endswith("/"):
                page = b'<a href="a/">a/</a> <a href="b/">b/</a> <a href="x.json">x.json</a>'
                self.send_bytes(page, ctype="text/html")
            else:
                self.send_bytes(b"not here", 404, "text/plain")
            return True
        return False

    def do_GET(self):
        if not self.hostile():
            super().do_GET()

    def do_HEAD(self):
        if not self.hostile():
            super().do_HEAD()


if __name__ == "__main__":
    os.chdir(ROOT)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True
    server.serve_forever()
