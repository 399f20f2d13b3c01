#!/usr/bin/env python3
"""A stand-in DC/OS master for the transcripts in this folder (no cluster needed).

It answers like Admin Router does for the few paths the transcripts use:
/dcos-metadata/dcos-version.json without a token; everything else only with
`Authorization: token=<TOKEN>` (else 401 with `WWW-Authenticate: acsjwt`).

    python3 docs/standin-master.py PORT TOKEN
"""
import http.server
import json
import sys

PORT, TOKEN = int(sys.argv[1]), sys.argv[2]


class Master(http.server.BaseHTTPRequestHandler):
    def answer(self, body):
        if self.path == "/dcos-metadata/dcos-version.json":
            return self.send(200, {"version": "2.2.0", "dcos-variant": "open"}, body)
        if self.headers.get("Authorization") != "token=" + TOKEN:
            self.send_response(401)
            self.send_header("WWW-Authenticate", "acsjwt")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/service/marathon/v2/apps"):
            return self.send(200, {"apps": [{"id": "/hello", "instances": 1}]}, body)
        return self.send(200, {}, body)

    def send(self, status, doc, body):
        data = (json.dumps(doc) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_GET(self):
        self.answer(True)

    def do_HEAD(self):
        self.answer(False)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Master).serve_forever()
