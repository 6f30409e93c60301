#!/usr/bin/env python3
"""fake_node.py — an HTTPS server that gives one canned answer to every request, standing in for a
key server node in a state that is hard to reach with real processes (a passive naming a given
active, an active whose peer is down, a node answering 500).

    fake_node.py --cert PEM --key PEM --host H --port P --status CODE --body JSON --log FILE
                 [--accept-registrations]

Every request is answered with CODE and BODY (Content-Type: application/json, Connection: close)
and appended to FILE as "METHOD TARGET" lines, so a test can also show that a node was never
asked. With --accept-registrations, POST /v1/register is answered 201 with the fingerprint the
client signed with (X-KT-Client), so that a registration succeeds and only what follows gets the
canned answer. TLS uses the certificate and key given (the test node's own, so clients that trust that
node's CA accept it). It runs until killed.
"""
import argparse
import http.server
import json
import ssl
import sys


def make_handler(status, body, log_path, accept_registrations):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(f"{self.command} {self.path}\n")
            code, data = status, body.encode()
            if accept_registrations and self.command == "POST" and self.path == "/v1/register":
                fingerprint = self.headers.get("X-KT-Client", "")
                code = 201
                data = json.dumps({"fingerprint": fingerprint, "org": "acme", "name": "fake",
                                   "server_fingerprint": "0" * 40}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = answer

        def log_message(self, *arguments):
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser()
    for name in ("cert", "key", "host", "body", "log"):
        parser.add_argument("--" + name, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--status", type=int, required=True)
    parser.add_argument("--accept-registrations", action="store_true")
    options = parser.parse_args()
    handler = make_handler(options.status, options.body, options.log, options.accept_registrations)
    server = http.server.ThreadingHTTPServer((options.host, options.port), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(options.cert, options.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"listening on {options.host}:{options.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
