#!/usr/bin/env python3
"""Mesh traffic simulator for pennant's end-to-end tests.

There is no real service mesh in the e2e environment (pods are faked by kwok
and never run), so this process plays the part of the mesh: every tick it
LISTs the routing objects pennant (or Flagger) wrote, works out how much
traffic each workload would receive, and exposes the Prometheus series a real
mesh's destination reporter would have emitted.

Python 3.11 standard library only.  See README.md beside this file for the
CLI, the annotations it reads and the series it serves.

Layout of this file (pure parts first, they are unit-tested):

* ``parse_kubeconfig`` / ``parse_yaml``  - tiny YAML subset reader.
* ``bucket_fractions``                   - latency model (histogram shape).
* router kinds (``istio_splits`` ...)    - routing object -> ``Split`` list.
* ``compute_flows``                      - splits + Services + Deployments
                                           -> requests/s per workload.
* ``Metrics``                            - monotonic counters + text format.
* ``KubeClient`` / ``Simulator`` / main  - the impure shell.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import http.client
import http.server
import json
import math
import os
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

DEFAULT_ERROR_RATE = 0.0
DEFAULT_LATENCY_MS = 20.0
DEFAULT_AB_RPS = 0.0

SOURCE_WORKLOAD = "loadgen"
CLUSTER_DOMAIN = "svc.cluster.local"

# Istio's default buckets for istio_request_duration_milliseconds.
ISTIO_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
    60000, 300000, 600000, 1800000, 3600000,
)

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
    """

    namespace: str
    host: str  # short Service name
    weight: float
    traffic: str = "main"


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


# Extension points (a later issue adds these router kinds).  Each is a pure
# function ``(obj) -> list[Split]`` registered in ROUTER_KINDS below with the
# API list path(s) of the objects it reads:
#
#   def nginx_splits(ingress):   # networking.k8s.io/v1 Ingress
#       - an Ingress with nginx.ingress.kubernetes.io/canary: "true" sends
#         canary-weight (of canary-weight-total, default 100) of the traffic
#         for its host to its backend Service; the non-canary Ingress for the
#         same host gets the rest (pair them by spec.rules[*].host);
#         canary-by-header / canary-by-cookie -> "ab" traffic.
#   def gatewayapi_splits(route):   # gateway.networking.k8s.io/v1 HTTPRoute
#       - spec.rules[*].backendRefs[*] {name, namespace?, weight (default 1)}
#         with the same main/A-B rule as Istio (rules with only a path match
#         are "main"; header matches are "ab"); filters RequestMirror -> mirror.
#   def service_splits(svc):     # plain Services (kubernetes provider)
#       - a Service that no router object points at gets weight 100 of its
#         own traffic (decide which Services count, e.g. by annotation).


@dataclass(frozen=True)
class RouterKind:
    name: str
    # Alternative list paths (cluster-wide), tried in order until one is not 404.
    list_paths: tuple[str, ...]
    splits: Callable[[dict], list[Split]]


ROUTER_KINDS: list[RouterKind] = [
    RouterKind(
        name="istio",
        list_paths=(
            "/apis/networking.istio.io/v1/virtualservices",
            "/apis/networking.istio.io/v1beta1/virtualservices",
        ),
        splits=istio_splits,
    ),
]


# --------------------------------------------------------------------------
# Splits + cluster state -> per-workload flows
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Behaviour:
    error_rate: float = DEFAULT_ERROR_RATE
    latency_ms: float = DEFAULT_LATENCY_MS


@dataclass(frozen=True)
class Flow:
    """requests/s reaching one workload through one Service."""

    namespace: str
    service: str
    workload: str
    rps: float
    behaviour: Behaviour


