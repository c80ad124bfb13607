#!/usr/bin/env python3
"""Mesh traffic simulator for pennant's end-to-end tests.

There is no real service mesh, ingress controller or application in the e2e
environment (pods are faked by kwok and never run), so this process plays
their part: every tick it reads (from watches, after one LIST each) the
routing objects pennant (or Flagger) wrote (Istio VirtualServices,
ingress-nginx canary Ingresses, Gateway API HTTPRoutes) and the Services
annotated for direct traffic, works out how much traffic each workload
(Deployment or DaemonSet) and each of its Ready pods would receive, and
exposes the Prometheus series a real mesh (istio_*), ingress-nginx
(nginx_ingress_controller_*) and the application itself (podinfo's
http_request_duration_seconds_*) would have emitted.
It also answers ``GET /route``: which destination one request would reach
(session-affinity tests).

Python 3.11 standard library only.  See README.md beside this file for the
CLI, the annotations it reads and the series it serves.

Layout of this file (pure parts first, they are unit-tested):

* ``parse_kubeconfig`` / ``parse_yaml``  - tiny YAML subset reader.
* ``bucket_fractions``                   - latency model (histogram shape).
* router kinds (``istio_splits``, ``nginx_views``, ``gatewayapi_splits``,
  ``service_views``)                     - routing objects -> ``Split`` lists.
* ``compute_flows``                      - splits + Services + workloads +
                                           pods -> requests/s per workload.
* ``route_request`` / ``pick_workload``  - one request through one routing
                                           object (``GET /route``).
* ``Metrics``                            - monotonic counters + text format.
* ``KubeClient`` / ``Simulator`` / main  - the impure shell.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import hashlib
import http.client
import http.server
import json
import math
import os
import random
import re
import shutil
import signal
import socketserver
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple

ANNOTATION_PREFIX = "sim.pennant.dev/"
ANN_RPS = ANNOTATION_PREFIX + "rps"  # Namespace: ordinary requests/s per router object
ANN_AB_RPS = ANNOTATION_PREFIX + "ab-rps"  # Namespace: requests/s per A/B (match) route
ANN_ERROR_RATE = ANNOTATION_PREFIX + "error-rate"  # pod template: fraction answered 500
ANN_LATENCY_MS = ANNOTATION_PREFIX + "latency-ms"  # pod template: typical latency
ANN_SERVICE_RPS = ANNOTATION_PREFIX + "service-rps"  # Service or Namespace: direct requests/s per Service
ANN_LOADTEST_RPS = ANNOTATION_PREFIX + "loadtest-rps"  # Namespace: load-test requests/s per <name>-canary Service

DEFAULT_ERROR_RATE = 0.0
DEFAULT_LATENCY_MS = 20.0
DEFAULT_AB_RPS = 0.0

SOURCE_WORKLOAD = "loadgen"
LOADTEST_WORKLOAD = "flagger-loadtester"  # source_workload of load-test traffic (Flagger's loadtester)
CLUSTER_DOMAIN = "svc.cluster.local"

# Istio's default buckets for istio_request_duration_milliseconds.
ISTIO_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
    60000, 300000, 600000, 1800000, 3600000,
)

# Prometheus client / podinfo default buckets (seconds) of
# http_request_duration_seconds; ingress-nginx uses the same bounds for
# nginx_ingress_controller_response_duration_seconds.  Kept in ms here.
HTTP_BUCKETS_MS: tuple[float, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

# Fixed spread of per-request latencies around the typical latency L.  It
# shapes the histogram below the bucket that holds the p99 (see
# bucket_fractions); the p99 itself is calibrated to P99_FACTOR * L.
LATENCY_SPREAD: tuple[float, ...] = (0.5, 0.7, 0.9, 1.0, 1.1)
P99_FACTOR = 1.1


def log(msg: str) -> None:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    print(f"{ts} simulator: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# YAML subset / kubeconfig
# --------------------------------------------------------------------------


class YamlError(ValueError):
    pass


def _strip_comment(s: str) -> str:
    """Remove a trailing ' # comment' that is not inside quotes."""
    quote = None
    for i, ch in enumerate(s):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or s[i - 1] in " \t"):
            return s[:i].rstrip()
    return s.rstrip()


def _scalar(s: str) -> Any:
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] == '"':
        try:
            return json.loads(s)
        except ValueError:
            return s[1:-1]
    if len(s) >= 2 and s[0] == s[-1] == "'":
        return s[1:-1].replace("''", "'")
    if s[:1] in "{[":
        return _flow(s)
    if s in ("null", "~", ""):
        return None
    if s in ("true", "True", "TRUE"):
        return True
    if s in ("false", "False", "FALSE"):
        return False
    return s


def _flow(s: str) -> Any:
    """A one-line flow collection: {a: b, c: [d, "e"]} (no multi-line flows)."""
    pos = 0

    def ws() -> None:
        nonlocal pos
        while pos < len(s) and s[pos] in " \t":
            pos += 1

    def atom(stops: str) -> str:
        nonlocal pos
        ws()
        if pos < len(s) and s[pos] in "'\"":
            q = s[pos]
            end = pos + 1
            while end < len(s):
                if s[end] == q and not (q == '"' and s[end - 1] == "\\"):
                    if q == "'" and s[end + 1:end + 2] == "'":
                        end += 2
                        continue
                    break
                end += 1
            tok, pos = s[pos:end + 1], end + 1
            return tok
        start = pos
        while pos < len(s) and s[pos] not in stops and not (s[pos] == ":" and ":" in stops and s[pos + 1:pos + 2] in (" ", "", ",", "}")):
            pos += 1
        return s[start:pos].strip()

    def value(stops: str) -> Any:
        nonlocal pos
        ws()
        if pos < len(s) and s[pos] in "{[":
            return coll()
        return _scalar(atom(stops))

    def coll() -> Any:
        nonlocal pos
        close = "}" if s[pos] == "{" else "]"
        is_map = close == "}"
        pos += 1
        out: Any = {} if is_map else []
        while True:
            ws()
            if pos >= len(s):
                raise YamlError(f"unterminated flow collection: {s!r}")
            if s[pos] == close:
                pos += 1
                return out
            if is_map:
                key = _scalar(atom(":,}"))
                ws()
                val = None
                if pos < len(s) and s[pos] == ":":
                    pos += 1
                    val = value(",}")
                out[str(key)] = val
            else:
                out.append(value(",]"))
            ws()
            if pos < len(s) and s[pos] == ",":
                pos += 1

    result = coll()
    ws()
    if pos != len(s):
        raise YamlError(f"trailing text after flow collection: {s!r}")
    return result


def _split_key(content: str) -> tuple[str, str] | None:
    """Split 'key: value' / 'key:' (key possibly quoted).  None if no key."""
    if content[:1] in "'\"":
        q = content[0]
        end = content.find(q, 1)
        if end < 0:
            return None
        key, rest = content[1:end], content[end + 1:]
        if not rest.startswith(":"):
            return None
        return key, rest[1:].strip()
    idx = content.find(": ")
    if idx < 0:
        if content.endswith(":"):
            return content[:-1].strip(), ""
        return None
    return content[:idx].strip(), content[idx + 2:].strip()


def parse_yaml(text: str) -> Any:
    """Parse the block-style YAML subset kubeconfigs are written in.

    Supports nested mappings, block sequences (indented or not under their
    key), '- key: value' items, quoted and plain scalars, '{}'/'[]', comments.
    Not supported: anchors, multi-line scalars, flow collections with content.
    """
    lines: list[list[Any]] = []
    for raw in text.splitlines():
        if raw.strip() in ("---", "...") and not raw.startswith(" "):
            continue
        body = _strip_comment(raw.replace("\t", "    "))
        if not body.strip():
            continue
        indent = len(body) - len(body.lstrip(" "))
        lines.append([indent, body.strip()])

    def is_item(c: str) -> bool:
        return c == "-" or c.startswith("- ")

    def block(i: int, indent: int) -> tuple[Any, int]:
        if i >= len(lines):
            return None, i
        if is_item(lines[i][1]):
            return seq(i, indent)
        return mapping(i, indent)

    def seq(i: int, indent: int) -> tuple[list, int]:
        out: list = []
        while i < len(lines) and lines[i][0] == indent and is_item(lines[i][1]):
            rest = lines[i][1][1:]
            stripped = rest.lstrip(" ")
            if not stripped:
                if i + 1 < len(lines) and lines[i + 1][0] > indent:
                    val, i = block(i + 1, lines[i + 1][0])
                else:
                    val, i = None, i + 1
                out.append(val)
                continue
            if stripped[:1] in "{[" or (_split_key(stripped) is None and not is_item(stripped)):
                out.append(_scalar(stripped))
                i += 1
                continue
            # '- key: value' : the item is a block starting at the column of key.
            lines[i] = [indent + 1 + (len(rest) - len(stripped)), stripped]
            val, i = block(i, lines[i][0])
            out.append(val)
        return out, i

    def mapping(i: int, indent: int) -> tuple[dict, int]:
        out: dict = {}
        while i < len(lines) and lines[i][0] == indent and not is_item(lines[i][1]):
            kv = _split_key(lines[i][1])
            if kv is None:
                raise YamlError(f"cannot parse line: {lines[i][1]!r}")
            key, value = kv
            i += 1
            if value:
                out[key] = _scalar(value)
                continue
            if i < len(lines) and (
                lines[i][0] > indent or (lines[i][0] == indent and is_item(lines[i][1]))
            ):
                out[key], i = block(i, lines[i][0])
            else:
                out[key] = None
        return out, i

    if not lines:
        return None
    value, i = block(0, lines[0][0])
    if i != len(lines):
        raise YamlError(f"unexpected indentation at: {lines[i][1]!r}")
    return value


@dataclass
class KubeConfig:
    server: str
    ca_data: bytes | None = None
    ca_file: str | None = None
    cert_data: bytes | None = None
    cert_file: str | None = None
    key_data: bytes | None = None
    key_file: str | None = None
    token: str | None = None
    insecure: bool = False


def _named(items: Any, name: str | None, inner: str) -> dict:
    if not isinstance(items, list) or not items:
        return {}
    for it in items:
        if isinstance(it, dict) and (name is None or it.get("name") == name):
            return it.get(inner) or {}
    return {}


def parse_kubeconfig(text: str, base_dir: str = ".") -> KubeConfig:
    """Resolve current-context (or the first entries) of a kubeconfig."""
    try:
        doc = json.loads(text)
    except ValueError:
        doc = parse_yaml(text)
    if not isinstance(doc, dict):
        raise YamlError("kubeconfig is not a mapping")
    ctx = _named(doc.get("contexts"), doc.get("current-context"), "context")
    ctx = ctx if isinstance(ctx, dict) else {}
    cluster = _named(doc.get("clusters"), ctx.get("cluster"), "cluster") or _named(
        doc.get("clusters"), None, "cluster"
    )
    user = _named(doc.get("users"), ctx.get("user"), "user") or _named(
        doc.get("users"), None, "user"
    )
    server = cluster.get("server")
    if not server:
        raise YamlError("kubeconfig has no cluster server")

    def b64(v: Any) -> bytes | None:
        return base64.b64decode(v) if v else None

    def path(v: Any) -> str | None:
        return os.path.join(base_dir, v) if v else None

    token = user.get("token")
    if not token and user.get("tokenFile"):
        with open(path(user["tokenFile"]), encoding="utf-8") as f:
            token = f.read().strip()
    return KubeConfig(
        server=str(server).rstrip("/"),
        ca_data=b64(cluster.get("certificate-authority-data")),
        ca_file=path(cluster.get("certificate-authority")),
        cert_data=b64(user.get("client-certificate-data")),
        cert_file=path(user.get("client-certificate")),
        key_data=b64(user.get("client-key-data")),
        key_file=path(user.get("client-key")),
        token=str(token) if token else None,
        insecure=cluster.get("insecure-skip-tls-verify") in (True, "true"),
    )


# --------------------------------------------------------------------------
# Latency model
# --------------------------------------------------------------------------


def bucket_fractions(latency_ms: float, buckets: tuple[float, ...] = ISTIO_BUCKETS_MS) -> list[float]:
    """Cumulative fraction of requests with duration <= each bucket bound.

    Calibrated so that Prometheus' histogram_quantile(0.99, ...) (linear
    interpolation inside a bucket) returns exactly P99_FACTOR * latency_ms
    for large counts:  let (lo, hi] be the bucket holding T = 1.1*L and
    t = (T-lo)/(hi-lo); then F(hi) = 1 and F(lo) = (0.99-t)/(1-t), so the
    interpolated 99th percentile is lo + (hi-lo)*(0.99-F(lo))/(1-F(lo)) = T.
    F(hi) == 1 exactly keeps every request in that bucket, so even with few
    requests the p99 never lands above hi.  Below lo, the mass F(lo) is
    shaped like LATENCY_SPREAD * L.  The +Inf bucket (always 1) is not in
    the returned list.
    """
    lat = max(float(latency_ms), 1e-6)
    target = P99_FACTOR * lat
    k = bisect.bisect_left(buckets, target)  # buckets[k-1] < target <= buckets[k]
    if k >= len(buckets):  # beyond the last finite bound: everything in +Inf
        return [0.0] * len(buckets)
    lo = buckets[k - 1] if k > 0 else 0.0
    hi = buckets[k]
    t = (target - lo) / (hi - lo)
    f_lo = max(0.0, (0.99 - t) / (1.0 - t)) if t < 1.0 else 0.0
    values = sorted(lat * s for s in LATENCY_SPREAD)

    def spread_cdf(b: float) -> float:
        return bisect.bisect_right(values, b) / len(values)

    g_lo = spread_cdf(lo)
    out = []
    for i, b in enumerate(buckets):
        if i >= k:
            out.append(1.0)
        elif i == k - 1:
            out.append(f_lo)
        else:
            out.append(f_lo * spread_cdf(b) / g_lo if g_lo > 0 else 0.0)
    return out


def histogram_quantile(q: float, bounds: list[float], cumulative: list[float]) -> float:
    """Prometheus' histogram_quantile for one histogram (for tests/debugging).

    bounds/cumulative include the final +Inf bucket.
    """
    if not cumulative or cumulative[-1] <= 0:
        return math.nan
    rank = q * cumulative[-1]
    idx = len(cumulative) - 1
    for i in range(len(cumulative) - 1):
        if cumulative[i] >= rank:
            idx = i
            break
    if idx == len(cumulative) - 1:
        return bounds[-2]
    start, end, count = 0.0, bounds[idx], cumulative[idx]
    if idx > 0:
        start = bounds[idx - 1]
        count -= cumulative[idx - 1]
        rank -= cumulative[idx - 1]
    return start + (end - start) * (rank / count)


# --------------------------------------------------------------------------
# Router kinds: routing object -> splits
# --------------------------------------------------------------------------


class Split(NamedTuple):
    """Share of one traffic class of one routing object sent to a Service.

    ``weight`` is a percentage of the class's rate.  ``traffic`` is:
      * "main"   - the ordinary traffic (namespace rps annotation / --default-rps)
      * "ab"     - one A/B (header/cookie match) route; each such route gets
                   the namespace's ab-rps, shared by its weights
      * "mirror" - a copy of the main traffic (weight = mirror percentage)
      * "ab-mirror" - a copy of an A/B route's traffic
      * "service" - direct traffic to a Service (no routing object)
      * "loadtest" - a load tester's requests to a canary Service (loadtest_views)
    ``canary`` is router specific: for ingress-nginx, the upstream name
    ``<ns>-<svc>-<port>`` of a canary Ingress backend ("" otherwise), exported
    as the ``canary`` label of the nginx_* series.
    """

    namespace: str
    host: str  # short Service name
    weight: float
    traffic: str = "main"
    canary: str = ""


def normalize_host(host: str, default_ns: str) -> tuple[str, str] | None:
    """'svc', 'svc.ns', 'svc.ns.svc', 'svc.ns.svc.cluster.local' -> (ns, svc).

    Hosts outside the cluster (anything else with dots) give None.
    """
    host = (host or "").strip().rstrip(".")
    if not host:
        return None
    parts = host.split(".")
    if len(parts) == 1:
        return default_ns, parts[0]
    if len(parts) == 2:
        return parts[1], parts[0]
    if len(parts) >= 3 and ".".join(parts[2:]) in ("svc", CLUSTER_DOMAIN):
        return parts[1], parts[0]
    return None


def _num(v: Any, default: float = 0.0) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return f if math.isfinite(f) else default


def _weighted(dests: list[tuple[str, float]], ns: str, traffic: str) -> list[Split]:
    """Destinations with raw weights -> Splits whose weights sum to 100."""
    resolved = []
    for host, w in dests:
        nh = normalize_host(host, ns)
        if nh is not None:
            resolved.append((nh, max(0.0, w)))
    total = sum(w for _, w in resolved)
    if total <= 0:
        return [Split(n, h, 0.0, traffic) for (n, h), _ in resolved]
    return [Split(n, h, 100.0 * w / total, traffic) for (n, h), w in resolved]


def _istio_route(route: dict, ns: str, traffic: str) -> list[Split]:
    dests: list[tuple[str, float]] = []
    items = route.get("route") or []
    for d in items:
        dest = (d or {}).get("destination") or {}
        host = dest.get("host")
        if not host:
            continue
        # A lone destination without a weight gets everything (Istio default).
        w = _num(d.get("weight"), 100.0 if len(items) == 1 else 0.0)
        dests.append((host, w))
    out = _weighted(dests, ns, traffic)
    mirror_traffic = "mirror" if traffic == "main" else "ab-mirror"
    mirror = route.get("mirror")
    if isinstance(mirror, dict) and mirror.get("host"):
        pct = 100.0
        if isinstance(route.get("mirrorPercentage"), dict):
            pct = _num(route["mirrorPercentage"].get("value"), 100.0)
        elif route.get("mirrorPercent") is not None:  # deprecated int field
            pct = _num(route.get("mirrorPercent"), 100.0)
        nh = normalize_host(mirror["host"], ns)
        if nh is not None:
            out.append(Split(nh[0], nh[1], min(100.0, max(0.0, pct)), mirror_traffic))
    for m in route.get("mirrors") or []:  # Istio >= 1.22 multiple mirrors
        dest = (m or {}).get("destination") or {}
        nh = normalize_host(dest.get("host", ""), ns)
        if nh is None:
            continue
        pct = _num(((m.get("percentage") or {}).get("value")), 100.0)
        out.append(Split(nh[0], nh[1], min(100.0, max(0.0, pct)), mirror_traffic))
    return out


def istio_splits(vs: dict) -> list[Split]:
    """Istio VirtualService -> splits.

    The first spec.http route without a 'match' carries the ordinary traffic
    (routes after it are unreachable); if every route has a match the last
    one does.  The match routes before it are A/B routes ("ab" traffic).
    Destinations: route[*].destination.host with weight; mirror +
    mirrorPercentage (or mirrors[]) copy the route's traffic.
    """
    ns = ((vs.get("metadata") or {}).get("namespace")) or "default"
    routes = [r for r in ((vs.get("spec") or {}).get("http") or []) if isinstance(r, dict)]
    if not routes:
        return []
    main_idx = len(routes) - 1
    for i, r in enumerate(routes):
        if not r.get("match"):
            main_idx = i
            break
    out: list[Split] = []
    for i, r in enumerate(routes[: main_idx + 1]):
        out.extend(_istio_route(r, ns, "main" if i == main_idx else "ab"))
    return out


# --- ingress-nginx -------------------------------------------------------

NGINX_CANARY_SUFFIX = "/canary"


def nginx_canary_prefix(ing: dict) -> str | None:
    """Annotation prefix of a canary Ingress, None for an ordinary one.

    An Ingress is a canary when some annotation ``<prefix>/canary`` is
    "true" (ingress-nginx's ``nginx.ingress.kubernetes.io``, or the prefix
    configured in pennant/Flagger, ``-ingress-annotations-prefix``).
    """
    for k, v in sorted(_annotations(ing.get("metadata")).items()):
        if isinstance(k, str) and k.endswith(NGINX_CANARY_SUFFIX) and len(k) > len(NGINX_CANARY_SUFFIX):
            if str(v).strip().lower() == "true":
                return k[: -len(NGINX_CANARY_SUFFIX)]
    return None


class IngressPath(NamedTuple):
    host: str
    path: str
    service: str
    port: str  # number or name, as written


def ingress_paths(ing: dict) -> list[IngressPath]:
    """networking.k8s.io/v1 Ingress -> its Service backends, one per
    spec.rules[*].http.paths[*] (path default "/"), or spec.defaultBackend
    (host "", path "/") when no rule has a Service backend."""
    spec = ing.get("spec") or {}
    out: list[IngressPath] = []

    def backend(b: Any) -> tuple[str, str] | None:
        svc = (b or {}).get("service") if isinstance(b, dict) else None
        if not isinstance(svc, dict) or not svc.get("name"):
            return None
        port = svc.get("port") or {}
        p = port.get("number") if port.get("number") is not None else port.get("name")
        return str(svc["name"]), "" if p is None else str(p)

    for rule in spec.get("rules") or []:
        if not isinstance(rule, dict):
            continue
        for path in ((rule.get("http") or {}).get("paths")) or []:
            b = backend((path or {}).get("backend"))
            if b is not None:
                out.append(IngressPath(str(rule.get("host") or ""), str(path.get("path") or "/"), b[0], b[1]))
    if not out:
        b = backend(spec.get("defaultBackend"))
        if b is not None:
            out.append(IngressPath("", "/", b[0], b[1]))
    return out


def nginx_views(ingresses: list[dict]) -> list[RouteView]:
    """ingress-nginx canary model: all Ingresses -> one view per ordinary Ingress.

    Each ordinary (non-canary) Ingress carries the ordinary traffic ("main",
    namespace rps) and, when the namespace's ab-rps > 0, the A/B clients'
    traffic ("ab": requests carrying the canary header/cookie), spread evenly
    over its (host, path) backends.  A canary Ingress (see
    nginx_canary_prefix) in the SAME namespace with the same host and path
    takes over part of it, as ingress-nginx does (the first such canary by
    name; ingress-nginx supports one):
      * main: ``<prefix>/canary-weight`` out of ``canary-weight-total``
        (default 100) goes to the canary backend, the rest to the ordinary one;
      * ab: everything to the canary backend when ``canary-by-header`` or
        ``canary-by-cookie`` is set (the A/B clients send what it asks for),
        else split by the weight like main.
    Canary-routed splits get ``canary=<ns>-<canary svc>-<port>`` (the
    upstream name ingress-nginx puts in its ``canary`` label); the view's
    name is the ordinary Ingress (the ``ingress`` label).  A canary Ingress
    without an ordinary partner carries nothing.  Malformed objects are
    skipped.
    """
    ordinary: list[dict] = []
    canaries: dict[tuple[str, str, str], tuple[dict, str, IngressPath]] = {}
    for ing in sorted((i for i in ingresses if _has_name(i)), key=lambda i: i["metadata"]["name"]):
        try:
            prefix = nginx_canary_prefix(ing)
            paths = ingress_paths(ing)
        except (AttributeError, TypeError):
            continue
        if prefix is None:
            ordinary.append(ing)
            continue
        ns = ing["metadata"].get("namespace") or "default"
        for p in paths:
            canaries.setdefault((ns, p.host, p.path), (ing, prefix, p))
    views: list[RouteView] = []
    for ing in ordinary:
        ns = ing["metadata"].get("namespace") or "default"
        try:
            paths = ingress_paths(ing)
        except (AttributeError, TypeError):
            continue
        share = 100.0 / len(paths) if paths else 0.0
        splits: list[Split] = []
        for p in paths:
            paired = canaries.get((ns, p.host, p.path))
            if paired is None:
                splits.append(Split(ns, p.service, share, "main"))
                splits.append(Split(ns, p.service, share, "ab"))
                continue
            can, prefix, cp = paired
            ann = _annotations(can.get("metadata"))
            total = annotation_float(ann, prefix + "/canary-weight-total", 100.0, 0.0, 1e9)
            w = annotation_float(ann, prefix + "/canary-weight", 0.0, 0.0, 1e9)
            frac = min(1.0, w / total) if total > 0 else 0.0
            label = f"{ns}-{cp.service}-{cp.port}"
            by = any(str(ann.get(prefix + k) or "").strip() for k in ("/canary-by-header", "/canary-by-cookie"))
            for traffic in ("main", "ab"):
                f = 1.0 if traffic == "ab" and by else frac
                splits.append(Split(ns, p.service, share * (1.0 - f), traffic))
                splits.append(Split(ns, cp.service, share * f, traffic, label))
        views.append(RouteView("nginx", ns, ing["metadata"]["name"], splits))
    return views


# --- Gateway API -----------------------------------------------------------


def _mirror_pct(f: dict) -> float:
    if f.get("percent") is not None:
        return min(100.0, max(0.0, _num(f.get("percent"), 100.0)))
    frac = f.get("fraction")
    if isinstance(frac, dict):
        den = _num(frac.get("denominator"), 100.0)
        return min(100.0, max(0.0, 100.0 * _num(frac.get("numerator"), 0.0) / den)) if den > 0 else 0.0
    return 100.0


def _gw_ab(rule: dict) -> bool:
    return any(isinstance(m, dict) and (m.get("headers") or m.get("queryParams")) for m in rule.get("matches") or [])


def _gw_service_ref(ref: Any, ns: str) -> str | None:
    """BackendRef -> 'svc.ns' for core Services (others are not simulated)."""
    if not isinstance(ref, dict) or not ref.get("name"):
        return None
    if (ref.get("group") or "") != "" or (ref.get("kind") or "Service") != "Service":
        return None
    return f"{ref['name']}.{ref.get('namespace') or ns}"


def gatewayapi_splits(route: dict) -> list[Split]:
    """Gateway API HTTPRoute (gateway.networking.k8s.io/v1 or v1beta1) -> splits.

    Same main/A-B rule as Istio: the first spec.rules entry none of whose
    matches has headers or queryParams carries the ordinary traffic (rules
    after it are ignored); if every rule has them, the last one does.  The
    header/query rules before it (A/B rules, session-affinity sticky rules
    on the Cookie header) are "ab" routes.  Destinations: backendRefs of
    kind Service {name, namespace (default the route's), weight (default
    1)}, normalised to 100; RequestMirror filters (percent or fraction,
    default 100 %) copy the rule's traffic.
    """
    ns = ((route.get("metadata") or {}).get("namespace")) or "default"
    rules = [r for r in ((route.get("spec") or {}).get("rules") or []) if isinstance(r, dict)]
    if not rules:
        return []
    main_idx = len(rules) - 1
    for i, r in enumerate(rules):
        if not _gw_ab(r):
            main_idx = i
            break
    out: list[Split] = []
    for i, r in enumerate(rules[: main_idx + 1]):
        traffic = "main" if i == main_idx else "ab"
        dests = []
        for ref in r.get("backendRefs") or []:
            host = _gw_service_ref(ref, ns)
            if host is not None:
                dests.append((host, _num(ref.get("weight"), 1.0)))
        out.extend(_weighted(dests, ns, traffic))
        for f in r.get("filters") or []:
            if not isinstance(f, dict) or f.get("type") != "RequestMirror":
                continue
            m = f.get("requestMirror") or {}
            host = _gw_service_ref(m.get("backendRef"), ns)
            nh = normalize_host(host, ns) if host else None
            if nh is not None:
                out.append(Split(nh[0], nh[1], _mirror_pct(m), "mirror" if traffic == "main" else "ab-mirror"))
    return out


# --- plain Kubernetes Services ----------------------------------------------


def service_views(
    services: dict[tuple[str, str], dict],
    namespaces: dict[str, dict],
    routed: set[tuple[str, str]],
    warn: Callable[[str], None] | None = None,
) -> list[RouteView]:
    """Direct traffic to Services (provider ``kubernetes``: no routing object).

    A Service with a selector gets ``sim.pennant.dev/service-rps`` requests/s
    ("service" traffic, weight 100) when:
      * the Service itself carries the annotation (always; "0" opts out), or
      * its Namespace carries it and the Service is not the destination of a
        routing object (``routed``: (ns, svc) of every split) - so a mesh or
        ingress keeps sole control of the Services it routes.
    In pennant's kubernetes blue/green the apex ``<apex>`` and ``<apex>-primary``
    select the primary pods and ``<apex>-canary`` the canary pods, so with the
    namespace annotation each of the three gets the rate (the canary pods see
    what a load tester hitting ``<apex>-canary`` would send).
    """
    out: list[RouteView] = []
    for (ns, name), svc in sorted(services.items()):
        sel = (svc.get("spec") or {}).get("selector")
        if not isinstance(sel, dict) or not sel:
            continue
        ann = _annotations(svc.get("metadata"))
        if ANN_SERVICE_RPS in ann:
            rps = annotation_float(ann, ANN_SERVICE_RPS, 0.0, 0.0, 1e7, warn)
        else:
            ns_ann = _annotations((namespaces.get(ns) or {}).get("metadata"))
            if ANN_SERVICE_RPS not in ns_ann or (ns, name) in routed:
                continue
            rps = annotation_float(ns_ann, ANN_SERVICE_RPS, 0.0, 0.0, 1e7, warn)
        out.append(RouteView("service", ns, name, [Split(ns, name, 100.0, "service")], rates={"service": rps}))
    return out


def loadtest_views(
    services: dict[tuple[str, str], dict],
    namespaces: dict[str, dict],
    warn: Callable[[str], None] | None = None,
) -> list[RouteView]:
    """Load tests (Flagger's loadtester running ``hey`` against
    ``http://<name>-canary.<ns>:<port>/``): a Namespace annotated
    ``sim.pennant.dev/loadtest-rps`` sends that many requests/s straight to
    each of its ``<name>-canary`` Services with a selector ("loadtest"
    traffic, weight 100, whatever the routing objects say), from
    ``source_workload="flagger-loadtester"`` on the istio_* series as a mesh's
    destination reporter records it (and on the pods' http_* series)."""
    out: list[RouteView] = []
    for (ns, name), svc in sorted(services.items()):
        ns_ann = _annotations((namespaces.get(ns) or {}).get("metadata"))
        sel = (svc.get("spec") or {}).get("selector")
        if ANN_LOADTEST_RPS not in ns_ann or not name.endswith("-canary") or not isinstance(sel, dict) or not sel:
            continue
        rps = annotation_float(ns_ann, ANN_LOADTEST_RPS, 0.0, 0.0, 1e7, warn)
        out.append(RouteView("istio", ns, LOADTEST_WORKLOAD, [Split(ns, name, 100.0, "loadtest")],
                             rates={"loadtest": rps}, source=LOADTEST_WORKLOAD))
    return out


@dataclass(frozen=True)
class RouterKind:
    """A kind of routing object: its cluster-wide LIST path(s), tried in
    order until one is not 404, and either a per-object pure function
    ``splits(obj) -> list[Split]`` (one RouteView per object) or a pure
    function ``views(objs) -> list[RouteView]`` over all objects of the kind
    (for kinds whose objects pair up, like ingress-nginx canaries)."""

    name: str
    list_paths: tuple[str, ...]
    splits: Callable[[dict], list[Split]] | None = None
    views: Callable[[list[dict]], list[RouteView]] | None = None


ROUTER_KINDS: list[RouterKind] = [
    RouterKind(
        name="istio",
        list_paths=(
            "/apis/networking.istio.io/v1/virtualservices",
            "/apis/networking.istio.io/v1beta1/virtualservices",
        ),
        splits=istio_splits,
    ),
    RouterKind(
        name="nginx",
        list_paths=("/apis/networking.k8s.io/v1/ingresses",),
        views=nginx_views,
    ),
    RouterKind(
        name="httproute",
        list_paths=(
            "/apis/gateway.networking.k8s.io/v1/httproutes",
            "/apis/gateway.networking.k8s.io/v1beta1/httproutes",
        ),
        splits=gatewayapi_splits,
    ),
]
# Plain Services are not a RouterKind: service_views needs the other kinds'
# destinations, so Simulator.snapshot adds them last.


# --------------------------------------------------------------------------
# Splits + cluster state -> per-workload flows
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Behaviour:
    error_rate: float = DEFAULT_ERROR_RATE
    latency_ms: float = DEFAULT_LATENCY_MS


@dataclass(frozen=True)
class Flow:
    """requests/s reaching one workload through one Service.

    ``router``/``route`` name the routing object that sent it ("istio",
    "nginx", "httproute" or "service", and its name), ``canary`` is the
    split's router-specific canary label, ``pods`` the workload's Ready pods
    (the traffic is spread evenly over them for the per-pod http_* series),
    ``traffic`` the split's class ("main", "ab", "service", or a mirror's
    "mirror"/"ab-mirror", whose answers reach no client).
    """

    namespace: str
    service: str
    workload: str
    rps: float
    behaviour: Behaviour
    router: str = "istio"
    route: str = ""
    canary: str = ""
    pods: tuple[str, ...] = ()
    source: str = SOURCE_WORKLOAD  # the sending workload (Istio's source_workload)
    traffic: str = "main"


@dataclass
class RouteView:
    """What one routing object did this tick (for the change log and gauges)."""

    router: str
    namespace: str
    name: str
    splits: list[Split]
    # (split, workload name or None, rps reaching that workload)
    targets: list[tuple[Split, str | None, float]] = field(default_factory=list)
    # Rates by traffic class overriding the namespace's (service_views).
    rates: dict[str, float] | None = None
    # The workload sending this traffic (loadtest_views: the load tester).
    source: str = SOURCE_WORKLOAD


def _annotations(meta: Any) -> dict:
    if not isinstance(meta, dict):
        return {}
    a = meta.get("annotations")
    return a if isinstance(a, dict) else {}


def annotation_float(
    ann: dict, key: str, default: float, lo: float = 0.0, hi: float = math.inf,
    warn: Callable[[str], None] | None = None,
) -> float:
    if key not in ann:
        return default
    try:
        v = float(str(ann[key]).strip())
        if not math.isfinite(v):
            raise ValueError("not finite")
    except ValueError:
        if warn:
            warn(f"bad value {ann[key]!r} for {key}; using {default}")
        return default
    return min(hi, max(lo, v))


def behaviour_of(deploy: dict, warn: Callable[[str], None] | None = None) -> Behaviour:
    """Behaviour annotations of a Deployment's or DaemonSet's pod template."""
    tmpl_meta = (((deploy.get("spec") or {}).get("template") or {}).get("metadata")) or {}
    ann = _annotations(tmpl_meta)
    return Behaviour(
        error_rate=annotation_float(ann, ANN_ERROR_RATE, DEFAULT_ERROR_RATE, 0.0, 1.0, warn),
        latency_ms=annotation_float(ann, ANN_LATENCY_MS, DEFAULT_LATENCY_MS, 0.001, 1e9, warn),
    )


def workload_kind(w: dict) -> str:
    """"Deployment" or "DaemonSet" (LIST items carry no kind: Simulator tags them)."""
    return "DaemonSet" if w.get("kind") == "DaemonSet" else "Deployment"


def ready_replicas(deploy: dict) -> int:
    """Ready pods of a workload: Deployment status.readyReplicas, DaemonSet
    status.numberReady (0 once pennant parks it on a nodeSelector matching
    no node)."""
    key = "numberReady" if workload_kind(deploy) == "DaemonSet" else "readyReplicas"
    return int(_num((deploy.get("status") or {}).get(key), 0.0))


def pod_ready(pod: dict) -> bool:
    """Running, not terminating, condition Ready=True."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    if meta.get("deletionTimestamp") or status.get("phase") != "Running":
        return False
    return any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


class ByLabels:
    """Objects grouped by (namespace, label, value), so a selector's matches are looked up
    instead of scanned: with a scan, a tick cost O(Services × workloads + workloads × pods),
    2.7 s at 300 apps. Iterating it gives every object, as the list it was built from."""

    def __init__(self, objs: Iterable[dict], labels_of: Callable[[dict], Any]) -> None:
        self.objs = list(objs)
        self._by: dict[tuple[Any, str, str], list[dict]] = {}
        for o in self.objs:
            ns = (o.get("metadata") or {}).get("namespace")
            labels = labels_of(o)
            if isinstance(labels, dict):
                for k, v in labels.items():
                    if isinstance(v, str):
                        self._by.setdefault((ns, k, v), []).append(o)

    def __iter__(self):
        return iter(self.objs)

    def candidates(self, ns: Any, selector: dict) -> list[dict]:
        """The objects of ``ns`` that carry the selector's first pair (a superset of its
        matches); every object when that pair is not a string (the caller's check rejects it)."""
        k, v = next(iter(selector.items()))
        return self._by.get((ns, k, v), []) if isinstance(v, str) else self.objs


def template_labels(w: dict) -> Any:
    return (((w.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels")


def pod_labels(p: dict) -> Any:
    return (p.get("metadata") or {}).get("labels")


def workload_pods(w: dict, pods: Iterable[dict]) -> list[str]:
    """Names of the Ready pods of a workload, sorted.

    A pod belongs to it when it is in the workload's namespace, its labels
    match the workload's spec.selector.matchLabels (else the template
    labels), and its controller ownerReference (if any) is the workload
    itself (DaemonSet) or one of its ReplicaSets ``<deployment>-<hash>``.
    """
    meta = w.get("metadata") or {}
    ns, name, kind = meta.get("namespace"), meta.get("name"), workload_kind(w)
    spec = w.get("spec") or {}
    sel = ((spec.get("selector") or {}).get("matchLabels")) or (
        ((spec.get("template") or {}).get("metadata") or {}).get("labels")) or {}
    if not isinstance(sel, dict) or not sel:
        return []
    out = []
    for p in pods.candidates(ns, sel) if isinstance(pods, ByLabels) else pods:
        pm = p.get("metadata") or {}
        if pm.get("namespace") != ns or not isinstance(pm.get("name"), str):
            continue
        labels = pm.get("labels") or {}
        if not all(labels.get(k) == v for k, v in sel.items()):
            continue
        owner = next((o for o in pm.get("ownerReferences") or [] if isinstance(o, dict) and o.get("controller")), None)
        if owner is not None:
            if kind == "DaemonSet" and not (owner.get("kind") == "DaemonSet" and owner.get("name") == name):
                continue
            if kind == "Deployment" and not (
                owner.get("kind") == "ReplicaSet" and str(owner.get("name", "")).rpartition("-")[0] == name
            ):
                continue
        if pod_ready(p):
            out.append(pm["name"])
    return sorted(out)


def workloads_for_service(svc: dict | None, deployments: Iterable[dict]) -> list[dict]:
    """Workloads (Deployments, DaemonSets) in the Service's namespace whose
    pod template labels match the Service's selector (an empty/missing
    selector matches nothing)."""
    if not svc:
        return []
    selector = (svc.get("spec") or {}).get("selector")
    if not isinstance(selector, dict) or not selector:
        return []
    ns = (svc.get("metadata") or {}).get("namespace")
    out = []
    for d in deployments.candidates(ns, selector) if isinstance(deployments, ByLabels) else deployments:
        if (d.get("metadata") or {}).get("namespace") != ns:
            continue
        labels = template_labels(d) or {}
        if all(labels.get(k) == v for k, v in selector.items()):
            out.append(d)
    return sorted(out, key=lambda d: d["metadata"].get("name", ""))


def class_rates(ns_obj: dict | None, default_rps: float, warn: Callable[[str], None] | None = None) -> dict[str, float]:
    ann = _annotations((ns_obj or {}).get("metadata"))
    main = annotation_float(ann, ANN_RPS, default_rps, 0.0, 1e7, warn)
    ab = annotation_float(ann, ANN_AB_RPS, DEFAULT_AB_RPS, 0.0, 1e7, warn)
    return {"main": main, "ab": ab, "mirror": main, "ab-mirror": ab}


def compute_flows(
    views: list[RouteView],
    namespaces: dict[str, dict],
    services: dict[tuple[str, str], dict],
    deployments: list[dict],
    default_rps: float,
    warn: Callable[[str], None] | None = None,
    pods: list[dict] | None = None,
) -> list[Flow]:
    """Fill in each view's targets and return the flows to account this tick.

    A split's rate is class_rate(routing object's namespace) * weight/100
    (or the view's own ``rates``); it reaches the workloads (``deployments``:
    Deployments and DaemonSets) behind the destination Service in proportion
    to their ready replicas; a workload with no ready replica gets nothing
    (the requests fail before any destination reporter sees them).  Each
    flow lists its workload's Ready ``pods`` (none when pods is None).
    """
    flows: list[Flow] = []
    pod_cache: dict[int, tuple[str, ...]] = {}
    workloads = ByLabels(deployments, template_labels)
    pods_by = None if pods is None else ByLabels(pods, pod_labels)

    def pods_of(d: dict) -> tuple[str, ...]:
        if pods_by is None:
            return ()
        if id(d) not in pod_cache:
            pod_cache[id(d)] = tuple(workload_pods(d, pods_by))
        return pod_cache[id(d)]

    for view in views:
        rates = view.rates if view.rates is not None else class_rates(namespaces.get(view.namespace), default_rps, warn)
        view.targets = []
        for sp in view.splits:
            rps = rates.get(sp.traffic, 0.0) * sp.weight / 100.0
            deps = workloads_for_service(services.get((sp.namespace, sp.host)), workloads)
            ready = [(d, ready_replicas(d)) for d in deps]
            total_ready = sum(r for _, r in ready if r > 0)
            if total_ready <= 0:
                view.targets.append((sp, None, 0.0))
                continue
            for d, r in ready:
                if r <= 0:
                    continue
                share = rps * r / total_ready
                name = d["metadata"]["name"]
                view.targets.append((sp, name, share))
                if share > 0:
                    flows.append(Flow(sp.namespace, sp.host, name, share, behaviour_of(d, warn),
                                      view.router, view.name, sp.canary, pods_of(d), view.source,
                                      sp.traffic))
    return flows


class Readiness(NamedTuple):
    """requests/s routed to one Service this tick, and whether a Ready pod stood behind it."""

    namespace: str
    service: str
    ready: bool
    rps: float


def readiness_rates(
    views: list[RouteView],
    namespaces: dict[str, dict],
    services: dict[tuple[str, str], dict],
    workloads: list[dict],
    default_rps: float,
    pods: list[dict],
) -> list[Readiness]:
    """Per routed Service (rps > 0, the Service exists): was any pod of the workloads behind
    it Ready (``workload_pods``, from the pod LIST, not the workloads' status)?

    Endpoints hold Ready pods only, so a request reaches a pod that is not Ready exactly when
    it is routed to a Service none of whose pods is Ready (no pod at all counts too: a canary
    scaled to zero while it still has weight); a real mesh answers it 503.
    """
    rates_of: dict[str, dict[str, float]] = {}
    ready_of: dict[tuple[str, str], bool] = {}
    by_template = ByLabels(workloads, template_labels)
    pods_by = ByLabels(pods, pod_labels)
    out: dict[tuple[str, str], list] = {}
    for view in views:
        rates = view.rates if view.rates is not None else rates_of.setdefault(
            view.namespace, class_rates(namespaces.get(view.namespace), default_rps))
        for sp in view.splits:
            rps = rates.get(sp.traffic, 0.0) * sp.weight / 100.0
            key = (sp.namespace, sp.host)
            svc = services.get(key)
            # a load tester hitting a scaled-down canary is not the router's doing
            if rps <= 0 or svc is None or sp.traffic == "loadtest":
                continue
            if key not in ready_of:
                ready_of[key] = any(workload_pods(w, pods_by) for w in workloads_for_service(svc, by_template))
            out.setdefault(key, [0.0])[0] += rps
    return [Readiness(ns, svc, ready_of[(ns, svc)], r[0]) for (ns, svc), r in sorted(out.items())]


def confirm_unready(first: list[Readiness], second: list[Readiness]) -> list[Readiness]:
    """``first`` with each not-Ready entry kept only if ``second`` (the same routing judged
    against a pod LIST taken after the routing objects') finds no Ready pod either.

    The routing objects and the pods are LISTed one after the other, so one LIST alone can
    pair a canary's weight with pods from just before it became Ready (pods listed first) or
    just after it was scaled down (pods listed last); pennant acts in between. Only a Service
    without a Ready pod in both LISTs, around the routing seen, counts as not Ready."""
    ready_later = {(r.namespace, r.service) for r in second if r.ready}
    return [r._replace(ready=True) if not r.ready and (r.namespace, r.service) in ready_later else r
            for r in first]


def describe(views: list[RouteView]) -> str:
    """One-line summary of the routing seen, used to log changes."""
    parts = []
    for v in sorted(views, key=lambda v: (v.router, v.namespace, v.name)):
        items = []
        for sp, wl, rps in v.targets:
            tag = "" if sp.traffic == "main" else f"[{sp.traffic}]"
            dest = sp.host if sp.namespace == v.namespace else f"{sp.host}.{sp.namespace}"
            if wl is None:
                items.append(f"{dest}{tag}={sp.weight:g}%(no ready workload)")
            else:
                items.append(f"{dest}{tag}={sp.weight:g}%->{wl}@{rps:.3g}rps")
        parts.append(f"{v.router}:{v.namespace}/{v.name}: " + (" ".join(items) or "(no routes)"))
    return "; ".join(parts) if parts else "(no routing objects)"


# --------------------------------------------------------------------------
# One request through one routing object (GET /route)
# --------------------------------------------------------------------------

ROUTE_ROUTERS = ("istio", "httproute")


@dataclass(frozen=True)
class RouteQuery:
    """A request to route: ``headers`` keyed by lower-case name."""

    namespace: str
    router: str
    name: str
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    path: str = "/"
    method: str = "GET"
    seed: str | None = None


def parse_route_query(qs: str) -> RouteQuery:
    """``namespace=&router=istio|httproute&name=`` plus optional
    ``header.<Name>=<value>`` (repeatable; a repeated header is joined with
    "; " for Cookie, ", " otherwise), ``query.<name>=<value>``, ``path``
    (default "/"), ``method`` (default GET) and ``seed``.  Raises ValueError
    on a missing or unknown parameter."""
    headers: dict[str, str] = {}
    query: dict[str, str] = {}
    plain: dict[str, str] = {}
    for k, v in urllib.parse.parse_qsl(qs, keep_blank_values=True):
        if k.startswith("header.") and len(k) > 7:
            name = k[7:].lower()
            if name in headers:
                v = headers[name] + ("; " if name == "cookie" else ", ") + v
            headers[name] = v
        elif k.startswith("query.") and len(k) > 6:
            query[k[6:]] = v
        else:
            plain[k] = v
    for req in ("namespace", "router", "name"):
        if not plain.get(req):
            raise ValueError(f"missing parameter {req!r}")
    if plain["router"] not in ROUTE_ROUTERS:
        raise ValueError(f"router must be one of {', '.join(ROUTE_ROUTERS)}, got {plain['router']!r}")
    return RouteQuery(plain["namespace"], plain["router"], plain["name"], headers, query,
                      plain.get("path") or "/", (plain.get("method") or "GET").upper(), plain.get("seed"))


def _fraction(seed: str | None, salt: str) -> float:
    """Deterministic [0, 1) from seed (random without one)."""
    if seed is None:
        return random.random()
    digest = hashlib.sha256(f"{salt}\0{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _pick(items: list[tuple[Any, float]], u: float) -> Any:
    """Weighted choice by u in [0, 1); None when every weight is <= 0."""
    live = [(x, w) for x, w in items if w > 0]
    total = sum(w for _, w in live)
    if total <= 0:
        return None
    acc = 0.0
    for x, w in live:
        acc += w
        if u * total < acc:
            return x
    return live[-1][0]


def _re_full(pattern: Any, v: str) -> bool:
    try:
        return re.fullmatch(str(pattern), v) is not None
    except re.error:
        return False


def _istio_str(m: Any, v: str | None) -> bool:
    """Istio StringMatch {exact|prefix|regex} (regex: RE2, full match)."""
    if v is None:
        return False
    if not isinstance(m, dict):
        return True
    if "exact" in m:
        return v == str(m["exact"])
    if "prefix" in m:
        return v.startswith(str(m["prefix"]))
    if "regex" in m:
        return _re_full(m["regex"], v)
    return True


def _istio_matches(entry: dict, q: RouteQuery) -> bool:
    for name, sm in (entry.get("headers") or {}).items():
        if not _istio_str(sm, q.headers.get(str(name).lower())):
            return False
    for name, sm in (entry.get("withoutHeaders") or {}).items():
        if _istio_str(sm, q.headers.get(str(name).lower())):
            return False
    for name, sm in (entry.get("queryParams") or {}).items():
        if not _istio_str(sm, q.query.get(str(name))):
            return False
    if entry.get("uri") and not _istio_str(entry["uri"], q.path):
        return False
    if entry.get("method") and not _istio_str(entry["method"], q.method):
        return False
    return True


def _istio_cookies(headers: Any) -> list[str]:
    resp = (headers or {}).get("response") if isinstance(headers, dict) else None
    out: list[str] = []
    for op in ("set", "add"):
        for k, v in (((resp or {}).get(op)) or {}).items():
            if str(k).lower() == "set-cookie":
                out.append(str(v))
    return out


def _gw_str(m: dict, v: str | None) -> bool:
    if v is None:
        return False
    if (m.get("type") or "Exact") == "RegularExpression":
        return _re_full(m.get("value", ""), v)
    return v == str(m.get("value", ""))


def _gw_rank(m: dict, q: RouteQuery) -> tuple | None:
    """Gateway API match -> precedence key (greater wins) or None if it does
    not match: Exact path, then the longest PathPrefix, then method, then
    the most header matches, then the most query matches."""
    path = m.get("path") or {}
    ptype = path.get("type") or "PathPrefix"
    pval = str(path.get("value") or "/")
    if ptype == "Exact":
        ok, prank = q.path == pval, 2
    elif ptype == "RegularExpression":
        ok, prank = _re_full(pval, q.path), 0
    else:
        base = pval.rstrip("/")
        ok, prank = base == "" or q.path == base or q.path.startswith(base + "/"), 1
    if not ok:
        return None
    headers = [h for h in m.get("headers") or [] if isinstance(h, dict)]
    params = [h for h in m.get("queryParams") or [] if isinstance(h, dict)]
    if not all(_gw_str(h, q.headers.get(str(h.get("name", "")).lower())) for h in headers):
        return None
    if not all(_gw_str(h, q.query.get(str(h.get("name", "")))) for h in params):
        return None
    if m.get("method") and str(m["method"]).upper() != q.method:
        return None
    return (prank, len(pval) if prank == 1 else 0, bool(m.get("method")), len(headers), len(params))


def _gw_cookies(filters: Any) -> list[str]:
    out: list[str] = []
    for f in filters or []:
        if not isinstance(f, dict) or f.get("type") != "ResponseHeaderModifier":
            continue
        mod = f.get("responseHeaderModifier") or {}
        for op in ("set", "add"):
            for h in mod.get(op) or []:
                if isinstance(h, dict) and str(h.get("name", "")).lower() == "set-cookie":
                    out.append(str(h.get("value", "")))
    return out


def route_request(router: str, obj: dict, q: RouteQuery) -> dict | None:
    """Route one request through a VirtualService ("istio") or an HTTPRoute
    ("httproute") like the proxy would.

    Istio: the first spec.http route whose match is empty or has an entry
    whose headers (exact/prefix/regex, names case-insensitive),
    withoutHeaders, queryParams, uri and method all match.  HTTPRoute: among
    all rules' matches (no matches = PathPrefix "/") the most specific one
    (see _gw_rank), ties to the earlier rule.  The destination is drawn by
    weight (Istio: weight, a lone destination gets 100; HTTPRoute: weight
    default 1) with a deterministic hash of ``seed``.  ``setCookie`` lists
    the Set-Cookie values the proxy would add: Istio ``headers.response
    .set/.add`` of the route then of the destination; HTTPRoute
    ResponseHeaderModifier filters of the rule then of the backendRef.

    Returns ``{"rule": index, "namespace": ns|None, "service": svc|None,
    "setCookie": [...]}`` (service None when every weight is 0; namespace
    None for a host outside the cluster), or None when no rule matches.
    """
    ns = ((obj.get("metadata") or {}).get("namespace")) or "default"
    spec = obj.get("spec") or {}
    u = _fraction(q.seed, "route")
    if router == "istio":
        for i, r in enumerate(spec.get("http") or []):
            if not isinstance(r, dict):
                continue
            match = [m for m in r.get("match") or [] if isinstance(m, dict)]
            if match and not any(_istio_matches(m, q) for m in match):
                continue
            items = [d for d in r.get("route") or [] if isinstance(d, dict)]
            d = _pick([(d, _num(d.get("weight"), 100.0 if len(items) == 1 else 0.0)) for d in items], u)
            out = {"rule": i, "namespace": None, "service": None, "setCookie": _istio_cookies(r.get("headers"))}
            if d is not None:
                host = str(((d.get("destination") or {}).get("host")) or "")
                nh = normalize_host(host, ns)
                out["namespace"], out["service"] = nh if nh is not None else (None, host)
                out["setCookie"] += _istio_cookies(d.get("headers"))
            return out
        return None
    if router == "httproute":
        best: tuple | None = None
        best_i = -1
        rules = spec.get("rules") or []
        for i, r in enumerate(rules):
            if not isinstance(r, dict):
                continue
            for m in r.get("matches") or [{}]:
                rank = _gw_rank(m if isinstance(m, dict) else {}, q)
                if rank is not None and (best is None or rank > best):
                    best, best_i = rank, i
        if best is None:
            return None
        r = rules[best_i]
        refs = [b for b in r.get("backendRefs") or [] if isinstance(b, dict) and b.get("name")]
        b = _pick([(b, _num(b.get("weight"), 1.0)) for b in refs], u)
        out = {"rule": best_i, "namespace": None, "service": None, "setCookie": _gw_cookies(r.get("filters"))}
        if b is not None:
            out["namespace"], out["service"] = b.get("namespace") or ns, str(b["name"])
            out["setCookie"] += _gw_cookies(b.get("filters"))
        return out
    raise ValueError(f"unknown router {router!r}")


def pick_workload(svc: dict | None, workloads: list[dict], seed: str | None) -> str | None:
    """The workload behind a Service that serves one request: drawn among the
    selected workloads with ready replicas, in proportion to them."""
    ready = [(w["metadata"]["name"], ready_replicas(w)) for w in workloads_for_service(svc, workloads)]
    return _pick(ready, _fraction(seed, "workload"))


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{_esc(str(v))}"' for k, v in pairs) + "}"


def _count(x: float) -> int:
    """Float accumulator -> exposed integer (tolerant of summing error, monotonic)."""
    return math.floor(x + 1e-6)


def _fmt_le(b: float) -> str:
    return f"{b:g}" if b != int(b) or b < 1e6 else str(int(b))


class SeriesKey(NamedTuple):
    namespace: str
    service: str
    workload: str
    source: str = SOURCE_WORKLOAD


class NginxKey(NamedTuple):
    namespace: str
    ingress: str  # the ordinary (non-canary) Ingress
    service: str
    canary: str  # "" or the canary upstream <ns>-<svc>-<port>


class PodKey(NamedTuple):
    namespace: str
    pod: str
    status: str  # "200" | "500"


@dataclass
class _Acc:
    ok: float = 0.0
    err: float = 0.0
    count: float = 0.0
    total_ms: float = 0.0
    buckets: list[float] = field(default_factory=lambda: [0.0] * len(ISTIO_BUCKETS_MS))
    has_err: bool = False

    def add(self, n: float, b: Behaviour, fractions: list[float]) -> None:
        err = n * b.error_rate
        self.err += err
        self.ok += n - err
        if b.error_rate > 0:
            self.has_err = True
        self.count += n
        self.total_ms += n * b.latency_ms
        for i, frac in enumerate(fractions):
            self.buckets[i] += n * frac


def _fmt_float(x: float) -> str:
    """Accumulated float (e.g. a _sum in seconds): 6 decimals, monotonic."""
    return f"{x:.6f}".rstrip("0").rstrip(".") or "0"


class Metrics:
    """Accumulates float counters (never decreasing) and renders them.

    Three families, from the same flows:
      * istio_*  - flows of Istio VirtualServices, per (namespace, Service,
                   workload) as Istio's destination reporter;
      * nginx_ingress_controller_* - flows of ingress-nginx Ingresses, per
                   (namespace, ordinary Ingress, Service, canary upstream);
      * http_request_duration_seconds_* - EVERY flow (the application
                   exports it whatever the router), per Ready pod and status.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._acc: dict[SeriesKey, _Acc] = {}
        self._nginx: dict[NginxKey, _Acc] = {}
        self._http: dict[PodKey, _Acc] = {}
        self._readiness: dict[tuple[str, str, bool], float] = {}
        # (namespace, workload, "200"|"500") -> requests answered to clients (no mirrors), exact
        self._served: dict[tuple[str, str, str], float] = {}
        self._weights: dict[tuple[str, str], float] = {}
        self._rps: dict[tuple[str, str, str], float] = {}
        self._fractions: dict[tuple[float, tuple[float, ...]], list[float]] = {}
        self.ticks = 0.0
        self.api_errors = 0.0

    def _frac(self, latency_ms: float, bounds: tuple[float, ...]) -> list[float]:
        key = (latency_ms, bounds)
        if key not in self._fractions:
            self._fractions[key] = bucket_fractions(latency_ms, bounds)
        return self._fractions[key]

    def add(self, flows: Iterable[Flow], dt: float) -> None:
        with self._lock:
            for f in flows:
                n = f.rps * dt
                if n <= 0:
                    continue
                b = f.behaviour
                if not f.traffic.endswith("mirror"):
                    for code, part in (("200", 1.0 - b.error_rate), ("500", b.error_rate)):
                        key = (f.namespace, f.workload, code)
                        self._served[key] = self._served.get(key, 0.0) + n * part
                if f.router == "istio":
                    acc = self._acc.setdefault(SeriesKey(f.namespace, f.service, f.workload, f.source), _Acc())
                    acc.add(n, b, self._frac(b.latency_ms, ISTIO_BUCKETS_MS))
                elif f.router == "nginx":
                    acc = self._nginx.setdefault(
                        NginxKey(f.namespace, f.route, f.service, f.canary),
                        _Acc(buckets=[0.0] * len(HTTP_BUCKETS_MS)))
                    acc.add(n, b, self._frac(b.latency_ms, HTTP_BUCKETS_MS))
                if not f.pods:
                    continue
                per_pod = n / len(f.pods)
                fr = self._frac(b.latency_ms, HTTP_BUCKETS_MS)
                for pod in f.pods:
                    for status, part in (("200", 1.0 - b.error_rate), ("500", b.error_rate)):
                        if part <= 0:
                            continue
                        acc = self._http.setdefault(
                            PodKey(f.namespace, pod, status), _Acc(buckets=[0.0] * len(HTTP_BUCKETS_MS)))
                        acc.add(per_pod * part, Behaviour(0.0, b.latency_ms), fr)

    def add_readiness(self, entries: Iterable[Readiness], dt: float) -> None:
        with self._lock:
            for r in entries:
                key = (r.namespace, r.service, r.ready)
                self._readiness[key] = self._readiness.get(key, 0.0) + r.rps * dt

    def set_gauges(self, views: list[RouteView], default_rps: float, namespaces: dict[str, dict]) -> None:
        weights: dict[tuple[str, str], float] = {}
        rps: dict[tuple[str, str, str], float] = {}
        for v in views:
            rates = v.rates if v.rates is not None else class_rates(namespaces.get(v.namespace), default_rps)
            for sp in v.splits:
                if sp.traffic == "main":
                    key = (sp.namespace, sp.host)
                    weights[key] = weights.get(key, 0.0) + sp.weight
                k3 = (sp.namespace, sp.host, sp.traffic)
                rps[k3] = rps.get(k3, 0.0) + rates.get(sp.traffic, 0.0) * sp.weight / 100.0
        with self._lock:
            self._weights = weights
            self._rps = rps

    @staticmethod
    def _hist(name: str, base: list[tuple[str, str]], acc: _Acc, bounds_ms: tuple[float, ...],
              seconds: bool) -> list[str]:
        out = []
        for b, c in zip(bounds_ms, acc.buckets):
            le = _fmt_le(b / 1000.0) if seconds else _fmt_le(b)
            out.append(f"{name}_bucket{_labels(base + [('le', le)])} {_count(c)}")
        out.append(f"{name}_bucket{_labels(base + [('le', '+Inf')])} {_count(acc.count)}")
        total = _fmt_float(acc.total_ms / 1000.0) if seconds else str(_count(acc.total_ms))
        out.append(f"{name}_sum{_labels(base)} {total}")
        out.append(f"{name}_count{_labels(base)} {_count(acc.count)}")
        return out

    def render(self) -> str:
        def copy(d: dict) -> dict:
            return {k: _Acc(v.ok, v.err, v.count, v.total_ms, list(v.buckets), v.has_err) for k, v in d.items()}

        with self._lock:
            acc, nginx, http = copy(self._acc), copy(self._nginx), copy(self._http)
            weights = dict(self._weights)
            rps = dict(self._rps)
            readiness = dict(self._readiness)
            served = dict(self._served)
            ticks, api_errors = self.ticks, self.api_errors
        out: list[str] = []
        out.append("# HELP istio_requests_total Simulated requests seen by the destination reporter.")
        out.append("# TYPE istio_requests_total counter")
        hist: list[str] = []
        for key in sorted(acc):
            a = acc[key]
            base = [
                ("reporter", "destination"),
                ("source_workload", key.source),
                ("destination_workload", key.workload),
                ("destination_workload_namespace", key.namespace),
                ("destination_service", f"{key.service}.{key.namespace}.{CLUSTER_DOMAIN}"),
                ("destination_service_name", key.service),
                ("destination_service_namespace", key.namespace),
            ]
            out.append(f"istio_requests_total{_labels(base + [('response_code', '200')])} {_count(a.ok)}")
            if a.has_err:
                out.append(f"istio_requests_total{_labels(base + [('response_code', '500')])} {_count(a.err)}")
            hist.extend(self._hist("istio_request_duration_milliseconds", base, a, ISTIO_BUCKETS_MS, False))
        out.append("# HELP istio_request_duration_milliseconds Simulated request durations.")
        out.append("# TYPE istio_request_duration_milliseconds histogram")
        out.extend(hist)

        out.append("# HELP nginx_ingress_controller_requests Simulated requests handled by ingress-nginx.")
        out.append("# TYPE nginx_ingress_controller_requests counter")
        hist = []
        for key in sorted(nginx):
            a = nginx[key]
            base = [("namespace", key.namespace), ("ingress", key.ingress), ("service", key.service),
                    ("canary", key.canary), ("method", "GET"), ("path", "/")]
            out.append(f"nginx_ingress_controller_requests{_labels(base + [('status', '200')])} {_count(a.ok)}")
            if a.has_err:
                out.append(f"nginx_ingress_controller_requests{_labels(base + [('status', '500')])} {_count(a.err)}")
            hist.extend(self._hist("nginx_ingress_controller_response_duration_seconds", base, a,
                                   HTTP_BUCKETS_MS, True))
        out.append("# HELP nginx_ingress_controller_response_duration_seconds Simulated upstream response times.")
        out.append("# TYPE nginx_ingress_controller_response_duration_seconds histogram")
        out.extend(hist)

        out.append("# HELP http_request_duration_seconds Simulated application request durations (podinfo), per pod.")
        out.append("# TYPE http_request_duration_seconds histogram")
        for key in sorted(http):
            base = [("kubernetes_namespace", key.namespace), ("kubernetes_pod_name", key.pod),
                    ("method", "GET"), ("path", "/"), ("status", key.status)]
            out.extend(self._hist("http_request_duration_seconds", base, http[key], HTTP_BUCKETS_MS, True))

        out.append("# HELP sim_route_weight Weight (percent of ordinary traffic) the simulator applied to a destination.")
        out.append("# TYPE sim_route_weight gauge")
        for (ns, host), w in sorted(weights.items()):
            out.append(f"sim_route_weight{_labels([('namespace', ns), ('host', host)])} {w:g}")
        out.append("# HELP sim_route_rps Requests/s the simulator sent to a destination Service, by traffic class.")
        out.append("# TYPE sim_route_rps gauge")
        for (ns, host, traffic), r in sorted(rps.items()):
            out.append(f"sim_route_rps{_labels([('namespace', ns), ('host', host), ('traffic', traffic)])} {r:g}")
        out.append("# HELP sim_requests_by_readiness_total Requests routed to a Service, by whether a Ready pod"
                   " stood behind it (ready=\"false\": the request reached a pod that was not Ready, or none).")
        out.append("# TYPE sim_requests_by_readiness_total counter")
        for (ns, svc, ready), n in sorted(readiness.items()):
            labels = _labels([("namespace", ns), ("service", svc), ("ready", "true" if ready else "false")])
            out.append(f"sim_requests_by_readiness_total{labels} {_count(n)}")
        out.append("# HELP sim_served_requests_total Requests a workload answered to clients (mirrored copies"
                   " excluded), by status code, whatever routed them: the exact fluid count, not floored.")
        out.append("# TYPE sim_served_requests_total counter")
        for (ns, wl, code), n in sorted(served.items()):
            labels = _labels([("namespace", ns), ("workload", wl), ("code", code)])
            out.append(f"sim_served_requests_total{labels} {_fmt_float(n)}")
        out.append("# HELP sim_ticks_total Simulation ticks run.")
        out.append("# TYPE sim_ticks_total counter")
        out.append(f"sim_ticks_total {int(ticks)}")
        out.append("# HELP sim_api_errors_total Failed apiserver requests.")
        out.append("# TYPE sim_api_errors_total counter")
        out.append(f"sim_api_errors_total {int(api_errors)}")
        out.append("# HELP sim_up The simulator is running.")
        out.append("# TYPE sim_up gauge")
        out.append("sim_up 1")
        return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# Kubernetes API client (LIST only)
# --------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, msg: str) -> None:
        super().__init__(f"HTTP {status}: {msg}")
        self.status = status


# What a request to the API server can raise: its answer, the connection, a body that is not JSON.
API_ERRORS = (ApiError, OSError, http.client.HTTPException, ValueError, ssl.SSLError)


class KubeClient:
    def __init__(self, cfg: KubeConfig, timeout: float = 10.0) -> None:
        self.cfg = cfg
        self.timeout = timeout
        u = urllib.parse.urlsplit(cfg.server)
        self.scheme = u.scheme or "https"
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or (443 if self.scheme == "https" else 80)
        self.prefix = u.path.rstrip("/")
        self._tmp = tempfile.mkdtemp(prefix="pennant-sim-")
        os.chmod(self._tmp, 0o700)
        self._ctx = self._ssl_context() if self.scheme == "https" else None
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def _write(self, name: str, data: bytes) -> str:
        p = os.path.join(self._tmp, name)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return p

    def _ssl_context(self) -> ssl.SSLContext:
        cfg = self.cfg
        if cfg.insecure:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif cfg.ca_data:
            ctx = ssl.create_default_context(cadata=cfg.ca_data.decode("ascii", "replace"))
        elif cfg.ca_file:
            ctx = ssl.create_default_context(cafile=cfg.ca_file)
        else:
            ctx = ssl.create_default_context()
        cert = self._write("client.crt", cfg.cert_data) if cfg.cert_data else cfg.cert_file
        key = self._write("client.key", cfg.key_data) if cfg.key_data else cfg.key_file
        if cert:
            ctx.load_cert_chain(cert, key)
        return ctx

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    def _connect(self, timeout: float | None = None) -> http.client.HTTPConnection:
        timeout = timeout or self.timeout
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self._ctx)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "pennant-mesh-simulator"}
        if self.cfg.token:
            headers["Authorization"] = f"Bearer {self.cfg.token}"
        return headers

    def get(self, path: str) -> dict:
        return self.request("GET", path)

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        """One API call; a body is sent as a JSON merge patch."""
        headers = self._headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/merge-patch+json"
        with self._lock:
            for attempt in (0, 1):
                if self._conn is None:
                    self._conn = self._connect()
                try:
                    self._conn.request(method, self.prefix + path, body=data, headers=headers)
                    resp = self._conn.getresponse()
                    body = resp.read()
                    break
                except (OSError, http.client.HTTPException):
                    # Stale keep-alive connection: reconnect once.
                    self._conn.close()
                    self._conn = None
                    if attempt:
                        raise
        if resp.status != 200:
            msg = body[:200].decode("utf-8", "replace").strip()
            try:
                msg = json.loads(body).get("message", msg)
            except (ValueError, AttributeError):
                pass
            raise ApiError(resp.status, f"{method} {path}: {msg}")
        return json.loads(body)

    def list(self, path: str) -> list[dict]:
        return self.list_at(path)[0]

    def list_at(self, path: str) -> tuple[list[dict], str]:
        """All objects at ``path`` (pages of 500) and the resourceVersion to watch from."""
        items: list[dict] = []
        cont = ""
        while True:
            q = {"limit": "500"}
            if cont:
                q["continue"] = cont
            doc = self.get(f"{path}?{urllib.parse.urlencode(q)}")
            items.extend(i for i in (doc.get("items") or []) if isinstance(i, dict))
            meta = doc.get("metadata") or {}
            cont = meta.get("continue") or ""
            if not cont:
                return items, str(meta.get("resourceVersion") or "")

    def watch(self, path: str, rv: str, on_event: Callable[[str, dict], None], stop: threading.Event) -> str:
        """One WATCH of ``path`` from ``rv`` on its own connection: ``on_event(type, object)``
        for ADDED, MODIFIED and DELETED until the server ends it (about a minute) or ``stop``.
        Returns the resourceVersion to go on from; raises ``ApiError`` (410 when ``rv`` is
        too old: LIST again)."""
        q = urllib.parse.urlencode({"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true",
                                    "timeoutSeconds": "60"})
        conn = self._connect(timeout=90.0)
        try:
            conn.request("GET", f"{self.prefix}{path}?{q}", headers=self._headers())
            resp = conn.getresponse()
            if resp.status != 200:
                raise ApiError(resp.status, f"WATCH {path}: {resp.read()[:200]!r}")
            while not stop.is_set():
                line = resp.readline()
                if not line:
                    return rv
                ev = json.loads(line)
                kind, obj = ev.get("type"), ev.get("object") or {}
                if kind == "ERROR":
                    raise ApiError(int(obj.get("code") or 500), f"WATCH {path}: {obj.get('message')}")
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    on_event(kind, obj)
            return rv
        finally:
            conn.close()


class WatchCache:
    """LISTs answered from watches. The first LIST of a path is a real one and starts a thread
    that watches the path and keeps its objects; later LISTs of the path read them, without a
    request. With a LIST of every kind on every tick, the simulator's ticks took longer than
    the tick at 1000 apps, and loaded the API server that the benchmarks measure.

    A watch the server ends goes on from its last resourceVersion; after 410 Gone the path is
    LISTed again at once, after a broken watch a second later. While that LIST fails, ``list``
    raises its error, as a failed LIST did. A path that answers 404 is dropped: the next
    ``list`` LISTs it as at the start (a router kind's other API version is then tried)."""

    def __init__(self, client: KubeClient, stop: threading.Event) -> None:
        self.client = client
        self.stop = stop
        self._lock = threading.Lock()
        self._objects: dict[str, dict[tuple[str, str], dict]] = {}
        self._failed: dict[str, Exception] = {}

    def list(self, path: str) -> list[dict]:
        with self._lock:
            objs = self._objects.get(path)
            failed = self._failed.get(path)
            if objs is not None and failed is None:
                return list(objs.values())
        if failed is not None:
            raise failed
        items, rv = self.client.list_at(path)
        with self._lock:
            self._objects[path] = {self._key(o): o for o in items}
        threading.Thread(target=self._keep, args=(path, rv), name=f"watch {path}", daemon=True).start()
        return items

    @staticmethod
    def _key(obj: dict) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return str(meta.get("namespace") or ""), str(meta.get("name") or "")

    def _event(self, path: str, kind: str, obj: dict) -> None:
        with self._lock:
            objs = self._objects[path]
            if kind == "DELETED":
                objs.pop(self._key(obj), None)
            else:
                objs[self._key(obj)] = obj

    def _keep(self, path: str, rv: str) -> None:
        while not self.stop.is_set():
            try:
                if not rv:
                    items, rv = self.client.list_at(path)
                    with self._lock:
                        self._objects[path] = {self._key(o): o for o in items}
                        self._failed.pop(path, None)
                started = time.monotonic()
                rv = self.client.watch(path, rv, lambda k, o: self._event(path, k, o), self.stop)
                if time.monotonic() - started < 1.0:  # a server that ends watches at once
                    self.stop.wait(1.0)
            except ApiError as e:
                if e.status == 404:  # the kind is gone: the next list() LISTs, as at the start
                    with self._lock:
                        self._objects.pop(path, None)
                        self._failed.pop(path, None)
                    return
                if e.status != 410:
                    self._fail(path, rv, e)
                rv = ""
            except Exception as e:  # a broken stream, or a line that is not a watch event
                if not isinstance(e, API_ERRORS):
                    log(f"watch {path}: {e!r}")
                self._fail(path, rv, e)
                rv = ""

    def _fail(self, path: str, rv: str, err: Exception) -> None:
        """A broken watch: LIST again after a second; until that LIST works, ``list`` fails."""
        if not rv:  # the LIST itself failed
            with self._lock:
                self._failed[path] = err
        self.stop.wait(1.0)


# --------------------------------------------------------------------------
# Simulation loop
# --------------------------------------------------------------------------


def _has_name(obj: Any) -> bool:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return isinstance(meta, dict) and isinstance(meta.get("name"), str)


class Simulator:
    def __init__(self, client: KubeClient, metrics: Metrics, default_rps: float,
                 lists: WatchCache | None = None) -> None:
        """``lists`` answers the LISTs of every tick (``client`` when None); GETs, patches, the
        second look at the pods and ``/route`` use ``client``, live."""
        self.client = client
        self.lists = lists or client
        self.metrics = metrics
        self.default_rps = default_rps
        self._last_desc: str | None = None
        self._last_err: dict[str, tuple[str, float]] = {}
        self._path_choice: dict[str, str | None] = {}
        self._path_retry: dict[str, float] = {}
        self._warned: set[str] = set()
        self._cache: dict[str, list[dict]] = {}

    def _error(self, what: str, err: Exception | str) -> None:
        """Log an error, but the same one at most every 30 s."""
        msg = str(err)
        now = time.monotonic()
        prev = self._last_err.get(what)
        if prev is None or prev[0] != msg or now - prev[1] > 30:
            log(f"{what}: {msg}")
            self._last_err[what] = (msg, now)

    def _warn_once(self, msg: str) -> None:
        if msg not in self._warned:
            self._warned.add(msg)
            log(msg)

    def _list_kind(self, kind: RouterKind, lists: Any = None) -> list[dict] | None:
        """LIST a router kind (through ``lists``, else ``self.lists``), trying its
        alternative API versions.

        A kind whose every path 404s (CRD not installed) is re-probed every
        30 s and meanwhile yields no objects.
        """
        lists = lists or self.lists
        now = time.monotonic()
        chosen = self._path_choice.get(kind.name)
        if chosen is None and now < self._path_retry.get(kind.name, 0):
            return []
        paths = (chosen,) if chosen else kind.list_paths
        for p in paths:
            try:
                items = lists.list(p)
                if chosen is None:
                    log(f"{kind.name}: using {p}")
                self._path_choice[kind.name] = p
                return items
            except ApiError as e:
                if e.status == 404:
                    continue
                raise
        if chosen is not None:  # the version we used went away: probe again
            self._path_choice[kind.name] = None
            return self._list_kind(kind, lists)
        self._path_retry[kind.name] = now + 30
        self._error(kind.name + " discovery", "no API found at " + ", ".join(kind.list_paths))
        return []

    def _cached(self, key: str, fetch: Callable[[], list[dict]]) -> list[dict] | None:
        """Run a LIST; on failure log it and fall back to the last good answer.

        A real mesh keeps carrying traffic while the apiserver hiccups, so a
        failed poll reuses what was seen last (None if nothing ever was).
        """
        try:
            items = fetch()
        except API_ERRORS as e:
            self.metrics.api_errors += 1
            stale = self._cache.get(key)
            self._error(key, f"{e} ({'using last known objects' if stale is not None else 'skipping'})")
            return stale
        if self._last_err.pop(key, None) is not None:
            log(f"{key}: ok again")
        self._cache[key] = items
        return items

    def snapshot(self) -> tuple[list[RouteView], dict, dict, list[dict], list[dict] | None] | None:
        """(views, namespaces, services, workloads, pods) or None when a core
        LIST (namespaces, services, deployments) never succeeded.  DaemonSets
        count as none and pods as unknown (no per-pod series) until their
        LISTs succeed."""
        core = {}
        for path in ("/api/v1/namespaces", "/api/v1/services", "/apis/apps/v1/deployments"):
            items = self._cached(path, lambda p=path: self.lists.list(p))
            if items is None:
                return None
            core[path] = [o for o in items if _has_name(o)]
        namespaces = {n["metadata"]["name"]: n for n in core["/api/v1/namespaces"]}
        services = {(s["metadata"].get("namespace", ""), s["metadata"]["name"]): s for s in core["/api/v1/services"]}
        daemonsets = self._cached(DAEMONSETS, lambda: self.lists.list(DAEMONSETS)) or []
        workloads = []
        for kind, items in (("Deployment", core["/apis/apps/v1/deployments"]), ("DaemonSet", daemonsets)):
            for w in items:
                if _has_name(w):
                    w["kind"] = kind  # LIST items carry no kind
                    workloads.append(w)
        pods = self._cached(PODS, lambda: self.lists.list(PODS))
        return self._views(self.lists, namespaces, services), namespaces, services, workloads, pods

    def _views(self, lists: Any, namespaces: dict, services: dict) -> list[RouteView]:
        """The routing objects of every kind, LISTed through ``lists``, as views, then the
        Services with direct traffic and the load testers."""
        views: list[RouteView] = []
        for kind in ROUTER_KINDS:
            objs = self._cached(kind.name, lambda k=kind: self._list_kind(k, lists)) or []
            if kind.views is not None:
                try:
                    views.extend(kind.views(objs))
                except Exception as e:  # a bug or an object too malformed to pair
                    self._error(kind.name, f"skipped all objects: {e!r}")
                continue
            for obj in objs:
                meta = obj.get("metadata") or {}
                ident = f"{kind.name} {meta.get('namespace')}/{meta.get('name')}"
                try:
                    splits = kind.splits(obj)
                except Exception as e:  # malformed object: skip it
                    self._error(ident, f"skipped malformed object: {e!r}")
                    continue
                views.append(RouteView(kind.name, meta.get("namespace") or "default", meta.get("name") or "", splits))
        routed = {(sp.namespace, sp.host) for v in views for sp in v.splits}
        views.extend(service_views(services, namespaces, routed, self._warn_once))
        views.extend(loadtest_views(services, namespaces, self._warn_once))
        return views

    def tick(self, dt: float) -> None:
        self.accept_routes()
        snap = self.snapshot()
        self.metrics.ticks += 1
        if snap is None:
            return
        views, namespaces, services, workloads, pods = snap
        flows = compute_flows(views, namespaces, services, workloads, self.default_rps, self._warn_once, pods)
        self.metrics.add(flows, dt)
        if pods is not None:
            readiness = readiness_rates(views, namespaces, services, workloads, self.default_rps, pods)
            if not all(r.ready for r in readiness):
                # The watches lag each independently: a pods view newer than the routing's
                # could pair a canary's old weight with its scale-down. Judge the unready
                # against routing LISTed now, between the pods seen (older) and pods LISTed
                # after it (in the namespaces concerned).
                unready = sorted({r.namespace for r in readiness if not r.ready})
                live = self._views(self.client, namespaces, services)
                try:
                    later = [p for ns in unready for p in self.client.list(f"/api/v1/namespaces/{ns}/pods")]
                except API_ERRORS as e:
                    self.metrics.api_errors += 1
                    self._error("pods after the routing", f"{e} (judged on the pods seen)")
                    later = pods
                readiness = confirm_unready(
                    readiness_rates(live, namespaces, services, workloads, self.default_rps, pods),
                    readiness_rates(live, namespaces, services, workloads, self.default_rps, later))
            self.metrics.add_readiness(readiness, dt)
        self.metrics.set_gauges(views, self.default_rps, namespaces)
        desc = describe(views)
        if desc != self._last_desc:
            log("routing: " + desc)
            self._last_desc = desc

    def accept_routes(self) -> None:
        """Play the Gateway controller: mark every parent of every HTTPRoute Accepted at the
        route's generation (what a Gateway implementation reports once it programmed the
        route), unless the route's namespace says ``sim.pennant.dev/gateway-accept: "false"``."""
        try:
            routes = self.lists.list(HTTPROUTES)
            namespaces = {
                n["metadata"]["name"]: n for n in self.lists.list("/api/v1/namespaces") if _has_name(n)
            }
        except API_ERRORS as e:
            self._error("httproutes", e)
            return
        for r in routes:
            if not _has_name(r):
                continue
            ns = r["metadata"].get("namespace", "")
            ann = _annotations((namespaces.get(ns) or {}).get("metadata"))
            if str(ann.get(ANN_GATEWAY_ACCEPT, "true")).lower() == "false":
                continue
            status = route_acceptance(r)
            if status is None:
                continue
            name = r["metadata"]["name"]
            try:
                self.client.request(
                    "PATCH",
                    f"/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes/{name}/status",
                    {"status": status},
                )
            except API_ERRORS as e:
                self._error(f"httproute {ns}/{name} status", e)

    def route(self, qs: str) -> tuple[int, dict]:
        """GET /route: live GETs of the routing object, the chosen Service and
        the namespace's workloads, then route_request + pick_workload.
        (400 bad query, 404 object missing or no rule matched, 502 apiserver
        error.)  Success: 200 {"service", "namespace", "workload", "setCookie",
        "rule"}."""
        try:
            q = parse_route_query(qs)
        except ValueError as e:
            return 400, {"error": str(e)}
        try:
            obj = None
            for p in ROUTE_OBJECT_PATHS[q.router]:
                try:
                    obj = self.client.get(p.format(ns=q.namespace, name=q.name))
                    break
                except ApiError as e:
                    if e.status != 404:
                        raise
            if obj is None:
                return 404, {"error": f"{q.router} {q.namespace}/{q.name} not found"}
            decision = route_request(q.router, obj, q)
            if decision is None:
                return 404, {"error": "no rule matched", "service": None}
            workload = None
            if decision["service"] and decision["namespace"]:
                ns = decision["namespace"]
                try:
                    svc = self.client.get(f"/api/v1/namespaces/{ns}/services/{decision['service']}")
                except ApiError as e:
                    if e.status != 404:
                        raise
                    svc = None
                workloads = []
                for kind, plural in (("Deployment", "deployments"), ("DaemonSet", "daemonsets")):
                    for w in self.client.list(f"/apis/apps/v1/namespaces/{ns}/{plural}"):
                        if _has_name(w):
                            w["kind"] = kind
                            workloads.append(w)
                workload = pick_workload(svc, workloads, q.seed)
        except API_ERRORS as e:
            return 502, {"error": f"apiserver: {e}"}
        return 200, {**decision, "workload": workload}


HTTPROUTES = "/apis/gateway.networking.k8s.io/v1/httproutes"
ANN_GATEWAY_ACCEPT = ANNOTATION_PREFIX + "gateway-accept"  # Namespace: "false" = never accept
GATEWAY_CONTROLLER = "sim.pennant.dev/gateway"


def route_acceptance(route: dict, now: str | None = None) -> dict | None:
    """The HTTPRoute status a Gateway controller would write: every spec parentRef Accepted at
    the route's generation. ``None`` when the live status already says so."""
    meta = route.get("metadata") or {}
    gen = int(_num(meta.get("generation"), 1.0))
    refs = [p for p in ((route.get("spec") or {}).get("parentRefs") or []) if isinstance(p, dict)]
    if not refs:
        return None
    live = ((route.get("status") or {}).get("parents")) or []

    def accepted(ref: dict) -> bool:
        for p in live:
            if not isinstance(p, dict) or p.get("parentRef") != ref:
                continue
            for c in p.get("conditions") or []:
                if c.get("type") == "Accepted" and c.get("status") == "True" and int(_num(c.get("observedGeneration"), 0)) >= gen:
                    return True
        return False

    if all(accepted(r) for r in refs):
        return None
    now = now or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "parents": [
            {
                "parentRef": r,
                "controllerName": GATEWAY_CONTROLLER,
                "conditions": [
                    {
                        "type": "Accepted",
                        "status": "True",
                        "reason": "Accepted",
                        "message": "accepted by the traffic simulator",
                        "observedGeneration": gen,
                        "lastTransitionTime": now,
                    }
                ],
            }
            for r in refs
        ]
    }


DAEMONSETS = "/apis/apps/v1/daemonsets"
PODS = "/api/v1/pods"
ROUTE_OBJECT_PATHS: dict[str, tuple[str, ...]] = {
    "istio": (
        "/apis/networking.istio.io/v1/namespaces/{ns}/virtualservices/{name}",
        "/apis/networking.istio.io/v1beta1/namespaces/{ns}/virtualservices/{name}",
    ),
    "httproute": (
        "/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes/{name}",
        "/apis/gateway.networking.k8s.io/v1beta1/namespaces/{ns}/httproutes/{name}",
    ),
}


# --------------------------------------------------------------------------
# HTTP server, file_sd, main
# --------------------------------------------------------------------------


def make_handler(
    metrics: Metrics, route: Callable[[str], tuple[int, dict]] | None = None,
) -> type[http.server.BaseHTTPRequestHandler]:
    """/metrics, /healthz and (when ``route`` is given) /route?... -> JSON."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            path, _, qs = self.path.partition("?")
            if path == "/metrics":
                body = metrics.render().encode()
                ctype = "text/plain; version=0.0.4; charset=utf-8"
                code = 200
            elif path == "/route" and route is not None:
                try:
                    code, doc = route(qs)
                except Exception as e:  # never kill the server thread
                    code, doc = 500, {"error": repr(e)}
                body, ctype = (json.dumps(doc) + "\n").encode(), "application/json"
            elif path == "/healthz":
                body, ctype, code = b"ok\n", "text/plain; charset=utf-8", 200
            else:
                body, ctype, code = b"not found\n", "text/plain; charset=utf-8", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def file_sd_content(target: str) -> str:
    return json.dumps([{"targets": [target], "labels": {"job": "sim"}}]) + "\n"


def scrape_target(listen_host: str, port: int) -> str:
    if listen_host in ("", "0.0.0.0", "::"):
        listen_host = "127.0.0.1"
    if ":" in listen_host:
        listen_host = f"[{listen_host}]"
    return f"{listen_host}:{port}"


def parse_listen(s: str) -> tuple[str, int]:
    host, sep, port = s.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"--listen wants HOST:PORT, got {s!r}")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Mesh traffic simulator for pennant e2e tests.")
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--listen", default="127.0.0.1:19100", type=parse_listen)
    ap.add_argument("--targets-dir", required=True, help="Prometheus file_sd directory")
    ap.add_argument("--default-rps", type=float, default=20.0)
    ap.add_argument("--tick", type=float, default=1.0, help="seconds between ticks (counters advance by the time passed)")
    args = ap.parse_args(argv)

    with open(args.kubeconfig, encoding="utf-8") as f:
        cfg = parse_kubeconfig(f.read(), os.path.dirname(os.path.abspath(args.kubeconfig)))
    client = KubeClient(cfg)
    metrics = Metrics()
    stop = threading.Event()
    sim = Simulator(client, metrics, args.default_rps, WatchCache(client, stop))

    host, port = args.listen
    server = _Server((host, port), make_handler(metrics, sim.route))
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()

    os.makedirs(args.targets_dir, exist_ok=True)
    sd_path = os.path.join(args.targets_dir, "simulator.json")
    tmp = sd_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(file_sd_content(scrape_target(host, server.server_address[1])))
    os.replace(tmp, sd_path)

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log(f"serving /metrics on {host}:{server.server_address[1]}, apiserver {cfg.server}, "
        f"default {args.default_rps:g} rps, tick {args.tick:g}s")

    max_dt = max(5 * args.tick, 5.0)
    last = time.monotonic()
    try:
        while not stop.is_set():
            start = time.monotonic()
            dt = min(start - last, max_dt)
            last = start
            try:
                sim.tick(dt)
            except Exception as e:  # never let the loop die
                log(f"tick failed: {e!r}")
            stop.wait(max(0.0, args.tick - (time.monotonic() - start)))
    finally:
        try:
            os.remove(sd_path)
        except OSError:
            pass
        server.shutdown()
        server.server_close()
        client.close()
        log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
