#!/usr/bin/env python3
"""A Slack-shaped incoming-webhook receiver for the demo: answers every POST with `200 ok`, as
Slack's incoming webhooks do, and appends each JSON body as one line to --out.

Usage: chatserver.py --out FILE [--port 0]

Prints the bound port alone on the first line of stdout, then serves on 127.0.0.1 until killed.
`--summary FILE` instead prints one line per message of FILE: `<author_name>: <text first line>`
(Flux's Slack payload: one attachment per event), for the demo's summary.
Standard library only.
"""

import argparse
import http.server
import json
import threading


def summary(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            for a in msg.get("attachments") or [{"author_name": "-", "text": msg.get("text", "")}]:
                text = (a.get("text") or "").splitlines()
                color = {"good": "info ", "danger": "error"}.get(a.get("color"), a.get("color") or "")
                print(f"{color} {a.get('author_name', '-')}: {text[0] if text else ''}")


def serve(out, port):
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock, open(out, "ab") as f:
                f.write(body.replace(b"\n", b" ") + b"\n")
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(httpd.server_address[1], flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--out")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--summary")
    a = p.parse_args()
    if a.summary:
        summary(a.summary)
    elif a.out:
        serve(a.out, a.port)
    else:
        p.error("--out or --summary is required")
