#!/usr/bin/env python3
"""The cluster side of e2e/bench-gitops (a benchmark helper, not shipped): three commands that talk
to the kube-apiserver directly over HTTPS with the kubeconfig's client certificate, so that neither
the measurement nor the "physical limit" pays for a kubectl process per object.

  bench-gitops.py ssa NS CONCURRENCY FILE...
      Server-side applies (field manager `bench-ssa`, force) every document of the YAML FILEs into
      NS with CONCURRENCY requests in flight: the same objects a controller would write, written as
      fast as the apiserver and etcd here take them (kinds outside PATHS: /apis/<apiVersion>/..., the
      plural being the lowercase kind + "s", or "ies" for a final "y"). Prints one JSON line: objects, seconds, errors, cpu_s
      and max_rss_kib (this client's own CPU seconds and peak RSS).
  bench-gitops.py wait NS TIMEOUT_S SPEC...
      SPEC is KIND_PLURAL.GROUP/VERSION=N, e.g. kustomizations.kustomize.toolkit.fluxcd.io/v1=100.
      Lists then watches each kind in NS (one watch per kind, no polling) until N objects of it are
      ready: Ready=True, status.observedGeneration == metadata.generation, and the kind's revision
      field set (status.artifact.revision for sources, lastAppliedRevision for Kustomizations,
      lastAttemptedRevision for HelmReleases). Prints one JSON line per kind when it is done, or
      when TIMEOUT_S passes: {"kind", "want", "ready", "ms"} (ms from the start of this command;
      null when not all were ready).
  bench-gitops.py unfinalize NS PLURAL.GROUP/VERSION...
      Removes the finalizers of every object of those kinds in NS (merge patch, 8 in flight): the
      fast teardown once the controllers are stopped (the namespace's deletion then removes the
      objects and what they own).
"""
import atexit
import base64
import http.client
import json
import os
import resource
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import yaml

# kind -> (API path prefix, plural) for the objects the benchmark applies itself
PATHS = {
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "ConfigMap"): ("/api/v1", "configmaps"),
    ("v1", "Secret"): ("/api/v1", "secrets"),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments"),
    ("networking.k8s.io/v1", "Ingress"): ("/apis/networking.k8s.io/v1", "ingresses"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
}

REVISION = {
    "kustomizations": ("lastAppliedRevision",),
    "helmreleases": ("lastAttemptedRevision",),
}


