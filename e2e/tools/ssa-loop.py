#!/usr/bin/env python3
"""The physical limit beside the canary controllers (`e2e/bench --vs`): what a bare loop of
server-side applies gets through this apiserver. For N apps, the objects a controller writes to
initialise an istio Canary — the `<app>-primary` Deployment, the `<app>`, `<app>-primary` and
`<app>-canary` Services, the VirtualService and two DestinationRules — applied with CONCURRENCY
requests in flight, plus one status-sized merge patch per app (no Canary here: on the Deployment's
annotations). Prints the seconds it took and the requests per second, then the seconds until
every primary Deployment is Available: no controller that waits for its primary, as Flagger and
pennant do before `Initialized`, can be faster than the cluster's own controllers here.

  ssa-loop.py NS N [CONCURRENCY]      # KUBECONFIG's server; token and CA from PENNANT_E2E_STATE
"""
import http.client
import json
import os
import threading
import ssl
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ns, n = sys.argv[1], int(sys.argv[2])
conc = int(sys.argv[3]) if len(sys.argv) > 3 else 32
state = os.environ["PENNANT_E2E_STATE"]
token = open(f"{state}/pki/admin.token").read().strip()
port = os.environ.get("PENNANT_E2E_API_PORT", "16443")
ctx = ssl.create_default_context(cafile=f"{state}/pki/ca.crt")


def objects(app):
    sel = {"app": f"{app}-primary"}
    dep = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": f"{app}-primary", "labels": sel},
           "spec": {"replicas": 1, "selector": {"matchLabels": sel},
                    "template": {"metadata": {"labels": sel},
                                 "spec": {"containers": [{"name": "podinfod",
                                                          "image": "ghcr.io/stefanprodan/podinfo:6.0.0",
                                                          "ports": [{"name": "http", "containerPort": 9898}]}]}}}}
    out = [("/apis/apps/v1", "deployments", dep)]
    for name, s in [(app, sel), (f"{app}-primary", sel), (f"{app}-canary", {"app": app})]:
        out.append(("/api/v1", "services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                    "spec": {"selector": s, "ports": [{"name": "http", "port": 80, "targetPort": 9898}]}}))
    out.append(("/apis/networking.istio.io/v1", "virtualservices", {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": app},
        "spec": {"hosts": [app, f"{app}.example.com"], "gateways": ["mesh"], "http": [{"route": [
            {"destination": {"host": f"{app}-primary"}, "weight": 100},
            {"destination": {"host": f"{app}-canary"}, "weight": 0}]}]}}))
    for d in ("primary", "canary"):
        out.append(("/apis/networking.istio.io/v1", "destinationrules", {
            "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": f"{app}-{d}"}, "spec": {"host": f"{app}-{d}"}}))
    return out


local = threading.local()


def send(method, path, body, ctype):
    """One request on this thread's keep-alive connection (as a controller's client pools them)."""
    if not hasattr(local, "conn"):
        local.conn = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx)
    local.conn.request(method, path, body=body, headers={
        "Authorization": f"Bearer {token}", "Content-Type": ctype})
    r = local.conn.getresponse()
    data = r.read()
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: {r.status} {data[:200]!r}")


def apply(item):
    prefix, plural, obj = item
    path = f"{prefix}/namespaces/{ns}/{plural}/{obj['metadata']['name']}?fieldManager=ssa-loop&force=true"
    send("PATCH", path, json.dumps(obj).encode(), "application/apply-patch+yaml")


def status(app):
    send("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/{app}-primary",
         b'{"metadata":{"annotations":{"phase":"Initialized"}}}', "application/merge-patch+json")


items = [o for i in range(1, n + 1) for o in objects(f"app{i}")]
t0 = time.time()
with ThreadPoolExecutor(conc) as ex:
    list(ex.map(apply, items))
    list(ex.map(status, [f"app{i}" for i in range(1, n + 1)]))
dt = time.time() - t0
print(f"{dt:.2f} s for {len(items) + n} requests ({(len(items) + n) / dt:.0f}/s, {conc} in flight)")


def available():
    """The primaries whose Available condition is True, from one LIST."""
    conn = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx)
    conn.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments",
                 headers={"Authorization": f"Bearer {token}"})
    items = json.loads(conn.getresponse().read())["items"]
    conn.close()
    return sum(1 for d in items if d["metadata"]["name"].endswith("-primary") and any(
        c["type"] == "Available" and c["status"] == "True"
        for c in d.get("status", {}).get("conditions", [])))


while available() < n:
    if time.time() - t0 > 600:
        raise SystemExit(f"timed out: {available()} of {n} primaries Available after 600 s")
    time.sleep(0.2)
print(f"{time.time() - t0:.2f} s until all {n} primaries are Available")
