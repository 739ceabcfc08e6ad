#!/usr/bin/env python3
"""A list publisher for the download tests: serves the files of a folder
with ETag and Last-Modified, answers 304 to If-None-Match, and logs every
request as one line `METHOD PATH STATUS` to a log file.

Paths with a meaning of their own:
  /gzip/NAME       NAME with Content-Encoding: gzip
  /truncated/NAME  NAME with a Content-Length larger than the bytes sent
  anything missing 404

Usage: serve.py DIR PORTFILE LOG [CERT KEY]; the chosen port is written to
PORTFILE once the socket listens.
"""
import gzip
import hashlib
import http.server
import os
import ssl
import sys
from email.utils import formatdate

root, port_file, log_path = sys.argv[1:4]
tls = sys.argv[4:6]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def note(self, status):
        with open(log_path, "a") as log:
            log.write(f"{self.command} {self.path} {status}\n")

    def do_GET(self):
        mode, name = "plain", self.path.lstrip("/")
        for prefix in ("gzip", "truncated"):
            if name.startswith(prefix + "/"):
                mode, name = prefix, name[len(prefix) + 1:]
        path = os.path.join(root, name)
        if "/" in name or not os.path.isfile(path):
            self.note(404)
            body = b"not found\n"
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        with open(path, "rb") as f:
            data = f.read()
        etag = '"%s"' % hashlib.sha256(data).hexdigest()[:16]
        if self.headers.get("If-None-Match") == etag:
            self.note(304)
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        if mode == "gzip":
            data = gzip.compress(data)
        self.note(200)
        self.send_response(200)
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", formatdate(os.path.getmtime(path), usegmt=True))
        if mode == "gzip":
            self.send_header("Content-Encoding", "gzip")
        if mode == "truncated":
            self.send_header("Content-Length", str(len(data) * 2))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if tls:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls[0], tls[1])
    server.socket = context.wrap_socket(server.socket, server_side=True)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