class Client:
    """One HTTPS connection per thread to the kubeconfig's current cluster."""

    def __init__(self):
        cfg = json.loads(subprocess.check_output(["kubectl", "config", "view", "--raw", "--minify", "-o", "json"]))
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        self.tmp = tempfile.mkdtemp(prefix="gs-bench-")
        atexit.register(shutil.rmtree, self.tmp, True)

        def path(key):
            if key + "-data" in user or key + "-data" in cluster:
                data = (user.get(key + "-data") or cluster.get(key + "-data"))
                p = os.path.join(self.tmp, key)
                with open(p, "wb") as f:
                    f.write(base64.b64decode(data))
                os.chmod(p, 0o600)
                return p
            return user.get(key) or cluster.get(key)

        self.ctx = ssl.create_default_context(cafile=path("certificate-authority"))
        self.ctx.load_cert_chain(path("client-certificate"), path("client-key"))
        url = cluster["server"].removeprefix("https://")
        self.host, _, port = url.partition(":")
        self.port = int(port or 443)
        self.local = threading.local()

    def conn(self, timeout=60):
        c = getattr(self.local, "c", None)
        if c is None:
            c = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)
            self.local.c = c
        return c

    def request(self, method, path, body=None, ctype="application/json"):
        for attempt in range(3):
            c = self.conn()
            try:
                headers = {"Content-Type": ctype, "Accept": "application/json"}
                c.request(method, path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                return r.status, data
            except (http.client.HTTPException, OSError):
                c.close()
                self.local.c = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def plural_of(kind):
    """The resource name of a kind outside PATHS: OCIRepository -> ocirepositories."""
    k = kind.lower()
    return k[:-1] + "ies" if k.endswith("y") else k + "s"


def cmd_ssa(ns, concurrency, files):
    docs = []
    for f in files:
        with open(f) as fh:
            docs += [d for d in yaml.safe_load_all(fh) if d]
    client = Client()
    errors = []

    def apply(doc):
        prefix, plural = PATHS.get((doc["apiVersion"], doc["kind"]),
                                   (f"/apis/{doc['apiVersion']}", plural_of(doc["kind"])))
        name = doc["metadata"]["name"]
        doc["metadata"]["namespace"] = ns
        path = f"{prefix}/namespaces/{ns}/{plural}/{name}?fieldManager=bench-ssa&force=true"
        status, data = client.request("PATCH", path, json.dumps(doc), "application/apply-patch+yaml")
        if status >= 300:
            errors.append(f"{doc['kind']}/{name}: {status} {data[:200]!r}")

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(apply, docs))
    secs = time.monotonic() - t0
    t = os.times()
    print(json.dumps({"objects": len(docs), "seconds": round(secs, 2), "errors": len(errors),
                      "cpu_s": round(t.user + t.system, 2),
                      "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), flush=True)
    for e in errors[:5]:
        print(e, file=sys.stderr)
    return 1 if errors else 0


def api_path(spec, ns):
    """'kustomizations.kustomize.toolkit.fluxcd.io/v1' -> (plural, '/apis/<group>/<v>/namespaces/<ns>/<plural>')"""
    res, version = spec.split("/")
    plural, _, group = res.partition(".")
    return plural, f"/apis/{group}/{version}/namespaces/{ns}/{plural}"


def is_ready(plural, obj):
    st = obj.get("status") or {}
    if st.get("observedGeneration") != obj["metadata"].get("generation"):
        return False
    if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []):
        return False
    fields = REVISION.get(plural)
    if fields:
        return all(st.get(f) for f in fields)
    return bool((st.get("artifact") or {}).get("revision"))


def cmd_wait(ns, timeout, specs):
    client = Client()
    t0 = time.monotonic()
    deadline = t0 + timeout
    lock = threading.Lock()

    def watch(spec):
        res, want = spec.split("=")
        want = int(want)
        plural, path = api_path(res, ns)
        ready = {}
        result = None
        c = http.client.HTTPSConnection(client.host, client.port, context=client.ctx, timeout=30)
        while result is None and time.monotonic() < deadline:
            try:
                c.request("GET", path, headers={"Accept": "application/json"})
                r = c.getresponse()
                lst = json.loads(r.read())
                if r.status != 200:  # a loaded apiserver may answer 429/5xx: list again
                    time.sleep(1)
                    continue
                ready = {o["metadata"]["name"]: is_ready(plural, o) for o in lst.get("items", [])}
                rv = lst["metadata"]["resourceVersion"]
                if sum(ready.values()) >= want:
                    result = time.monotonic() - t0
                    break
                left = max(1, int(deadline - time.monotonic()))
                c.request("GET", f"{path}?watch=1&resourceVersion={rv}&allowWatchBookmarks=false&timeoutSeconds={min(left, 290)}",
                          headers={"Accept": "application/json"})
                r = c.getresponse()
                while True:
                    line = r.readline()
                    if not line:
                        break
                    ev = json.loads(line)
                    if ev.get("type") not in ("ADDED", "MODIFIED", "DELETED"):
                        break  # ERROR (e.g. 410 Gone) or BOOKMARK: list again
                    name = ev["object"]["metadata"]["name"]
                    if ev["type"] == "DELETED":
                        ready.pop(name, None)
                    else:
                        ready[name] = is_ready(plural, ev["object"])
                    if sum(ready.values()) >= want:
                        result = time.monotonic() - t0
                        break
                    if time.monotonic() >= deadline:
                        break
                c.close()
                c = http.client.HTTPSConnection(client.host, client.port, context=client.ctx, timeout=30)
            except (http.client.HTTPException, OSError):
                c.close()
                c = http.client.HTTPSConnection(client.host, client.port, context=client.ctx, timeout=30)
                time.sleep(0.5)
        c.close()
        with lock:
            print(json.dumps({"kind": plural, "want": want, "ready": sum(ready.values()),
                              "ms": None if result is None else int(result * 1000)}), flush=True)
        return result is not None

    with ThreadPoolExecutor(max_workers=len(specs)) as pool:
        ok = all(list(pool.map(watch, specs)))
    return 0 if ok else 1


def cmd_unfinalize(ns, specs):
    client = Client()
    for spec in specs:
        _, path = api_path(spec, ns)
        for _ in range(5):
            status, data = client.request("GET", path)
            if status in (200, 404):
                break
            time.sleep(1)
        if status != 200:
            continue
        names = [o["metadata"]["name"] for o in json.loads(data)["items"] if o["metadata"].get("finalizers")]

        def patch(name, path=path):
            for _ in range(5):  # a loaded apiserver may answer 429/5xx
                status, _ = client.request("PATCH", f"{path}/{name}", json.dumps({"metadata": {"finalizers": None}}),
                                           "application/merge-patch+json")
                if status < 300 or status == 404:
                    return
                time.sleep(1)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(patch, names))
    return 0


def main(argv):
    if len(argv) >= 4 and argv[1] == "ssa":
        return cmd_ssa(argv[2], int(argv[3]), argv[4:])
    if len(argv) >= 4 and argv[1] == "wait":
        return cmd_wait(argv[2], float(argv[3]), argv[4:])
    if len(argv) >= 3 and argv[1] == "unfinalize":
        return cmd_unfinalize(argv[2], argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
