#!/usr/bin/env python3
"""A new image on the targets app1..appN of a canary fleet (`e2e/bench --vs`), all at once: one
strategic merge patch per Deployment, CONCURRENCY in flight. `kubectl set image` with N names
GETs, then patches, them one after another at ~5 requests per second (measured): of 100 apps
the first was released 19 s after the command started and the last 39 s, and that wait counted
in "100 releases at once".
Prints the seconds the patches took.

  release-fleet.py NS N IMAGE [CONCURRENCY]   # KUBECONFIG's server; token and CA from PENNANT_E2E_STATE
"""
import http.client
import json
import os
import ssl
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ns, n, image = sys.argv[1], int(sys.argv[2]), sys.argv[3]
conc = int(sys.argv[4]) if len(sys.argv) > 4 else 32
state = os.environ["PENNANT_E2E_STATE"]
token = open(f"{state}/pki/admin.token").read().strip()
port = os.environ.get("PENNANT_E2E_API_PORT", "16443")
ctx = ssl.create_default_context(cafile=f"{state}/pki/ca.crt")
local = threading.local()
body = json.dumps({"spec": {"template": {"spec": {"containers": [{"name": "podinfod", "image": image}]}}}}).encode()


def release(i):
    if not hasattr(local, "conn"):
        local.conn = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx)
    local.conn.request("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/app{i}", body=body, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/strategic-merge-patch+json"})
    r = local.conn.getresponse()
    data = r.read()
    if r.status >= 300:
        raise SystemExit(f"app{i}: {r.status} {data[:200]!r}")


t0 = time.time()
with ThreadPoolExecutor(conc) as ex:
    list(ex.map(release, range(1, n + 1)))
print(f"{time.time() - t0:.2f} s for {n} patches ({conc} in flight)")
