#!/usr/bin/env python3
"""A small Git smart-HTTP server for tests: Debian's `git http-backend` behind a threaded HTTP server.

Usage: gitserver.py --root DIR [--port 0] [--user U:P] [--token T] [--cert PEM --key PEM] [--log FILE]
       [--rate BYTES_PER_SECOND]

Serves every repository under DIR (as http://127.0.0.1:PORT/<path>), prints the bound port alone on
the first line of stdout, then serves until killed. With --user and/or --token a request needs
`Authorization: Basic` with those credentials or `Authorization: Bearer <T>`, else 401. With
--cert/--key it speaks HTTPS. With --log every request is appended as one line
`<status> <METHOD> <path> [<v2 command> [deepen=N]]`, e.g.
`200 POST /r.git/git-upload-pack fetch deepen=1` (the tests count `fetch` commands to prove
nothing was downloaded, and check that fetches are shallow). With --rate every response body is sent
at about that many bytes a second (a slow server, for timeout tests).
Standard library only (Python 3.11), so the e2e setup needs nothing beyond `git`.
"""

import argparse
import base64
import gzip
import http.server
import os
import ssl
import subprocess
import sys
import threading
import urllib.parse

HTTP_BACKEND = os.environ.get("GIT_HTTP_BACKEND", "/usr/lib/git-core/git-http-backend")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--user", help="U:P for basic auth")
    ap.add_argument("--token", help="bearer token")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--log")
    ap.add_argument("--rate", type=int, help="bytes per second of every response body")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    log_lock = threading.Lock()

    def authorized(header):
        if not args.user and not args.token:
            return True, None
        if not header:
            return False, None
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic" and args.user:
            try:
                decoded = base64.b64decode(value.strip()).decode()
            except Exception:
                return False, None
            if decoded == args.user:
                return True, decoded.split(":", 1)[0]
        if scheme == "bearer" and args.token and value.strip() == args.token:
            return True, "token"
        return False, None

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):  # quiet: the --log file is the record
            pass

        def record(self, status, command=""):
            if args.log:
                with log_lock, open(args.log, "a") as f:
                    f.write(f"{status} {self.command} {self.path} {command}".rstrip() + "\n")

        def read_body(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks)
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def reply(self, status, reason, headers, body, command=""):
            self.send_response(status, reason)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if args.rate:
                import time
                step = max(1, args.rate // 20)
                try:
                    for i in range(0, len(body), step):
                        self.wfile.write(body[i : i + step])
                        self.wfile.flush()
                        time.sleep(0.05)
                except (BrokenPipeError, ConnectionResetError):
                    return
            else:
                self.wfile.write(body)
            self.record(status, command)

        def handle_git(self):
            body = self.read_body() if self.command == "POST" else b""
            ok, user = authorized(self.headers.get("Authorization"))
            if not ok:
                self.reply(401, "Unauthorized", [("WWW-Authenticate", 'Basic realm="git"')], b"unauthorized\n")
                return
            path, _, query = self.path.partition("?")
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": root,
                "GIT_HTTP_EXPORT_ALL": "1",
                "PATH_INFO": urllib.parse.unquote(path),
                "QUERY_STRING": query,
                "REQUEST_METHOD": self.command,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_ADDR": self.client_address[0],
                "REMOTE_USER": user or "",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "GATEWAY_INTERFACE": "CGI/1.1",
            }
            if self.headers.get("Content-Encoding"):
                # http-backend inflates gzip request bodies itself when told so.
                env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
            if self.headers.get("Git-Protocol"):
                env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
            # The protocol v2 command (ls-refs or fetch), for the log.
            plain = gzip.decompress(body) if env.get("HTTP_CONTENT_ENCODING") == "gzip" else body
            command = ""
            if b"command=" in plain[:64]:
                command = plain.split(b"command=", 1)[1].split(b"\n", 1)[0].decode("latin-1")
                if b"deepen " in plain:  # a shallow fetch: log its depth
                    depth = plain.split(b"deepen ", 1)[1].split(b"\n", 1)[0].decode("latin-1")
                    command += f" deepen={depth}"
            proc = subprocess.run([HTTP_BACKEND], input=body, env=env, capture_output=True)
            head, sep, out = proc.stdout.partition(b"\r\n\r\n")
            if not sep:
                head, sep, out = proc.stdout.partition(b"\n\n")
            status, reason, headers = 200, "OK", []
            for line in head.decode("latin-1").splitlines():
                k, _, v = line.partition(":")
                v = v.strip()
                if k.lower() == "status":
                    code, _, reason = v.partition(" ")
                    status = int(code)
                elif k and k.lower() != "content-length":
                    headers.append((k, v))
            if proc.returncode != 0 and status == 200:
                status, reason, out = 500, "Internal Server Error", proc.stderr
            self.reply(status, reason, headers, out, command)

        do_GET = handle_git
        do_POST = handle_git

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