@dataclass
class RouteView:
    """What one routing object did this tick (for the change log and gauges)."""

    router: str
    namespace: str
    name: str
    splits: list[Split]
    # (split, workload name or None, rps reaching that workload)
    targets: list[tuple[Split, str | None, float]] = field(default_factory=list)


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
    tmpl_meta = (((deploy.get("spec") or {}).get("template") or {}).get("metadata")) or {}
    ann = _annotations(tmpl_meta)
    return Behaviour(
        error_rate=annotation_float(ann, ANN_ERROR_RATE, DEFAULT_ERROR_RATE, 0.0, 1.0, warn),
        latency_ms=annotation_float(ann, ANN_LATENCY_MS, DEFAULT_LATENCY_MS, 0.001, 1e9, warn),
    )


def ready_replicas(deploy: dict) -> int:
    return int(_num((deploy.get("status") or {}).get("readyReplicas"), 0.0))


def workloads_for_service(svc: dict | None, deployments: Iterable[dict]) -> list[dict]:
    """Deployments in the Service's namespace whose pod template labels match
    the Service's selector (an empty/missing selector matches nothing)."""
    if not svc:
        return []
    selector = (svc.get("spec") or {}).get("selector")
    if not isinstance(selector, dict) or not selector:
        return []
    ns = (svc.get("metadata") or {}).get("namespace")
    out = []
    for d in deployments:
        if (d.get("metadata") or {}).get("namespace") != ns:
            continue
        labels = ((((d.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels")) or {}
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
) -> list[Flow]:
    """Fill in each view's targets and return the flows to account this tick.

    A split's rate is class_rate(routing object's namespace) * weight/100; it
    reaches the Deployments behind the destination Service in proportion to
    their readyReplicas; a Deployment with no ready replica gets nothing (the
    requests fail before any destination reporter sees them).
    """
    flows: list[Flow] = []
    for view in views:
        rates = class_rates(namespaces.get(view.namespace), default_rps, warn)
        view.targets = []
        for sp in view.splits:
            rps = rates.get(sp.traffic, 0.0) * sp.weight / 100.0
            deps = workloads_for_service(services.get((sp.namespace, sp.host)), deployments)
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
                    flows.append(Flow(sp.namespace, sp.host, name, share, behaviour_of(d, warn)))
    return flows


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


@dataclass
class _Acc:
    ok: float = 0.0
    err: float = 0.0
    count: float = 0.0
    total_ms: float = 0.0
    buckets: list[float] = field(default_factory=lambda: [0.0] * len(ISTIO_BUCKETS_MS))
    has_err: bool = False


class Metrics:
    """Accumulates float counters (never decreasing) and renders them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._acc: dict[SeriesKey, _Acc] = {}
        self._weights: dict[tuple[str, str], float] = {}
        self._rps: dict[tuple[str, str, str], float] = {}
        self.ticks = 0.0
        self.api_errors = 0.0

    def add(self, flows: Iterable[Flow], dt: float) -> None:
        with self._lock:
            for f in flows:
                n = f.rps * dt
                if n <= 0:
                    continue
                acc = self._acc.setdefault(SeriesKey(f.namespace, f.service, f.workload), _Acc())
                err = n * f.behaviour.error_rate
                acc.err += err
                acc.ok += n - err
                if f.behaviour.error_rate > 0:
                    acc.has_err = True
                acc.count += n
                acc.total_ms += n * f.behaviour.latency_ms
                for i, frac in enumerate(bucket_fractions(f.behaviour.latency_ms)):
                    acc.buckets[i] += n * frac

    def set_gauges(self, views: list[RouteView], default_rps: float, namespaces: dict[str, dict]) -> None:
        weights: dict[tuple[str, str], float] = {}
        rps: dict[tuple[str, str, str], float] = {}
        for v in views:
            rates = class_rates(namespaces.get(v.namespace), default_rps)
            for sp in v.splits:
                if sp.traffic == "main":
                    key = (sp.namespace, sp.host)
                    weights[key] = weights.get(key, 0.0) + sp.weight
                k3 = (sp.namespace, sp.host, sp.traffic)
                rps[k3] = rps.get(k3, 0.0) + rates.get(sp.traffic, 0.0) * sp.weight / 100.0
        with self._lock:
            self._weights = weights
            self._rps = rps

    def render(self) -> str:
        with self._lock:
            acc = {k: (v.ok, v.err, v.count, v.total_ms, list(v.buckets), v.has_err) for k, v in self._acc.items()}
            weights = dict(self._weights)
            rps = dict(self._rps)
            ticks, api_errors = self.ticks, self.api_errors
        out: list[str] = []
        out.append("# HELP istio_requests_total Simulated requests seen by the destination reporter.")
        out.append("# TYPE istio_requests_total counter")
        hist: list[str] = []
        for key in sorted(acc):
            ok, err, count, total_ms, buckets, has_err = acc[key]
            base = [
                ("reporter", "destination"),
                ("source_workload", SOURCE_WORKLOAD),
                ("destination_workload", key.workload),
                ("destination_workload_namespace", key.namespace),
                ("destination_service", f"{key.service}.{key.namespace}.{CLUSTER_DOMAIN}"),
                ("destination_service_name", key.service),
                ("destination_service_namespace", key.namespace),
            ]
            out.append(f"istio_requests_total{_labels(base + [('response_code', '200')])} {_count(ok)}")
            if has_err:
                out.append(f"istio_requests_total{_labels(base + [('response_code', '500')])} {_count(err)}")
            for b, c in zip(ISTIO_BUCKETS_MS, buckets):
                hist.append(
                    f"istio_request_duration_milliseconds_bucket{_labels(base + [('le', _fmt_le(b))])} {_count(c)}"
                )
            hist.append(f"istio_request_duration_milliseconds_bucket{_labels(base + [('le', '+Inf')])} {_count(count)}")
            hist.append(f"istio_request_duration_milliseconds_sum{_labels(base)} {_count(total_ms)}")
            hist.append(f"istio_request_duration_milliseconds_count{_labels(base)} {_count(count)}")
        out.append("# HELP istio_request_duration_milliseconds Simulated request durations.")
        out.append("# TYPE istio_request_duration_milliseconds histogram")
        out.extend(hist)
        out.append("# HELP sim_route_weight Weight (percent of ordinary traffic) the simulator applied to a destination.")
        out.append("# TYPE sim_route_weight gauge")
        for (ns, host), w in sorted(weights.items()):
            out.append(f"sim_route_weight{_labels([('namespace', ns), ('host', host)])} {w:g}")
        out.append("# HELP sim_route_rps Requests/s the simulator sent to a destination Service, by traffic class.")
        out.append("# TYPE sim_route_rps gauge")
        for (ns, host, traffic), r in sorted(rps.items()):
            out.append(f"sim_route_rps{_labels([('namespace', ns), ('host', host), ('traffic', traffic)])} {r:g}")
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

    def _connect(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self._ctx)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def get(self, path: str) -> dict:
        headers = {"Accept": "application/json", "User-Agent": "pennant-mesh-simulator"}
        if self.cfg.token:
            headers["Authorization"] = f"Bearer {self.cfg.token}"
        with self._lock:
            for attempt in (0, 1):
                if self._conn is None:
                    self._conn = self._connect()
                try:
                    self._conn.request("GET", self.prefix + path, headers=headers)
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
            raise ApiError(resp.status, f"GET {path}: {msg}")
        return json.loads(body)

    def list(self, path: str) -> list[dict]:
        items: list[dict] = []
        cont = ""
        while True:
            q = {"limit": "500"}
            if cont:
                q["continue"] = cont
            doc = self.get(f"{path}?{urllib.parse.urlencode(q)}")
            items.extend(i for i in (doc.get("items") or []) if isinstance(i, dict))
            cont = (doc.get("metadata") or {}).get("continue") or ""
            if not cont:
                return items


# --------------------------------------------------------------------------
# Simulation loop
# --------------------------------------------------------------------------


def _has_name(obj: Any) -> bool:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return isinstance(meta, dict) and isinstance(meta.get("name"), str)


class Simulator:
    def __init__(self, client: KubeClient, metrics: Metrics, default_rps: float) -> None:
        self.client = client
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

    def _list_kind(self, kind: RouterKind) -> list[dict] | None:
        """LIST a router kind, trying its alternative API versions.

        A kind whose every path 404s (CRD not installed) is re-probed every
        30 s and meanwhile yields no objects.
        """
        now = time.monotonic()
        chosen = self._path_choice.get(kind.name)
        if chosen is None and now < self._path_retry.get(kind.name, 0):
            return []
        paths = (chosen,) if chosen else kind.list_paths
        for p in paths:
            try:
                items = self.client.list(p)
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
            return self._list_kind(kind)
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
        except (ApiError, OSError, http.client.HTTPException, ValueError, ssl.SSLError) as e:
            self.metrics.api_errors += 1
            stale = self._cache.get(key)
            self._error(key, f"{e} ({'using last known objects' if stale is not None else 'skipping'})")
            return stale
        if self._last_err.pop(key, None) is not None:
            log(f"{key}: ok again")
        self._cache[key] = items
        return items

    def snapshot(self) -> tuple[list[RouteView], dict, dict, list[dict]] | None:
        core = {}
        for path in ("/api/v1/namespaces", "/api/v1/services", "/apis/apps/v1/deployments"):
            items = self._cached(path, lambda p=path: self.client.list(p))
            if items is None:
                return None
            core[path] = [o for o in items if _has_name(o)]
        namespaces = {n["metadata"]["name"]: n for n in core["/api/v1/namespaces"]}
        services = {(s["metadata"].get("namespace", ""), s["metadata"]["name"]): s for s in core["/api/v1/services"]}
        deployments = core["/apis/apps/v1/deployments"]
        views: list[RouteView] = []
        for kind in ROUTER_KINDS:
            objs = self._cached(kind.name, lambda k=kind: self._list_kind(k)) or []
            for obj in objs:
                meta = obj.get("metadata") or {}
                ident = f"{kind.name} {meta.get('namespace')}/{meta.get('name')}"
                try:
                    splits = kind.splits(obj)
                except Exception as e:  # malformed object: skip it
                    self._error(ident, f"skipped malformed object: {e!r}")
                    continue
                views.append(RouteView(kind.name, meta.get("namespace") or "default", meta.get("name") or "", splits))
        return views, namespaces, services, deployments

    def tick(self, dt: float) -> None:
        snap = self.snapshot()
        self.metrics.ticks += 1
        if snap is None:
            return
        views, namespaces, services, deployments = snap
        flows = compute_flows(views, namespaces, services, deployments, self.default_rps, self._warn_once)
        self.metrics.add(flows, dt)
        self.metrics.set_gauges(views, self.default_rps, namespaces)
        desc = describe(views)
        if desc != self._last_desc:
            log("routing: " + desc)
            self._last_desc = desc


# --------------------------------------------------------------------------
# HTTP server, file_sd, main
# --------------------------------------------------------------------------


def make_handler(metrics: Metrics) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body = metrics.render().encode()
                ctype = "text/plain; version=0.0.4; charset=utf-8"
                code = 200
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
    ap.add_argument("--tick", type=float, default=1.0, help="seconds between LIST polls")
    args = ap.parse_args(argv)

    with open(args.kubeconfig, encoding="utf-8") as f:
        cfg = parse_kubeconfig(f.read(), os.path.dirname(os.path.abspath(args.kubeconfig)))
    client = KubeClient(cfg)
    metrics = Metrics()
    sim = Simulator(client, metrics, args.default_rps)

    host, port = args.listen
    server = _Server((host, port), make_handler(metrics))
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()

    os.makedirs(args.targets_dir, exist_ok=True)
    sd_path = os.path.join(args.targets_dir, "simulator.json")
    tmp = sd_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(file_sd_content(scrape_target(host, server.server_address[1])))
    os.replace(tmp, sd_path)

    stop = threading.Event()

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
