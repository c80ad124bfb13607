"""Unit tests for the mesh traffic simulator (stdlib unittest only).

Run: python3 -m unittest discover e2e/simulator
"""

from __future__ import annotations

import base64
import json
import math
import os
import sys
import threading
import time
import re
import unittest
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import simulator as sim  # noqa: E402

KIND_STYLE = """\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: https://127.0.0.1:6443
  name: e2e
- cluster:
    server: http://other:8080
    insecure-skip-tls-verify: true
  name: other
contexts:
- context:
    cluster: e2e
    user: admin
  name: e2e
- context: {{}}
  name: empty
current-context: e2e   # comment
kind: Config
preferences: {{}}
users:
- name: admin
  user:
    client-certificate-data: {crt}
    client-key-data: "{key}"
- name: bot
  user:
    token: abc
"""


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def vs(ns: str, name: str, http: list) -> dict:
    return {"metadata": {"namespace": ns, "name": name}, "spec": {"hosts": [name], "http": http}}


def dest(host: str, weight=None) -> dict:
    d = {"destination": {"host": host, "port": {"number": 9898}}}
    if weight is not None:
        d["weight"] = weight
    return d


def deployment(ns, name, labels, ready=1, ann=None) -> dict:
    tmpl_meta = {"labels": labels}
    if ann is not None:
        tmpl_meta["annotations"] = ann
    return {
        "metadata": {"namespace": ns, "name": name},
        "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": tmpl_meta}},
        "status": {"readyReplicas": ready} if ready is not None else {},
    }


def service(ns, name, selector) -> dict:
    return {"metadata": {"namespace": ns, "name": name}, "spec": {"selector": selector}}


def namespace(name, ann=None) -> dict:
    return {"metadata": {"name": name, "annotations": ann or {}}}


def flagger_canary_state(ns="test", primary_w=90, canary_w=10, canary_ann=None, primary_ann=None,
                         canary_ready=1, primary_ready=2):
    views = [sim.RouteView("istio", ns, "podinfo", sim.istio_splits(vs(ns, "podinfo", [
        {"route": [dest("podinfo-primary", primary_w), dest("podinfo-canary", canary_w)]}])))]
    services = {
        (ns, "podinfo"): service(ns, "podinfo", {"app": "podinfo-primary"}),
        (ns, "podinfo-primary"): service(ns, "podinfo-primary", {"app": "podinfo-primary"}),
        (ns, "podinfo-canary"): service(ns, "podinfo-canary", {"app": "podinfo"}),
    }
    deps = [
        deployment(ns, "podinfo", {"app": "podinfo", "extra": "x"}, canary_ready, canary_ann),
        deployment(ns, "podinfo-primary", {"app": "podinfo-primary"}, primary_ready, primary_ann),
    ]
    return views, services, deps


class YamlTest(unittest.TestCase):
    def test_kind_style_document(self):
        doc = sim.parse_yaml(KIND_STYLE.format(ca="Q0E=", crt="Q1JU", key="S0VZ"))
        self.assertEqual(doc["current-context"], "e2e")
        self.assertEqual(doc["preferences"], {})
        self.assertEqual(doc["clusters"][0], {
            "cluster": {"certificate-authority-data": "Q0E=", "server": "https://127.0.0.1:6443"},
            "name": "e2e"})
        self.assertIs(doc["clusters"][1]["cluster"]["insecure-skip-tls-verify"], True)
        self.assertEqual(doc["contexts"][1], {"context": {}, "name": "empty"})
        self.assertEqual(doc["users"][0]["user"]["client-key-data"], "S0VZ")
        self.assertEqual(doc["users"][1], {"name": "bot", "user": {"token": "abc"}})

    def test_indented_sequences_and_scalars(self):
        doc = sim.parse_yaml("""
a:
  - x: 1
    y: 'it''s'
  - plain
  -
    z: "q\\"uote"
b: ~
c:
  # comment line
  d: url#not-a-comment
""")
        self.assertEqual(doc, {
            "a": [{"x": "1", "y": "it's"}, "plain", {"z": 'q"uote'}],
            "b": None,
            "c": {"d": "url#not-a-comment"},
        })

    def test_flow_collections(self):
        doc = sim.parse_yaml("""
contexts:
- context: {cluster: f, user: "u"}
  name: f
- {name: g, context: {cluster: x}}
list: [a, "b, c", {x: 1}, []]
server: https://h:6443
""")
        self.assertEqual(doc, {
            "contexts": [{"context": {"cluster": "f", "user": "u"}, "name": "f"},
                         {"name": "g", "context": {"cluster": "x"}}],
            "list": ["a", "b, c", {"x": "1"}, []],
            "server": "https://h:6443",
        })
        with self.assertRaises(sim.YamlError):
            sim.parse_yaml("a: {b: c\n")

    def test_bad_indentation_raises(self):
        with self.assertRaises(sim.YamlError):
            sim.parse_yaml("a:\n    b: 1\n  c: 2\n")


class KubeconfigTest(unittest.TestCase):
    def test_current_context_certs(self):
        text = KIND_STYLE.format(ca=b64("CA PEM"), crt=b64("CRT PEM"), key=b64("KEY PEM"))
        cfg = sim.parse_kubeconfig(text)
        self.assertEqual(cfg.server, "https://127.0.0.1:6443")
        self.assertEqual(cfg.ca_data, b"CA PEM")
        self.assertEqual(cfg.cert_data, b"CRT PEM")
        self.assertEqual(cfg.key_data, b"KEY PEM")
        self.assertIsNone(cfg.token)
        self.assertFalse(cfg.insecure)

    def test_token_and_other_context(self):
        text = KIND_STYLE.format(ca="", crt="", key="")
        text = text.replace("current-context: e2e", "current-context: b")
        text = text.replace("contexts:\n", "contexts:\n- context:\n    cluster: other\n    user: bot\n  name: b\n", 1)
        cfg = sim.parse_kubeconfig(text)
        self.assertEqual(cfg.server, "http://other:8080")
        self.assertEqual(cfg.token, "abc")
        self.assertIsNone(cfg.cert_data)
        self.assertTrue(cfg.insecure)

    def test_json_kubeconfig_and_files(self):
        doc = {"clusters": [{"name": "c", "cluster": {"server": "https://h:1/", "certificate-authority": "ca.crt"}}],
               "users": [{"name": "u", "user": {"client-certificate": "/abs/c.crt", "client-key": "k.key"}}],
               "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
               "current-context": "x"}
        cfg = sim.parse_kubeconfig(json.dumps(doc), "/base")
        self.assertEqual(cfg.server, "https://h:1")
        self.assertEqual(cfg.ca_file, "/base/ca.crt")
        self.assertEqual(cfg.cert_file, "/abs/c.crt")
        self.assertEqual(cfg.key_file, "/base/k.key")

    def test_no_server(self):
        with self.assertRaises(sim.YamlError):
            sim.parse_kubeconfig("clusters: []\n")


class LatencyModelTest(unittest.TestCase):
    def cumulative(self, latency, n=1_000_000.0):
        fr = sim.bucket_fractions(latency)
        return [n * f for f in fr] + [n], list(sim.ISTIO_BUCKETS_MS) + [math.inf]

    def test_fractions_monotonic_and_bounded(self):
        for lat in (0.1, 0.7, 3, 4.5, 9.09, 10, 20, 45, 90.9, 300, 454, 1000, 4000, 1e5, 5e6):
            fr = sim.bucket_fractions(lat)
            self.assertEqual(len(fr), len(sim.ISTIO_BUCKETS_MS))
            self.assertTrue(all(0.0 <= f <= 1.0 for f in fr), (lat, fr))
            self.assertEqual(fr, sorted(fr), lat)

    def test_p99_is_latency_times_1_1(self):
        for lat in (1, 3, 4.5, 8, 10, 15, 20, 30, 45, 100, 200, 300, 400, 450, 800, 1000, 2000, 20000):
            cum, bounds = self.cumulative(lat)
            p99 = sim.histogram_quantile(0.99, bounds, cum)
            self.assertAlmostEqual(p99, 1.1 * lat, delta=1.1 * lat * 0.02, msg=f"latency {lat}")

    def test_p99_stays_in_its_bucket_with_few_requests(self):
        # With integer counts over a short window the estimate may move, but
        # never above the bucket that holds 1.1*latency.
        for lat in (20, 300, 1000):
            target = 1.1 * lat
            hi = min(b for b in sim.ISTIO_BUCKETS_MS if b >= target)
            for n in (7, 13, 60, 61, 200):
                cum, bounds = self.cumulative(lat, n)
                cum = [math.floor(c) for c in cum]
                self.assertLessEqual(sim.histogram_quantile(0.99, bounds, cum), hi)

    def test_threshold_separation(self):
        # The typical e2e use: 20 ms passes a 500 ms max, 1000 ms fails it.
        good, bounds = self.cumulative(20, 60)
        bad, _ = self.cumulative(1000, 60)
        self.assertLess(sim.histogram_quantile(0.99, bounds, [math.floor(c) for c in good]), 500)
        self.assertGreater(sim.histogram_quantile(0.99, bounds, [math.floor(c) for c in bad]), 500)

    def test_prometheus_quantile_reference(self):
        bounds = [1, 2, math.inf]
        self.assertEqual(sim.histogram_quantile(0.5, bounds, [0, 10, 10]), 1.5)
        self.assertEqual(sim.histogram_quantile(0.5, bounds, [10, 10, 10]), 0.5)
        self.assertEqual(sim.histogram_quantile(0.99, bounds, [0, 0, 10]), 2)


class HostTest(unittest.TestCase):
    def test_normalize_host(self):
        n = sim.normalize_host
        self.assertEqual(n("podinfo-primary", "test"), ("test", "podinfo-primary"))
        self.assertEqual(n("podinfo-primary.other", "test"), ("other", "podinfo-primary"))
        self.assertEqual(n("podinfo-primary.test.svc", "x"), ("test", "podinfo-primary"))
        self.assertEqual(n("podinfo-primary.test.svc.cluster.local", "x"), ("test", "podinfo-primary"))
        self.assertEqual(n("podinfo-primary.test.svc.cluster.local.", "x"), ("test", "podinfo-primary"))
        self.assertIsNone(n("www.example.com", "x"))
        self.assertIsNone(n("", "x"))


class IstioSplitsTest(unittest.TestCase):
    def test_flagger_canary_weights(self):
        v = vs("test", "podinfo", [{"route": [dest("podinfo-primary", 90), dest("podinfo-canary.test.svc.cluster.local", 10)]}])
        self.assertEqual(
            [tuple(s[:3]) for s in sim.istio_splits(v)],
            [("test", "podinfo-primary", 90.0), ("test", "podinfo-canary", 10.0)])
        self.assertTrue(all(s.traffic == "main" for s in sim.istio_splits(v)))

    def test_single_destination_without_weight(self):
        v = vs("test", "podinfo", [{"route": [dest("podinfo-primary")]}])
        self.assertEqual(sim.istio_splits(v), [sim.Split("test", "podinfo-primary", 100.0, "main")])

    def test_weights_normalized(self):
        v = vs("t", "p", [{"route": [dest("a", 1), dest("b", 3)]}])
        self.assertEqual([s.weight for s in sim.istio_splits(v)], [25.0, 75.0])

    def test_zero_weights(self):
        v = vs("t", "p", [{"route": [dest("a", 0), dest("b", 0)]}])
        self.assertEqual([s.weight for s in sim.istio_splits(v)], [0.0, 0.0])

    def test_ab_routes(self):
        v = vs("test", "podinfo", [
            {"match": [{"headers": {"x-canary": {"exact": "insider"}}}],
             "route": [dest("podinfo-primary", 0), dest("podinfo-canary", 100)]},
            {"route": [dest("podinfo-primary", 100), dest("podinfo-canary", 0)]},
            {"route": [dest("unreachable", 100)]},
        ])
        got = [(s.host, s.weight, s.traffic) for s in sim.istio_splits(v)]
        self.assertEqual(got, [
            ("podinfo-primary", 0.0, "ab"), ("podinfo-canary", 100.0, "ab"),
            ("podinfo-primary", 100.0, "main"), ("podinfo-canary", 0.0, "main")])

    def test_all_routes_match_last_is_main(self):
        v = vs("t", "p", [
            {"match": [{"uri": {"prefix": "/a"}}], "route": [dest("a")]},
            {"match": [{"uri": {"prefix": "/"}}], "route": [dest("b")]},
        ])
        self.assertEqual([(s.host, s.traffic) for s in sim.istio_splits(v)], [("a", "ab"), ("b", "main")])

    def test_mirror(self):
        v = vs("test", "podinfo", [{
            "route": [dest("podinfo-primary", 100), dest("podinfo-canary", 0)],
            "mirror": {"host": "podinfo-canary"}, "mirrorPercentage": {"value": 50.0}}])
        self.assertIn(sim.Split("test", "podinfo-canary", 50.0, "mirror"), sim.istio_splits(v))
        v2 = vs("test", "podinfo", [{"route": [dest("a")], "mirror": {"host": "b"}}])
        self.assertIn(sim.Split("test", "b", 100.0, "mirror"), sim.istio_splits(v2))
        v3 = vs("test", "podinfo", [{"route": [dest("a")], "mirrors": [
            {"destination": {"host": "c"}, "percentage": {"value": 5}}]}])
        self.assertIn(sim.Split("test", "c", 5.0, "mirror"), sim.istio_splits(v3))

    def test_external_hosts_and_junk_are_ignored(self):
        v = vs("t", "p", [{"route": [dest("api.example.com", 50), dest("a", 50), {"weight": 3}, None]}, "junk"])
        self.assertEqual([(s.host, s.weight) for s in sim.istio_splits(v)], [("a", 100.0)])
        self.assertEqual(sim.istio_splits({"metadata": {"name": "x"}}), [])
        self.assertEqual(sim.istio_splits({"spec": {"tcp": []}}), [])


class FlowsTest(unittest.TestCase):
    def test_canary_split_and_behaviour(self):
        views, services, deps = flagger_canary_state(
            canary_ann={"sim.pennant.dev/error-rate": "0.25", "sim.pennant.dev/latency-ms": "300"})
        flows = sim.compute_flows(views, {"test": namespace("test")}, services, deps, 20.0)
        by = {f.workload: f for f in flows}
        self.assertEqual(set(by), {"podinfo", "podinfo-primary"})
        self.assertAlmostEqual(by["podinfo-primary"].rps, 18.0)
        self.assertAlmostEqual(by["podinfo"].rps, 2.0)
        self.assertEqual(by["podinfo"].service, "podinfo-canary")
        self.assertEqual(by["podinfo"].behaviour, sim.Behaviour(0.25, 300.0))
        self.assertEqual(by["podinfo-primary"].behaviour, sim.Behaviour(0.0, 20.0))

    def test_namespace_rps_annotation(self):
        views, services, deps = flagger_canary_state()
        ns = {"test": namespace("test", {"sim.pennant.dev/rps": "100"})}
        flows = sim.compute_flows(views, ns, services, deps, 20.0)
        self.assertAlmostEqual(sum(f.rps for f in flows), 100.0)

    def test_unready_workload_gets_nothing(self):
        for ready in (0, None):
            views, services, deps = flagger_canary_state(canary_ready=ready)
            flows = sim.compute_flows(views, {}, services, deps, 20.0)
            self.assertEqual([(f.workload, f.rps) for f in flows], [("podinfo-primary", 18.0)])
            self.assertIn("podinfo-canary=10%(no ready workload)", sim.describe(views))

    def test_missing_service_or_selector(self):
        views, services, deps = flagger_canary_state()
        del services[("test", "podinfo-canary")]
        services[("test", "podinfo-primary")]["spec"] = {}
        self.assertEqual(sim.compute_flows(views, {}, services, deps, 20.0), [])

    def test_proportional_to_ready_replicas(self):
        views = [sim.RouteView("istio", "t", "v", sim.istio_splits(vs("t", "v", [{"route": [dest("s")]}])))]
        services = {("t", "s"): service("t", "s", {"app": "x"})}
        deps = [deployment("t", "x1", {"app": "x"}, 1), deployment("t", "x2", {"app": "x"}, 3),
                deployment("other", "x3", {"app": "x"}, 3)]
        flows = sim.compute_flows(views, {}, services, deps, 20.0)
        self.assertEqual([(f.workload, f.rps) for f in flows], [("x1", 5.0), ("x2", 15.0)])

    def test_ab_rps_and_mirror(self):
        v = vs("t", "v", [
            {"match": [{"headers": {"x": {"exact": "1"}}}], "route": [dest("canary")]},
            {"route": [dest("primary")], "mirror": {"host": "canary"}, "mirrorPercentage": {"value": 10}},
        ])
        views = [sim.RouteView("istio", "t", "v", sim.istio_splits(v))]
        services = {("t", n): service("t", n, {"app": n}) for n in ("canary", "primary")}
        deps = [deployment("t", n, {"app": n}) for n in ("canary", "primary")]
        flows = sim.compute_flows(views, {}, services, deps, 20.0)
        self.assertEqual(sorted((f.workload, f.rps) for f in flows), [("canary", 2.0), ("primary", 20.0)])
        ns = {"t": namespace("t", {"sim.pennant.dev/ab-rps": "4"})}
        flows = sim.compute_flows(views, ns, services, deps, 20.0)
        self.assertEqual(sorted((f.workload, f.rps) for f in flows),
                         [("canary", 2.0), ("canary", 4.0), ("primary", 20.0)])

    def test_bad_annotations_fall_back(self):
        warnings = []
        d = deployment("t", "x", {"a": "b"}, 1, {"sim.pennant.dev/error-rate": "lots",
                                                 "sim.pennant.dev/latency-ms": "-5"})
        self.assertEqual(sim.behaviour_of(d, warnings.append), sim.Behaviour(0.0, 0.001))
        self.assertEqual(len(warnings), 1)
        d2 = deployment("t", "x", {"a": "b"}, 1, {"sim.pennant.dev/error-rate": "7"})
        self.assertEqual(sim.behaviour_of(d2).error_rate, 1.0)
        self.assertEqual(sim.class_rates(namespace("t", {"sim.pennant.dev/rps": "nan"}), 20.0)["main"], 20.0)


def parse_exposition(text: str) -> dict[str, float]:
    """Minimal text-format parser: 'name{labels}' -> value; checks TYPE lines."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        out[series] = float(value)
    return out


def find(samples: dict, name: str, **labels) -> list[float]:
    res = []
    for series, v in samples.items():
        n, _, rest = series.partition("{")
        if n != name:
            continue
        if all(f'{k}="{val}"' in rest for k, val in labels.items()):
            res.append(v)
    return res


class MetricsTest(unittest.TestCase):
    def setUp(self):
        self.views, self.services, self.deps = flagger_canary_state(
            canary_ann={"sim.pennant.dev/error-rate": "0.1", "sim.pennant.dev/latency-ms": "300"})
        self.m = sim.Metrics()

    def run_ticks(self, n, dt=1.0, views=None, deps=None):
        for _ in range(n):
            flows = sim.compute_flows(self.views if views is None else views, {}, self.services,
                                      deps or self.deps, 20.0)
            self.m.add(flows, dt)
            self.m.set_gauges(self.views if views is None else views, 20.0, {})

    def test_deterministic_counts(self):
        self.run_ticks(100)
        s = parse_exposition(self.m.render())
        c = dict(destination_workload="podinfo", destination_workload_namespace="test", reporter="destination")
        self.assertEqual(find(s, "istio_requests_total", response_code="200", **c), [180])
        self.assertEqual(find(s, "istio_requests_total", response_code="500", **c), [20])
        self.assertEqual(find(s, "istio_request_duration_milliseconds_count", **c), [200])
        self.assertEqual(find(s, "istio_request_duration_milliseconds_sum", **c), [60000])
        self.assertEqual(find(s, "istio_request_duration_milliseconds_bucket", le="+Inf", **c), [200])
        self.assertEqual(find(s, "istio_request_duration_milliseconds_bucket", le="500", **c), [200])
        self.assertEqual(find(s, "istio_request_duration_milliseconds_bucket", le="0.5", **c), [0])
        p = dict(destination_workload="podinfo-primary", source_workload="loadgen",
                 destination_service="podinfo-primary.test.svc.cluster.local",
                 destination_service_name="podinfo-primary")
        self.assertEqual(find(s, "istio_requests_total", response_code="200", **p), [1800])
        self.assertEqual(find(s, "istio_requests_total", response_code="500", **p), [])  # no errors, no series
        self.assertEqual(find(s, "sim_route_weight", namespace="test", host="podinfo-canary"), [10])
        self.assertEqual(find(s, "sim_route_weight", namespace="test", host="podinfo-primary"), [90])
        self.assertEqual(find(s, "sim_route_rps", host="podinfo-canary", traffic="main"), [2])
        self.assertEqual(find(s, "sim_up"), [1])

    def test_success_rate_and_p99_from_exposition(self):
        self.run_ticks(300)
        s = parse_exposition(self.m.render())
        c = dict(destination_workload="podinfo")
        ok = sum(find(s, "istio_requests_total", response_code="200", **c))
        total = sum(find(s, "istio_requests_total", **c))
        self.assertAlmostEqual(ok / total * 100, 90.0, delta=0.5)
        bounds = list(sim.ISTIO_BUCKETS_MS) + [math.inf]
        cum = [find(s, "istio_request_duration_milliseconds_bucket", le=sim._fmt_le(b), **c)[0]
               for b in sim.ISTIO_BUCKETS_MS]
        cum.append(find(s, "istio_request_duration_milliseconds_bucket", le="+Inf", **c)[0])
        self.assertAlmostEqual(sim.histogram_quantile(0.99, bounds, cum), 330, delta=15)

    def test_counters_never_decrease(self):
        def snapshot():
            return parse_exposition(self.m.render())
        self.run_ticks(10, dt=0.37)
        before = snapshot()
        # canary scaled to zero, then weights swapped, then everything gone
        _, _, deps0 = flagger_canary_state(canary_ready=0)
        self.run_ticks(5, deps=deps0)
        views2, _, _ = flagger_canary_state(primary_w=0, canary_w=100)
        self.run_ticks(5, views=views2)
        self.run_ticks(5, views=[])
        after = snapshot()
        for k, v in before.items():
            if "_total" in k or "_bucket" in k or "_count" in k or "_sum" in k:
                self.assertGreaterEqual(after[k], v, k)
        self.assertEqual(find(after, "sim_route_weight"), [])

    def test_buckets_cumulative_in_le(self):
        self.run_ticks(7, dt=0.3)
        s = parse_exposition(self.m.render())
        for wl in ("podinfo", "podinfo-primary"):
            vals = [find(s, "istio_request_duration_milliseconds_bucket", destination_workload=wl,
                         le=sim._fmt_le(b))[0] for b in sim.ISTIO_BUCKETS_MS]
            vals.append(find(s, "istio_request_duration_milliseconds_bucket", destination_workload=wl,
                             le="+Inf")[0])
            self.assertEqual(vals, sorted(vals))

    def test_exposition_format(self):
        self.run_ticks(2)
        text = self.m.render()
        self.assertTrue(text.endswith("\n"))
        self.assertIn("# TYPE istio_requests_total counter", text)
        self.assertIn("# TYPE istio_request_duration_milliseconds histogram", text)
        self.assertIn('le="1800000"', text)
        self.assertIn('le="0.5"', text)
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            value = line.rsplit(" ", 1)[1]
            float(value)
            if line.startswith("istio_"):
                self.assertEqual(str(int(float(value))), value, line)  # integers

    def test_served_requests_are_exact_per_workload_and_leave_mirrors_out(self):
        # 10 % of 20 rps to a canary failing 10 % of its requests, 0.3 s ticks: the floored
        # istio counters lag the fluid count, the served counter does not
        self.run_ticks(7, dt=0.3)
        s = parse_exposition(self.m.render())
        served = dict(namespace="test", workload="podinfo")
        self.assertAlmostEqual(find(s, "sim_served_requests_total", code="500", **served)[0], 0.42, places=6)
        self.assertAlmostEqual(find(s, "sim_served_requests_total", code="200", **served)[0], 3.78, places=6)
        self.assertEqual(find(s, "istio_requests_total", response_code="500", destination_workload="podinfo"), [0])
        primary = dict(namespace="test", workload="podinfo-primary")
        self.assertAlmostEqual(find(s, "sim_served_requests_total", code="200", **primary)[0], 37.8, places=6)
        self.assertEqual(find(s, "sim_served_requests_total", code="500", **primary), [0.0])
        # a mirrored copy is answered by the canary (its series move) but served to no client
        v = vs("test", "podinfo", [{"route": [dest("podinfo-primary", 100)], "mirror": {"host": "podinfo-canary"}}])
        m = sim.Metrics()
        m.add(sim.compute_flows([sim.RouteView("istio", "test", "podinfo", sim.istio_splits(v))], {},
                                self.services, self.deps, 20.0), 1.0)
        s = parse_exposition(m.render())
        self.assertEqual(find(s, "istio_requests_total", response_code="200", destination_workload="podinfo"), [18])
        self.assertEqual(find(s, "sim_served_requests_total", workload="podinfo"), [])
        self.assertEqual(find(s, "sim_served_requests_total", code="200", workload="podinfo-primary"), [20.0])

    def test_label_escaping(self):
        self.assertEqual(sim._labels([("a", 'x"y\\z\n')]), '{a="x\\"y\\\\z\\n"}')


class FakeClient:
    def __init__(self, data: dict):
        self.data = data
        self.calls = []

    def list(self, path):
        self.calls.append(path)
        v = self.data.get(path)
        if v is None:
            raise sim.ApiError(404, "not found")
        if isinstance(v, Exception):
            raise v
        return v

    get = list

    def request(self, method, path, body=None):
        self.calls.append((method, path, body))
        return {}


class WatchingClient:
    """list_at and watch from a script, one step at a time: ``step()`` lets the next watch()
    call play its events (an Exception in them is raised) and waits until it has; the LISTs
    answer the next of ``lists`` (an Exception is raised)."""

    def __init__(self, lists, watches):
        self.lists, self.watches = list(lists), list(watches)
        self.listed = 0
        self.go, self.played = threading.Semaphore(0), threading.Semaphore(0)

    def step(self):
        self.go.release()
        assert self.played.acquire(timeout=5), "the watch did not run"

    def list_at(self, path):
        self.listed += 1
        v = self.lists.pop(0)
        if isinstance(v, Exception):
            raise v
        return v, str(self.listed)

    def watch(self, path, rv, on_event, stop):
        while not self.go.acquire(timeout=0.05):
            if stop.is_set():
                return rv
        try:
            for ev in self.watches.pop(0):
                if isinstance(ev, Exception):
                    raise ev
                on_event(*ev)
        finally:
            self.played.release()
        return rv


def obj(name, **fields):
    return {"metadata": {"namespace": "ns", "name": name}, **fields}


class WatchCacheTest(unittest.TestCase):
    def names(self, cache):
        return sorted(o["metadata"]["name"] + str(o.get("v", "")) for o in cache.list("/p"))

    def test_lists_come_from_the_watch_and_a_410_lists_again(self):
        stop = threading.Event()
        client = WatchingClient(
            lists=[[obj("a"), obj("b")], [obj("a", v=3), obj("z")]],
            watches=[[("MODIFIED", obj("a", v=2)), ("DELETED", obj("b")), ("ADDED", obj("c"))],
                     [sim.ApiError(410, "too old")], [("ADDED", obj("y"))]])
        cache = sim.WatchCache(client, stop)
        try:
            self.assertEqual(self.names(cache), ["a", "b"])  # the first LIST is a real one
            client.step()
            self.assertEqual(self.names(cache), ["a2", "c"])
            self.assertEqual(client.listed, 1)
            client.step()  # 410: LISTed again, then watched from there
            client.step()
            self.assertEqual(self.names(cache), ["a3", "y", "z"])
            self.assertEqual(client.listed, 2)
        finally:
            stop.set()

    def test_a_failed_list_after_a_broken_watch_fails_the_lists_until_one_works(self):
        stop = threading.Event()
        client = WatchingClient(lists=[[obj("a")], OSError("connection refused"), [obj("b")]],
                                watches=[[OSError("reset")], [("ADDED", obj("c"))]])
        cache = sim.WatchCache(client, stop)
        try:
            self.assertEqual(self.names(cache), ["a"])
            client.step()  # the watch breaks; the LIST after it fails
            deadline = time.time() + 5
            while True:
                try:
                    cache.list("/p")
                except OSError as e:
                    self.assertIn("refused", str(e))
                    break
                self.assertLess(time.time(), deadline, "the failed LIST never showed")
                time.sleep(0.01)
            client.step()  # a second later the LIST works and the watch goes on
            self.assertEqual(self.names(cache), ["b", "c"])
        finally:
            stop.set()


    def test_a_path_that_answers_404_is_listed_again_as_at_the_start(self):
        stop = threading.Event()
        client = WatchingClient(lists=[[obj("a")], [obj("b")]], watches=[[sim.ApiError(404, "gone")], []])
        cache = sim.WatchCache(client, stop)
        try:
            self.assertEqual(self.names(cache), ["a"])
            client.step()
            deadline = time.time() + 5
            while client.listed < 2:
                self.assertLess(time.time(), deadline, "no LIST after the 404")
                self.names(cache)
                time.sleep(0.01)
            self.assertEqual(self.names(cache), ["b"])
        finally:
            stop.set()


class SimulatorTest(unittest.TestCase):
    def setUp(self):
        self.logged = []
        self._log, sim.log = sim.log, self.logged.append

    def tearDown(self):
        sim.log = self._log

    def cluster(self):
        views, services, deps = flagger_canary_state()
        return {
            "/api/v1/namespaces": [namespace("test", {"sim.pennant.dev/rps": "10"})],
            "/api/v1/services": list(services.values()),
            "/apis/apps/v1/deployments": deps,
            "/apis/networking.istio.io/v1beta1/virtualservices": [
                vs("test", "podinfo", [{"route": [dest("podinfo-primary", 90), dest("podinfo-canary", 10)]}]),
                {"metadata": {"namespace": "test", "name": "broken"}, "spec": {"http": 5}},
            ],
            "/apis/apps/v1/daemonsets": [],
            "/api/v1/pods": [],
            "/api/v1/namespaces/test/pods": [],
            "/apis/networking.k8s.io/v1/ingresses": [],
            "/apis/gateway.networking.k8s.io/v1/httproutes": [],
        }

    def test_tick_falls_back_to_v1beta1_and_skips_malformed(self):
        client = FakeClient(self.cluster())
        m = sim.Metrics()
        s = sim.Simulator(client, m, 20.0)
        s.tick(1.0)
        s.tick(1.0)
        self.assertIn("/apis/networking.istio.io/v1/virtualservices", client.calls)
        # per tick: its own LIST, and the live one that judges the unready (no pod is Ready here)
        self.assertEqual(client.calls.count("/apis/networking.istio.io/v1beta1/virtualservices"), 4)
        self.assertEqual(client.calls.count("/apis/networking.istio.io/v1/virtualservices"), 1)
        out = parse_exposition(m.render())
        self.assertEqual(find(out, "istio_requests_total", destination_workload="podinfo-primary"), [18])
        self.assertEqual(find(out, "istio_requests_total", destination_workload="podinfo"), [2])
        self.assertTrue(any("test/broken: skipped malformed object" in line for line in self.logged))
        self.assertEqual(sum(line.startswith("routing: ") for line in self.logged), 1)  # logged on change only

    def test_apiserver_errors_do_not_kill_the_loop(self):
        data = self.cluster()
        good = self.cluster()
        data["/apis/apps/v1/deployments"] = ConnectionRefusedError("refused")
        client = FakeClient(data)
        m = sim.Metrics()
        s = sim.Simulator(client, m, 20.0)
        s.tick(1.0)  # nothing known yet: tick skipped
        self.assertEqual(m.api_errors, 1)
        self.assertEqual(find(parse_exposition(m.render()), "istio_requests_total"), [])
        data["/apis/apps/v1/deployments"] = good["/apis/apps/v1/deployments"]
        s.tick(1.0)
        self.assertEqual(find(parse_exposition(m.render()), "istio_requests_total",
                              destination_workload="podinfo"), [1])
        # later failures reuse the last known objects: traffic keeps flowing
        data["/apis/networking.istio.io/v1beta1/virtualservices"] = sim.ApiError(500, "boom")
        data["/api/v1/services"] = TimeoutError("slow")
        s.tick(1.0)
        self.assertEqual(m.api_errors, 4)  # + the live LIST of the VirtualServices for the unready
        self.assertEqual(find(parse_exposition(m.render()), "istio_requests_total",
                              destination_workload="podinfo"), [2])

    def test_no_crd(self):
        data = self.cluster()
        del data["/apis/networking.istio.io/v1beta1/virtualservices"]
        client = FakeClient(data)
        m = sim.Metrics()
        s = sim.Simulator(client, m, 20.0)
        s.tick(1.0)
        s.tick(1.0)  # not re-probed within 30 s
        self.assertEqual(client.calls.count("/apis/networking.istio.io/v1/virtualservices"), 1)
        self.assertEqual(find(parse_exposition(m.render()), "istio_requests_total"), [])
        self.assertEqual(sum("no API found" in line for line in self.logged), 1)
        self.assertFalse(any("ok again" in line for line in self.logged))


class ServingTest(unittest.TestCase):
    def test_http_endpoints_and_file_sd(self):
        m = sim.Metrics()
        server = sim._Server(("127.0.0.1", 0), sim.make_handler(m))
        t = threading.Thread(target=server.serve_forever, daemon=True)
        t.start()
        try:
            port = server.server_address[1]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                self.assertIn("version=0.0.4", r.headers["Content-Type"])
                self.assertIn("sim_up 1", r.read().decode())
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                self.assertEqual(r.status, 200)
        finally:
            server.shutdown()
            server.server_close()
        self.assertEqual(json.loads(sim.file_sd_content("127.0.0.1:19100")),
                         [{"targets": ["127.0.0.1:19100"], "labels": {"job": "sim"}}])
        self.assertEqual(sim.scrape_target("0.0.0.0", 5), "127.0.0.1:5")
        self.assertEqual(sim.parse_listen("127.0.0.1:19100"), ("127.0.0.1", 19100))



# --------------------------------------------------------------------------
# Router kinds added for issue 3: ingress-nginx, Gateway API, Services,
# DaemonSets, per-pod http series, /route
# --------------------------------------------------------------------------

NGINX = "nginx.ingress.kubernetes.io"


def series_labels(series: str) -> dict:
    _, _, rest = series.partition("{")
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest))


def find_exact(samples: dict, name: str, **labels) -> list[float]:
    """Values of `name` series whose labels include exactly these values."""
    return [v for series, v in sorted(samples.items())
            if series.partition("{")[0] == name
            and all(series_labels(series).get(k) == val for k, val in labels.items())]


def ingress(ns, name, svc, host="app.example.com", path="/", port=9898, ann=None) -> dict:
    return {"metadata": {"namespace": ns, "name": name, "annotations": ann or {}},
            "spec": {"ingressClassName": "nginx", "rules": [{"host": host, "http": {"paths": [
                {"path": path, "pathType": "Prefix",
                 "backend": {"service": {"name": svc, "port": {"number": port}}}}]}}]}}


def canary_ingress(ns, name, svc, weight=0, prefix=NGINX, extra=None, **kw) -> dict:
    ann = {f"{prefix}/canary": "true", f"{prefix}/canary-weight": str(weight)}
    ann.update({f"{prefix}/{k}": v for k, v in (extra or {}).items()})
    return ingress(ns, name, svc, ann=ann, **kw)


def httproute(ns, name, rules) -> dict:
    return {"metadata": {"namespace": ns, "name": name},
            "spec": {"parentRefs": [{"name": "gw"}], "rules": rules}}


def backend(name, weight=None, **extra) -> dict:
    b = {"group": "", "kind": "Service", "name": name, "port": 9898, **extra}
    if weight is not None:
        b["weight"] = weight
    return b


def daemonset(ns, name, labels, ready=1, ann=None) -> dict:
    d = deployment(ns, name, labels, None, ann)
    d["kind"] = "DaemonSet"
    d["status"] = {"numberReady": ready, "desiredNumberScheduled": 1}
    return d


def pod(ns, name, labels, owner_kind="ReplicaSet", owner=None, ready=True, phase="Running", deleting=False):
    meta = {"namespace": ns, "name": name, "labels": labels}
    if owner is not None:
        meta["ownerReferences"] = [{"kind": owner_kind, "name": owner, "controller": True}]
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"phase": phase, "conditions": [
        {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True" if ready else "False"}]}}


def podinfo_pods(ns="test"):
    """Two canary pods (Deployment podinfo), one primary pod, as kwok names them."""
    return [
        pod(ns, "podinfo-68d4cdcb86-gx9f8", {"app": "podinfo", "extra": "x"}, owner="podinfo-68d4cdcb86"),
        pod(ns, "podinfo-68d4cdcb86-v4mhs", {"app": "podinfo", "extra": "x"}, owner="podinfo-68d4cdcb86"),
        pod(ns, "podinfo-primary-5f7c9d-abcde", {"app": "podinfo-primary"}, owner="podinfo-primary-5f7c9d"),
    ]


# Flagger's builtin gatewayapi/kubernetes pod regex (target "podinfo").
FLAGGER_POD_RE = re.compile(r"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)")


class NginxTest(unittest.TestCase):
    def test_canary_prefix_detection(self):
        self.assertEqual(sim.nginx_canary_prefix(canary_ingress("t", "a-canary", "a-canary")), NGINX)
        self.assertEqual(sim.nginx_canary_prefix(
            canary_ingress("t", "a-canary", "a-canary", prefix="custom.ingress.kubernetes.io")),
            "custom.ingress.kubernetes.io")
        self.assertIsNone(sim.nginx_canary_prefix(ingress("t", "a", "a")))
        self.assertIsNone(sim.nginx_canary_prefix(ingress("t", "a", "a", ann={f"{NGINX}/canary": "false"})))
        self.assertIsNone(sim.nginx_canary_prefix(ingress("t", "a", "a", ann={"/canary": "true"})))

    def test_ingress_paths(self):
        self.assertEqual(sim.ingress_paths(ingress("t", "a", "podinfo")),
                         [sim.IngressPath("app.example.com", "/", "podinfo", "9898")])
        named = {"metadata": {"name": "x"}, "spec": {"defaultBackend": {"service": {"name": "s", "port": {"name": "http"}}}}}
        self.assertEqual(sim.ingress_paths(named), [sim.IngressPath("", "/", "s", "http")])

    def test_canary_weight_splits_main_and_ab(self):
        views = sim.nginx_views([
            canary_ingress("test", "podinfo-canary", "podinfo-canary", weight=30),
            ingress("test", "podinfo", "podinfo"),
        ])
        self.assertEqual([(v.router, v.namespace, v.name) for v in views], [("nginx", "test", "podinfo")])
        label = "test-podinfo-canary-9898"
        self.assertEqual(views[0].splits, [
            sim.Split("test", "podinfo", 70.0, "main"),
            sim.Split("test", "podinfo-canary", 30.0, "main", label),
            sim.Split("test", "podinfo", 70.0, "ab"),
            sim.Split("test", "podinfo-canary", 30.0, "ab", label),
        ])

    def test_weight_total_and_custom_prefix(self):
        p = "custom.ingress.kubernetes.io"
        views = sim.nginx_views([
            ingress("test", "podinfo", "podinfo"),
            canary_ingress("test", "podinfo-canary", "podinfo-canary", weight=5, prefix=p,
                           extra={"canary-weight-total": "10"}),
        ])
        self.assertEqual([sp.weight for sp in views[0].splits if sp.traffic == "main"], [50.0, 50.0])

    def test_by_header_and_by_cookie_send_ab_to_canary(self):
        for extra in ({"canary-by-header": "x-canary", "canary-by-header-value": "insider"},
                      {"canary-by-header": "x-canary", "canary-by-header-pattern": "ins.*"},
                      {"canary-by-cookie": "canary"}):
            views = sim.nginx_views([ingress("test", "podinfo", "podinfo"),
                                     canary_ingress("test", "podinfo-canary", "podinfo-canary", 0, extra=extra)])
            w = {(sp.host, sp.traffic): sp.weight for sp in views[0].splits}
            self.assertEqual(w, {("podinfo", "main"): 100.0, ("podinfo-canary", "main"): 0.0,
                                 ("podinfo", "ab"): 0.0, ("podinfo-canary", "ab"): 100.0}, extra)

    def test_pairing_needs_same_namespace_host_and_path(self):
        for can in (canary_ingress("other", "podinfo-canary", "podinfo-canary", 50),
                    canary_ingress("test", "podinfo-canary", "podinfo-canary", 50, host="b.example.com"),
                    canary_ingress("test", "podinfo-canary", "podinfo-canary", 50, path="/api")):
            views = sim.nginx_views([ingress("test", "podinfo", "podinfo"), can])
            self.assertEqual([v.name for v in views], ["podinfo"])
            self.assertEqual({sp.host for sp in views[0].splits}, {"podinfo"})
        self.assertEqual(sim.nginx_views([canary_ingress("test", "x-canary", "x-canary", 50)]), [])
        self.assertEqual(sim.nginx_views([{"metadata": {"name": "junk"}, "spec": {"rules": 5}},
                                          {"spec": {}}]), [])

    def nginx_state(self, weight, extra=None, canary_ann=None):
        views = sim.nginx_views([ingress("test", "podinfo", "podinfo"),
                                 canary_ingress("test", "podinfo-canary", "podinfo-canary", weight, extra=extra)])
        _, services, deps = flagger_canary_state(canary_ann=canary_ann)
        return views, services, deps

    def test_series_for_flagger_nginx_queries(self):
        views, services, deps = self.nginx_state(
            20, canary_ann={"sim.pennant.dev/error-rate": "0.25", "sim.pennant.dev/latency-ms": "40"})
        m = sim.Metrics()
        for _ in range(100):
            m.add(sim.compute_flows(views, {}, services, deps, 20.0, pods=podinfo_pods()), 1.0)
        s = parse_exposition(m.render())
        self.assertEqual(find(s, "istio_requests_total"), [])  # no mesh on this path
        base = dict(namespace="test", ingress="podinfo", method="GET", path="/")
        can = dict(base, service="podinfo-canary", canary="test-podinfo-canary-9898")
        self.assertEqual(find_exact(s, "nginx_ingress_controller_requests", status="200", **can), [300])
        self.assertEqual(find_exact(s, "nginx_ingress_controller_requests", status="500", **can), [100])
        prim = dict(base, service="podinfo", canary="")
        self.assertEqual(find_exact(s, "nginx_ingress_controller_requests", status="200", **prim), [1600])
        self.assertEqual(find_exact(s, "nginx_ingress_controller_requests", status="500", **prim), [])
        # Flagger: canary!="" success rate, and avg duration = _sum/_count * 1000
        canary_series = {k: v for k, v in s.items() if series_labels(k).get("canary", "") != ""}
        ok = sum(find_exact(canary_series, "nginx_ingress_controller_requests", status="200"))
        total = sum(find_exact(canary_series, "nginx_ingress_controller_requests"))
        self.assertAlmostEqual(ok / total * 100, 75.0)
        dsum = find_exact(canary_series, "nginx_ingress_controller_response_duration_seconds_sum")[0]
        dcount = find_exact(canary_series, "nginx_ingress_controller_response_duration_seconds_count")[0]
        self.assertAlmostEqual(dsum / dcount * 1000, 40.0, places=3)
        self.assertEqual(find_exact(canary_series, "nginx_ingress_controller_response_duration_seconds_bucket",
                                    le="0.05"), [400])
        self.assertEqual(find_exact(canary_series, "nginx_ingress_controller_response_duration_seconds_bucket",
                                    le="+Inf"), [400])
        self.assertTrue(all("status" not in series_labels(k) for k in s
                            if k.startswith("nginx_ingress_controller_response_duration")))
        # the app's own series, per canary pod: 2 pods share the 4 rps
        for name in ("podinfo-68d4cdcb86-gx9f8", "podinfo-68d4cdcb86-v4mhs"):
            self.assertEqual(find_exact(s, "http_request_duration_seconds_count",
                                        kubernetes_pod_name=name, status="200"), [150])
            self.assertEqual(find_exact(s, "http_request_duration_seconds_count",
                                        kubernetes_pod_name=name, status="500"), [50])

    def test_ab_rps_goes_to_canary_by_header(self):
        views, services, deps = self.nginx_state(0, extra={"canary-by-header": "x-canary",
                                                           "canary-by-header-value": "insider"})
        ns = {"test": namespace("test", {"sim.pennant.dev/ab-rps": "3"})}
        flows = sim.compute_flows(views, ns, services, deps, 20.0)
        got = {(f.service, f.canary): f.rps for f in flows}
        self.assertEqual(got, {("podinfo", ""): 20.0, ("podinfo-canary", "test-podinfo-canary-9898"): 3.0})
        self.assertEqual({f.router for f in flows}, {"nginx"})
        self.assertEqual({f.route for f in flows}, {"podinfo"})


class GatewayApiTest(unittest.TestCase):
    def test_flagger_canary_weights(self):
        r = httproute("test", "podinfo", [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                                           "backendRefs": [backend("podinfo-primary", 90), backend("podinfo-canary", 10)]}])
        self.assertEqual(sim.gatewayapi_splits(r), [sim.Split("test", "podinfo-primary", 90.0),
                                                    sim.Split("test", "podinfo-canary", 10.0)])

    def test_default_weight_namespace_and_kinds(self):
        r = httproute("test", "x", [{"backendRefs": [
            backend("a"), backend("b", namespace="other"), {"name": "c", "kind": "ServiceImport", "group": "mcs"},
            backend("d", 0)]}])
        self.assertEqual(sim.gatewayapi_splits(r), [sim.Split("test", "a", 50.0), sim.Split("other", "b", 50.0),
                                                    sim.Split("test", "d", 0.0)])

    def test_ab_and_sticky_rules(self):
        r = httproute("test", "podinfo", [
            {"matches": [{"headers": [{"type": "RegularExpression", "name": "Cookie",
                                       "value": ".*flagger-cookie.*abc.*"}]}],
             "backendRefs": [backend("podinfo-primary", 0), backend("podinfo-canary", 100)]},
            {"matches": [{"queryParams": [{"name": "canary", "value": "1"}]}],
             "backendRefs": [backend("podinfo-canary", 100)]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
             "backendRefs": [backend("podinfo-primary", 100)]},
            {"backendRefs": [backend("unreachable")]},
        ])
        self.assertEqual(sim.gatewayapi_splits(r), [
            sim.Split("test", "podinfo-primary", 0.0, "ab"), sim.Split("test", "podinfo-canary", 100.0, "ab"),
            sim.Split("test", "podinfo-canary", 100.0, "ab"), sim.Split("test", "podinfo-primary", 100.0, "main")])
        all_ab = httproute("test", "x", [{"matches": [{"headers": [{"name": "x", "value": "1"}]}],
                                          "backendRefs": [backend("a")]}])
        self.assertEqual(sim.gatewayapi_splits(all_ab), [sim.Split("test", "a", 100.0, "main")])

    def test_request_mirror(self):
        r = httproute("test", "podinfo", [{
            "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "podinfo-canary", "port": 9898}}},
                        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "m2", "port": 1},
                                                                    "fraction": {"numerator": 1, "denominator": 4}}},
                        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "m3", "port": 1}, "percent": 30}}],
            "backendRefs": [backend("podinfo-primary", 100), backend("podinfo-canary", 0)]}])
        self.assertEqual(sim.gatewayapi_splits(r)[2:], [sim.Split("test", "podinfo-canary", 100.0, "mirror"),
                                                        sim.Split("test", "m2", 25.0, "mirror"),
                                                        sim.Split("test", "m3", 30.0, "mirror")])

    def test_http_series_and_flagger_pod_regex(self):
        r = httproute("test", "podinfo", [{"backendRefs": [backend("podinfo-primary", 50), backend("podinfo-canary", 50)]}])
        views = [sim.RouteView("httproute", "test", "podinfo", sim.gatewayapi_splits(r))]
        _, services, deps = flagger_canary_state(canary_ann={"sim.pennant.dev/error-rate": "0.1",
                                                             "sim.pennant.dev/latency-ms": "300"})
        m = sim.Metrics()
        for _ in range(300):
            m.add(sim.compute_flows(views, {}, services, deps, 20.0, pods=podinfo_pods()), 1.0)
        s = parse_exposition(m.render())
        self.assertEqual(find(s, "istio_requests_total"), [])
        self.assertEqual(find(s, "nginx_ingress_controller_requests"), [])
        canary = {k: v for k, v in s.items() if k.startswith("http_request_duration_seconds")
                  and series_labels(k)["kubernetes_namespace"] == "test"
                  and FLAGGER_POD_RE.fullmatch(series_labels(k)["kubernetes_pod_name"])}
        pods = {series_labels(k)["kubernetes_pod_name"] for k in canary}
        self.assertEqual(pods, {"podinfo-68d4cdcb86-gx9f8", "podinfo-68d4cdcb86-v4mhs"})  # not the primary
        ok = sum(find_exact(canary, "http_request_duration_seconds_count", status="200"))
        total = sum(find_exact(canary, "http_request_duration_seconds_count"))
        self.assertEqual(total, 3000)
        self.assertAlmostEqual(ok / total * 100, 90.0, delta=0.1)
        bounds = [b / 1000 for b in sim.HTTP_BUCKETS_MS] + [math.inf]
        les = [sim._fmt_le(b) for b in bounds[:-1]] + ["+Inf"]
        self.assertEqual(les[:3] + les[-2:], ["0.005", "0.01", "0.025", "10", "+Inf"])
        cum = [sum(find_exact(canary, "http_request_duration_seconds_bucket", le=le)) for le in les]
        self.assertAlmostEqual(sim.histogram_quantile(0.99, bounds, cum) * 1000, 330, delta=15)
        dsum = sum(find_exact(canary, "http_request_duration_seconds_sum"))
        self.assertAlmostEqual(dsum / total, 0.3, places=4)
        primary = find_exact(s, "http_request_duration_seconds_count", kubernetes_pod_name="podinfo-primary-5f7c9d-abcde")
        self.assertEqual(primary, [3000])


class ServiceKindTest(unittest.TestCase):
    def services(self):
        _, services, _ = flagger_canary_state()
        services[("test", "headless")] = {"metadata": {"namespace": "test", "name": "headless"}, "spec": {}}
        return services

    def test_namespace_annotation_reaches_unrouted_services(self):
        ns = {"test": namespace("test", {"sim.pennant.dev/service-rps": "5"})}
        views = sim.service_views(self.services(), ns, routed={("test", "podinfo-primary")})
        self.assertEqual([(v.router, v.name, v.rates) for v in views],
                         [("service", "podinfo", {"service": 5.0}), ("service", "podinfo-canary", {"service": 5.0})])
        self.assertEqual(views[0].splits, [sim.Split("test", "podinfo", 100.0, "service")])
        self.assertEqual(sim.service_views(self.services(), {"test": namespace("test")}, set()), [])

    def test_service_annotation_wins(self):
        services = self.services()
        services[("test", "podinfo-canary")]["metadata"]["annotations"] = {"sim.pennant.dev/service-rps": "7"}
        services[("test", "podinfo")]["metadata"]["annotations"] = {"sim.pennant.dev/service-rps": "0"}
        ns = {"test": namespace("test", {"sim.pennant.dev/service-rps": "5"})}
        views = sim.service_views(services, ns, routed={("test", "podinfo-canary")})
        self.assertEqual({v.name: v.rates["service"] for v in views},
                         {"podinfo": 0.0, "podinfo-primary": 5.0, "podinfo-canary": 7.0})

    def test_kubernetes_blue_green_flows(self):
        _, services, deps = flagger_canary_state(canary_ann={"sim.pennant.dev/latency-ms": "50"})
        ns = {"test": namespace("test", {"sim.pennant.dev/service-rps": "4", "sim.pennant.dev/rps": "99"})}
        views = sim.service_views(services, ns, set())
        flows = sim.compute_flows(views, ns, services, deps, 20.0, pods=podinfo_pods())
        got = sorted((f.service, f.workload, f.rps, f.router, len(f.pods)) for f in flows)
        self.assertEqual(got, [("podinfo", "podinfo-primary", 4.0, "service", 1),
                               ("podinfo-canary", "podinfo", 4.0, "service", 2),
                               ("podinfo-primary", "podinfo-primary", 4.0, "service", 1)])
        m = sim.Metrics()
        m.add(flows, 10.0)
        m.set_gauges(views, 20.0, ns)
        s = parse_exposition(m.render())
        self.assertEqual(find(s, "istio_requests_total"), [])
        self.assertEqual(find_exact(s, "http_request_duration_seconds_count", kubernetes_namespace="test",
                                    kubernetes_pod_name="podinfo-68d4cdcb86-gx9f8", status="200"), [20])
        self.assertEqual(find_exact(s, "http_request_duration_seconds_sum",
                                    kubernetes_pod_name="podinfo-68d4cdcb86-gx9f8"), [1.0])
        self.assertEqual(find_exact(s, "http_request_duration_seconds_count",
                                    kubernetes_pod_name="podinfo-primary-5f7c9d-abcde"), [80])
        self.assertEqual(find_exact(s, "sim_route_rps", host="podinfo-canary", traffic="service"), [4])


class WorkloadTest(unittest.TestCase):
    def test_workload_pods_by_owner_selector_and_readiness(self):
        d = deployment("test", "podinfo", {"app": "podinfo"})
        primary = deployment("test", "podinfo-primary", {"app": "podinfo"})  # same labels on purpose
        pods = [
            pod("test", "podinfo-abc12-x1", {"app": "podinfo"}, owner="podinfo-abc12"),
            pod("test", "podinfo-primary-def34-y2", {"app": "podinfo"}, owner="podinfo-primary-def34"),
            pod("test", "podinfo-abc12-x3", {"app": "podinfo"}, owner="podinfo-abc12", ready=False),
            pod("test", "podinfo-abc12-x4", {"app": "podinfo"}, owner="podinfo-abc12", deleting=True),
            pod("test", "podinfo-abc12-x5", {"app": "podinfo"}, owner="podinfo-abc12", phase="Pending"),
            pod("other", "podinfo-abc12-x6", {"app": "podinfo"}, owner="podinfo-abc12"),
            pod("test", "bare", {"app": "podinfo"}),
        ]
        self.assertEqual(sim.workload_pods(d, pods), ["bare", "podinfo-abc12-x1"])
        self.assertEqual(sim.workload_pods(primary, pods), ["bare", "podinfo-primary-def34-y2"])
        ds = daemonset("test", "agent", {"app": "agent"})
        ds_pods = [pod("test", "agent-8zdm4", {"app": "agent"}, "DaemonSet", "agent"),
                   pod("test", "agent-primary-k2j4h", {"app": "agent"}, "DaemonSet", "agent-primary")]
        self.assertEqual(sim.workload_pods(ds, ds_pods), ["agent-8zdm4"])

    def test_label_index_finds_what_a_scan_finds(self):
        deps = [deployment("a", "web", {"app": "web", "tier": "front"}),
                deployment("a", "web-primary", {"app": "web-primary"}),
                deployment("a", "api", {"app": "api", "tier": "front"}),
                deployment("b", "web", {"app": "web", "tier": "front"}),
                deployment("a", "odd", {"app": 7})]
        pods = [pod("a", "web-1-x", {"app": "web", "tier": "front"}, owner="web-1"),
                pod("a", "web-primary-2-y", {"app": "web-primary"}, owner="web-primary-2"),
                pod("b", "web-3-z", {"app": "web", "tier": "front"}, owner="web-3"),
                pod("a", "api-4-w", {"app": "api"}, owner="api-4")]
        by_template, by_pod = sim.ByLabels(deps, sim.template_labels), sim.ByLabels(pods, sim.pod_labels)
        selectors = [{"app": "web"}, {"tier": "front"}, {"tier": "front", "app": "api"},
                     {"app": "none"}, {"app": 7}, {"tier": "front", "app": "web-primary"}]
        for ns in ("a", "b", "c"):
            for sel in selectors:
                svc = service(ns, "s", sel)
                scanned = sim.workloads_for_service(svc, deps)
                self.assertEqual(sim.workloads_for_service(svc, by_template), scanned, (ns, sel))
        found = {(d["metadata"]["namespace"], d["metadata"]["name"]): sim.workload_pods(d, by_pod) for d in deps}
        self.assertEqual(found, {(d["metadata"]["namespace"], d["metadata"]["name"]): sim.workload_pods(d, pods)
                                 for d in deps})
        self.assertEqual(found[("a", "web")], ["web-1-x"])
        self.assertEqual([d["metadata"]["name"] for d in sim.workloads_for_service(
            service("a", "s", {"tier": "front"}), by_template)], ["api", "web"])

    def test_daemonset_readiness_and_traffic(self):
        ns = "test"
        services = {(ns, "agent-canary"): service(ns, "agent-canary", {"app": "agent"}),
                    (ns, "agent-primary"): service(ns, "agent-primary", {"app": "agent-primary"})}
        views = [sim.RouteView("istio", ns, "agent", sim.istio_splits(vs(ns, "agent", [
            {"route": [dest("agent-primary", 60), dest("agent-canary", 40)]}])))]
        workloads = [daemonset(ns, "agent", {"app": "agent"}, 1, {"sim.pennant.dev/latency-ms": "80"}),
                     daemonset(ns, "agent-primary", {"app": "agent-primary"}, 1)]
        self.assertEqual(sim.ready_replicas(workloads[0]), 1)
        pods = [pod(ns, "agent-8zdm4", {"app": "agent"}, "DaemonSet", "agent")]
        flows = sim.compute_flows(views, {}, services, workloads, 20.0, pods=pods)
        self.assertEqual(sorted((f.workload, f.rps, f.pods) for f in flows),
                         [("agent", 8.0, ("agent-8zdm4",)), ("agent-primary", 12.0, ())])
        self.assertEqual(flows[0].behaviour.latency_ms if flows[0].workload == "agent"
                         else flows[1].behaviour.latency_ms, 80.0)
        m = sim.Metrics()
        m.add(flows, 1.0)
        s = parse_exposition(m.render())
        self.assertEqual(find(s, "istio_requests_total", destination_workload="agent"), [8])
        self.assertEqual(find_exact(s, "http_request_duration_seconds_count", kubernetes_pod_name="agent-8zdm4"), [8])
        # pennant parks the canary DaemonSet on a nodeSelector matching no node: numberReady 0
        workloads[0]["status"] = {"numberReady": 0, "desiredNumberScheduled": 0}
        flows = sim.compute_flows(views, {}, services, workloads, 20.0, pods=[])
        self.assertEqual([f.workload for f in flows], ["agent-primary"])


def sa_virtualservice(ns="test", cookie="flagger-cookie=LpsIaLdoNZ", canary_w=10):
    """Flagger/pennant session-affinity VirtualService (flagger.md §3.2)."""
    name, value = cookie.split("=")
    return vs(ns, "podinfo", [
        {"match": [{"headers": {"Cookie": {"regex": f".*{name}.*{value}.*"}}}],
         "route": [dest("podinfo-primary", 0), dest("podinfo-canary", 100)]},
        {"match": [{"headers": {"x-canary": {"exact": "insider"}}}, {"headers": {"x-user": {"prefix": "beta-"}}}],
         "route": [dest("podinfo-canary", 100)]},
        {"route": [dest("podinfo-primary", 100 - canary_w),
                   dict(dest("podinfo-canary", canary_w),
                        headers={"response": {"add": {"Set-Cookie": f"{cookie}; Max-Age=86400"}}})]},
    ])


def q(**kw) -> sim.RouteQuery:
    headers = {k.lower(): v for k, v in kw.pop("headers", {}).items()}
    return sim.RouteQuery(kw.pop("namespace", "test"), kw.pop("router", "istio"), kw.pop("name", "podinfo"),
                          headers, **kw)


class RouteTest(unittest.TestCase):
    def test_parse_route_query(self):
        r = sim.parse_route_query("namespace=t&router=istio&name=p&header.Cookie=a%3D1&header.cookie=b%3D2"
                                  "&header.X-Canary=insider&query.v=2&seed=7")
        self.assertEqual(r, sim.RouteQuery("t", "istio", "p", {"cookie": "a=1; b=2", "x-canary": "insider"},
                                           {"v": "2"}, "/", "GET", "7"))
        for bad in ("router=istio&name=p", "namespace=t&router=nginx&name=p", ""):
            with self.assertRaises(ValueError):
                sim.parse_route_query(bad)

    def test_istio_weighted_rule_is_deterministic_and_sets_cookie(self):
        obj = sa_virtualservice()
        seen = {}
        for i in range(2000):
            d = sim.route_request("istio", obj, q(seed=str(i)))
            self.assertEqual(d, sim.route_request("istio", obj, q(seed=str(i))))  # deterministic
            self.assertEqual(d["rule"], 2)
            seen[d["service"]] = seen.get(d["service"], 0) + 1
            if d["service"] == "podinfo-canary":
                self.assertEqual(d["setCookie"], ["flagger-cookie=LpsIaLdoNZ; Max-Age=86400"])
            else:
                self.assertEqual(d["setCookie"], [])
        self.assertAlmostEqual(seen["podinfo-canary"] / 2000, 0.10, delta=0.02)
        self.assertEqual(set(seen), {"podinfo-primary", "podinfo-canary"})

    def test_istio_sticky_cookie_and_header_matches(self):
        obj = sa_virtualservice()
        for i in range(50):
            d = sim.route_request("istio", obj, q(seed=str(i), headers={"Cookie": "x=1; flagger-cookie=LpsIaLdoNZ"}))
            self.assertEqual((d["rule"], d["namespace"], d["service"], d["setCookie"]),
                             (0, "test", "podinfo-canary", []))
        other = sim.route_request("istio", obj, q(seed="1", headers={"Cookie": "flagger-cookie=OTHER"}))
        self.assertEqual(other["rule"], 2)
        self.assertEqual(sim.route_request("istio", obj, q(headers={"X-Canary": "insider"}))["rule"], 1)
        self.assertEqual(sim.route_request("istio", obj, q(seed="3", headers={"x-canary": "insider2"}))["rule"], 2)
        self.assertEqual(sim.route_request("istio", obj, q(headers={"x-user": "beta-7"}))["rule"], 1)
        only_match = vs("test", "p", [{"match": [{"headers": {"x": {"exact": "1"}}}], "route": [dest("a")]}])
        self.assertIsNone(sim.route_request("istio", only_match, q()))
        uri = vs("test", "p", [{"match": [{"uri": {"prefix": "/api"}}], "route": [dest("a")]},
                               {"route": [dest("b.other.svc.cluster.local")]}])
        self.assertEqual(sim.route_request("istio", uri, q(path="/api/x"))["service"], "a")
        self.assertEqual(sim.route_request("istio", uri, q())[("namespace")], "other")

    def test_istio_expired_cookie_on_route(self):
        obj = vs("test", "podinfo", [
            {"match": [{"headers": {"Cookie": {"regex": ".*flagger-cookie.*old.*"}}}],
             "headers": {"response": {"add": {"Set-Cookie": "flagger-cookie=old; Max-Age=-1"}}},
             "route": [dest("podinfo-primary", 100), dest("podinfo-canary", 0)]},
            {"route": [dest("podinfo-primary", 100), dest("podinfo-canary", 0)]}])
        d = sim.route_request("istio", obj, q(seed="x", headers={"Cookie": "flagger-cookie=old"}))
        self.assertEqual((d["rule"], d["service"], d["setCookie"]),
                         (0, "podinfo-primary", ["flagger-cookie=old; Max-Age=-1"]))

    def sa_httproute(self):
        """pennant's session-affinity HTTPRoute (weighted rule FIRST to check precedence)."""
        cookie = "flagger-cookie=LpsIaLdoNZ"
        set_cookie = {"type": "ResponseHeaderModifier",
                      "responseHeaderModifier": {"add": [{"name": "Set-Cookie", "value": cookie + "; Max-Age=86400"}]}}
        return httproute("test", "podinfo", [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
             "backendRefs": [backend("podinfo-primary", 80), backend("podinfo-canary", 20, filters=[set_cookie])]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                          "headers": [{"type": "RegularExpression", "name": "Cookie",
                                       "value": ".*flagger-cookie.*LpsIaLdoNZ.*"}]}],
             "backendRefs": [backend("podinfo-primary", 0), backend("podinfo-canary", 100)]},
            {"matches": [{"path": {"type": "Exact", "value": "/exact"}}], "backendRefs": [backend("e")],
             "filters": [{"type": "ResponseHeaderModifier",
                          "responseHeaderModifier": {"set": [{"name": "set-cookie", "value": "c=1; Max-Age=-1"}]}}]},
        ])

    def test_httproute_precedence_weights_and_filters(self):
        obj = self.sa_httproute()
        seen = {}
        for i in range(2000):
            d = sim.route_request("httproute", obj, q(router="httproute", seed=str(i)))
            self.assertEqual(d["rule"], 0)
            seen[d["service"]] = seen.get(d["service"], 0) + 1
            self.assertEqual(d["setCookie"], ["flagger-cookie=LpsIaLdoNZ; Max-Age=86400"]
                             if d["service"] == "podinfo-canary" else [])
        self.assertAlmostEqual(seen["podinfo-canary"] / 2000, 0.20, delta=0.03)
        sticky = sim.route_request("httproute", obj, q(router="httproute", seed="1",
                                                      headers={"cookie": "flagger-cookie=LpsIaLdoNZ"}))
        self.assertEqual((sticky["rule"], sticky["service"], sticky["setCookie"]), (1, "podinfo-canary", []))
        exact = sim.route_request("httproute", obj, q(router="httproute", path="/exact"))
        self.assertEqual((exact["rule"], exact["service"], exact["setCookie"]), (2, "e", ["c=1; Max-Age=-1"]))
        none = httproute("test", "x", [{"matches": [{"headers": [{"name": "x", "value": "1"}]}],
                                        "backendRefs": [backend("a")]}])
        self.assertIsNone(sim.route_request("httproute", none, q(router="httproute")))
        zero = httproute("test", "x", [{"backendRefs": [backend("a", 0)]}])
        self.assertIsNone(sim.route_request("httproute", zero, q(router="httproute"))["service"])

    def test_pick_workload(self):
        _, services, deps = flagger_canary_state(canary_ready=0)
        self.assertEqual(sim.pick_workload(services[("test", "podinfo-canary")], deps, "1"), None)
        self.assertEqual(sim.pick_workload(services[("test", "podinfo")], deps, "1"), "podinfo-primary")
        self.assertIsNone(sim.pick_workload(None, deps, "1"))

    def route_cluster(self):
        _, services, deps = flagger_canary_state()
        return {
            "/apis/networking.istio.io/v1/namespaces/test/virtualservices/podinfo": sa_virtualservice(),
            "/apis/gateway.networking.k8s.io/v1beta1/namespaces/test/httproutes/podinfo": self.sa_httproute(),
            "/api/v1/namespaces/test/services/podinfo-canary": services[("test", "podinfo-canary")],
            "/api/v1/namespaces/test/services/podinfo-primary": services[("test", "podinfo-primary")],
            "/apis/apps/v1/namespaces/test/deployments": deps,
            "/apis/apps/v1/namespaces/test/daemonsets": [],
        }

    def test_simulator_route_and_http_endpoint(self):
        s = sim.Simulator(FakeClient(self.route_cluster()), sim.Metrics(), 20.0)
        code, doc = s.route("namespace=test&router=istio&name=podinfo&header.Cookie=flagger-cookie%3DLpsIaLdoNZ")
        self.assertEqual((code, doc), (200, {"rule": 0, "namespace": "test", "service": "podinfo-canary",
                                             "setCookie": [], "workload": "podinfo"}))
        code, doc = s.route("namespace=test&router=httproute&name=podinfo&seed=4"
                            "&header.Cookie=flagger-cookie%3DLpsIaLdoNZ")  # served by v1beta1
        self.assertEqual((code, doc["service"], doc["workload"]), (200, "podinfo-canary", "podinfo"))
        self.assertEqual(s.route("namespace=test&router=istio&name=missing")[0], 404)
        self.assertEqual(s.route("namespace=test&router=bogus&name=podinfo")[0], 400)
        server = sim._Server(("127.0.0.1", 0), sim.make_handler(sim.Metrics(), s.route))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            base = f"http://127.0.0.1:{server.server_address[1]}/route?"
            qs = urllib.parse.urlencode({"namespace": "test", "router": "istio", "name": "podinfo", "seed": "5"})
            canary = primary = 0
            for i in range(40):
                with urllib.request.urlopen(f"{base}{qs}{i}", timeout=5) as r:
                    self.assertEqual(r.headers["Content-Type"], "application/json")
                    doc = json.loads(r.read())
                if doc["service"] == "podinfo-canary":
                    canary += 1
                    self.assertEqual(doc["workload"], "podinfo")
                    self.assertEqual(doc["setCookie"], ["flagger-cookie=LpsIaLdoNZ; Max-Age=86400"])
                else:
                    primary += 1
                    self.assertEqual(doc["workload"], "podinfo-primary")
            self.assertGreater(primary, canary)
            with self.assertRaises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(base + "namespace=test", timeout=5)
            self.assertEqual(e.exception.code, 400)
            self.assertIn("missing parameter", json.loads(e.exception.read())["error"])
        finally:
            server.shutdown()
            server.server_close()


class SimulatorKindsTest(unittest.TestCase):
    def setUp(self):
        self.logged = []
        self._log, sim.log = sim.log, self.logged.append

    def tearDown(self):
        sim.log = self._log

    def test_tick_with_every_router_kind(self):
        _, services, deps = flagger_canary_state()
        for n in ("web", "gw", "plain"):
            for k, v in flagger_canary_state(ns=n)[1].items():
                services[k] = v
            deps += flagger_canary_state(ns=n)[2]
        ds = daemonset("plain", "agent", {"app": "agent"})
        services[("plain", "agent")] = service("plain", "agent", {"app": "agent"})
        data = {
            "/api/v1/namespaces": [namespace("test"), namespace("web", {"sim.pennant.dev/rps": "10"}),
                                   namespace("gw", {"sim.pennant.dev/service-rps": "1"}),
                                   namespace("plain", {"sim.pennant.dev/service-rps": "2"})],
            "/api/v1/services": list(services.values()),
            "/apis/apps/v1/deployments": deps,
            "/apis/apps/v1/daemonsets": [ds],
            "/api/v1/pods": podinfo_pods("web") + podinfo_pods("plain") + [
                pod("plain", "agent-8zdm4", {"app": "agent"}, "DaemonSet", "agent")],
            "/apis/networking.istio.io/v1/virtualservices": [],
            "/apis/networking.k8s.io/v1/ingresses": [
                ingress("web", "podinfo", "podinfo"), canary_ingress("web", "podinfo-canary", "podinfo-canary", 40)],
            "/apis/gateway.networking.k8s.io/v1/httproutes": [
                httproute("gw", "podinfo", [{"backendRefs": [backend("podinfo-primary", 75), backend("podinfo-canary", 25)]}]),
                {"metadata": {"namespace": "gw", "name": "broken"}, "spec": {"rules": 7}}],
        }
        m = sim.Metrics()
        s = sim.Simulator(FakeClient(data), m, 20.0)
        s.tick(1.0)
        s.tick(1.0)
        out = parse_exposition(m.render())
        self.assertEqual(find_exact(out, "nginx_ingress_controller_requests", namespace="web",
                                    canary="web-podinfo-canary-9898"), [8])
        self.assertEqual(find_exact(out, "nginx_ingress_controller_requests", namespace="web", canary=""), [12])
        self.assertEqual(find_exact(out, "sim_route_rps", namespace="gw", host="podinfo-canary", traffic="main"), [5])
        # gw: the routed podinfo-primary/-canary get no direct traffic; the apex does (namespace annotation)
        self.assertEqual(find_exact(out, "sim_route_rps", namespace="gw", traffic="service"), [1])
        self.assertEqual(find_exact(out, "sim_route_rps", namespace="gw", host="podinfo", traffic="service"), [1])
        self.assertEqual(find_exact(out, "http_request_duration_seconds_count", kubernetes_namespace="plain",
                                    kubernetes_pod_name="agent-8zdm4"), [4])
        self.assertEqual(find_exact(out, "http_request_duration_seconds_count", kubernetes_namespace="web",
                                    kubernetes_pod_name="podinfo-68d4cdcb86-gx9f8"), [4])  # 4 rps over 2 pods, 2 ticks
        self.assertEqual(find(out, "istio_requests_total"), [])
        self.assertTrue(any("httproute gw/broken: skipped malformed object" in line for line in self.logged))
        routing = [line for line in self.logged if line.startswith("routing: ")]
        self.assertEqual(len(routing), 1)
        self.assertIn("nginx:web/podinfo:", routing[0])
        self.assertIn("service:plain/agent: agent[service]=100%->agent@2rps", routing[0])

    def test_pods_list_failure_keeps_router_series(self):
        data = SimulatorTest.cluster(self)
        data["/api/v1/pods"] = sim.ApiError(403, "forbidden")
        data["/apis/apps/v1/daemonsets"] = sim.ApiError(500, "boom")
        m = sim.Metrics()
        sim.Simulator(FakeClient(data), m, 20.0).tick(1.0)
        out = parse_exposition(m.render())
        self.assertEqual(find(out, "istio_requests_total", destination_workload="podinfo"), [1])
        self.assertEqual(find(out, "http_request_duration_seconds_count"), [])
        self.assertEqual(m.api_errors, 2)


if __name__ == "__main__":
    unittest.main()


class RouteAcceptanceTest(unittest.TestCase):
    def route(self, gen, parents=None):
        return {
            "metadata": {"name": "podinfo", "namespace": "test", "generation": gen},
            "spec": {"parentRefs": [{"name": "gw", "namespace": "gateways"}]},
            "status": {"parents": parents or []},
        }

    def test_accepts_every_parent_at_the_generation(self):
        st = sim.route_acceptance(self.route(3), now="2026-01-01T00:00:00Z")
        self.assertEqual(len(st["parents"]), 1)
        p = st["parents"][0]
        self.assertEqual(p["parentRef"], {"name": "gw", "namespace": "gateways"})
        self.assertEqual(p["controllerName"], sim.GATEWAY_CONTROLLER)
        c = p["conditions"][0]
        self.assertEqual((c["type"], c["status"], c["observedGeneration"]), ("Accepted", "True", 3))

    def test_nothing_to_write_once_accepted_and_again_after_a_new_generation(self):
        st = sim.route_acceptance(self.route(3))
        accepted = self.route(3, st["parents"])
        self.assertIsNone(sim.route_acceptance(accepted))
        newer = self.route(4, st["parents"])
        self.assertEqual(sim.route_acceptance(newer)["parents"][0]["conditions"][0]["observedGeneration"], 4)

    def test_route_without_parents_is_left_alone(self):
        r = self.route(1)
        r["spec"]["parentRefs"] = []
        self.assertIsNone(sim.route_acceptance(r))


class SequenceClient(FakeClient):
    """FakeClient whose pod LISTs answer, in turn, each of ``pod_lists`` (the last one repeats)."""

    def __init__(self, data: dict, pod_lists: list):
        super().__init__(data)
        self.pod_lists = list(pod_lists)

    def list(self, path):
        m = re.fullmatch(r"/api/v1(?:/namespaces/([^/]+))?/pods", path)
        if m:
            self.calls.append("pods")
            pods = self.pod_lists.pop(0) if len(self.pod_lists) > 1 else self.pod_lists[0]
            return [p for p in pods if m.group(1) in (None, p["metadata"]["namespace"])]
        return super().list(path)


class ReadinessTest(unittest.TestCase):
    """sim_requests_by_readiness_total: requests routed to a Service with / without a Ready pod."""

    def state(self, canary_pods):
        views, services, deps = flagger_canary_state(primary_w=50, canary_w=50)
        pods = [pod("test", "podinfo-primary-aa11-p1", {"app": "podinfo-primary"}, owner="podinfo-primary-aa11")]
        pods += canary_pods
        return views, services, deps, pods

    def canary_pod(self, ready):
        return pod("test", "podinfo-bb22-c1", {"app": "podinfo", "extra": "x"}, owner="podinfo-bb22", ready=ready)

    def test_rates_by_pod_readiness(self):
        for canary_pods, want in (
            ([self.canary_pod(True)], True),
            ([self.canary_pod(False)], False),
            ([], False),  # scaled to zero with weight
        ):
            views, services, deps, pods = self.state(canary_pods)
            got = sim.readiness_rates(views, {}, services, deps, 20.0, pods)
            self.assertEqual(got, [sim.Readiness("test", "podinfo-canary", want, 10.0),
                                   sim.Readiness("test", "podinfo-primary", True, 10.0)])

    def test_zero_weight_and_missing_service_not_counted(self):
        views, services, deps = flagger_canary_state(primary_w=100, canary_w=0)
        got = sim.readiness_rates(views, {}, services, deps, 20.0, [])
        self.assertEqual([(r.service, r.ready) for r in got], [("podinfo-primary", False)])
        del services[("test", "podinfo-primary")]
        self.assertEqual(sim.readiness_rates(views, {}, services, deps, 20.0, []), [])

    def test_confirm_unready_needs_both_lists(self):
        a = [sim.Readiness("t", "c", False, 5.0), sim.Readiness("t", "p", True, 5.0)]
        self.assertEqual(sim.confirm_unready(a, [sim.Readiness("t", "c", True, 5.0)]),
                         [sim.Readiness("t", "c", True, 5.0), sim.Readiness("t", "p", True, 5.0)])
        self.assertEqual(sim.confirm_unready(a, [sim.Readiness("t", "c", False, 5.0)]), a)
        self.assertEqual(sim.confirm_unready(a, []), a)

    def tick_with(self, pod_lists):
        views, services, deps, _ = self.state([])
        data = {
            "/api/v1/namespaces": [namespace("test", {"sim.pennant.dev/rps": "10"})],
            "/api/v1/services": list(services.values()),
            "/apis/apps/v1/deployments": deps,
            "/apis/networking.istio.io/v1/virtualservices": [
                vs("test", "podinfo", [{"route": [dest("podinfo-primary", 50), dest("podinfo-canary", 50)]}])],
            "/apis/apps/v1/daemonsets": [],
            "/apis/networking.k8s.io/v1/ingresses": [],
            "/apis/gateway.networking.k8s.io/v1/httproutes": [],
        }
        client = SequenceClient(data, pod_lists)
        m = sim.Metrics()
        sim.Simulator(client, m, 20.0).tick(2.0)
        out = parse_exposition(m.render())
        return client, {ready: find(out, "sim_requests_by_readiness_total", service="podinfo-canary", ready=ready)
                        for ready in ("true", "false")}

    def test_tick_counts_unready_only_when_both_pod_lists_agree(self):
        primary = pod("test", "podinfo-primary-aa11-p1", {"app": "podinfo-primary"}, owner="podinfo-primary-aa11")
        # not Ready in both LISTs: 10 rps x 2 s reached a canary that was not Ready
        client, got = self.tick_with([[primary, self.canary_pod(False)]])
        self.assertEqual(got, {"true": [], "false": [10]})
        self.assertEqual(client.calls.count("pods"), 2)
        # Ready by the second LIST (the weight followed readiness): not counted as unready
        client, got = self.tick_with([[primary, self.canary_pod(False)], [primary, self.canary_pod(True)]])
        self.assertEqual(got, {"true": [10], "false": []})
        # Ready at once: one pod LIST only
        client, got = self.tick_with([[primary, self.canary_pod(True)]])
        self.assertEqual(got, {"true": [10], "false": []})
        self.assertEqual(client.calls.count("pods"), 1)

    def test_unready_is_judged_against_the_routing_of_now_not_the_watch_s(self):
        # The routing watch lags: it still shows the canary at 50 % while pennant has routed
        # everything to the primary and scaled the canary down (its pod is gone).
        views, services, deps, _ = self.state([])
        primary = pod("test", "podinfo-primary-aa11-p1", {"app": "podinfo-primary"}, owner="podinfo-primary-aa11")

        def cluster(canary_w):
            return {
                "/api/v1/namespaces": [namespace("test", {"sim.pennant.dev/rps": "10"})],
                "/api/v1/services": list(services.values()),
                "/apis/apps/v1/deployments": deps,
                "/apis/networking.istio.io/v1/virtualservices": [vs("test", "podinfo", [{"route": [
                    dest("podinfo-primary", 100 - canary_w), dest("podinfo-canary", canary_w)]}])],
                "/apis/apps/v1/daemonsets": [],
                "/apis/networking.k8s.io/v1/ingresses": [],
                "/apis/gateway.networking.k8s.io/v1/httproutes": [],
            }
        for live_w, want in ((0, []), (50, [10])):
            client = SequenceClient(cluster(live_w), [[primary]])
            watched = SequenceClient(cluster(50), [[primary]])
            m = sim.Metrics()
            sim.Simulator(client, m, 20.0, lists=watched).tick(2.0)
            got = find(parse_exposition(m.render()), "sim_requests_by_readiness_total",
                       service="podinfo-canary", ready="false")
            self.assertEqual(got, want, f"live canary weight {live_w}")


class LoadTestTest(unittest.TestCase):
    def test_loadtest_rps_reaches_the_canary_service_from_the_loadtester(self):
        views, services, deps = flagger_canary_state(primary_w=90, canary_w=10)
        ns = {"test": namespace("test", {"sim.pennant.dev/rps": "20", "sim.pennant.dev/loadtest-rps": "6"})}
        lt = sim.loadtest_views(services, ns)
        # only the -canary Service, whatever the VirtualService's weights
        self.assertEqual([(v.router, v.name, v.splits, v.rates, v.source) for v in lt],
                         [("istio", "flagger-loadtester", [sim.Split("test", "podinfo-canary", 100.0, "loadtest")],
                           {"loadtest": 6.0}, "flagger-loadtester")])
        self.assertEqual(sim.loadtest_views(services, {"test": namespace("test")}), [])
        flows = sim.compute_flows(views + lt, ns, services, deps, 20.0, pods=podinfo_pods())
        m = sim.Metrics()
        m.add(flows, 10.0)
        s = parse_exposition(m.render())
        canary = dict(destination_workload="podinfo", response_code="200")
        # 10 s: 6 rps of load tests and 10 % of 20 rps of users reach the canary, on separate
        # series told by source_workload; the primary gets users only
        self.assertEqual(find_exact(s, "istio_requests_total", source_workload="flagger-loadtester", **canary), [60])
        self.assertEqual(find_exact(s, "istio_requests_total", source_workload="loadgen", **canary), [20])
        self.assertEqual(find_exact(s, "istio_requests_total", source_workload="flagger-loadtester",
                                    destination_workload="podinfo-primary"), [])
        self.assertEqual(find_exact(s, "istio_requests_total", destination_workload="podinfo-primary"), [180])
        self.assertEqual(find_exact(s, "istio_request_duration_milliseconds_count",
                                    source_workload="flagger-loadtester", destination_workload="podinfo"), [60])
        # the app's own per-pod series count them too (two canary pods)
        self.assertEqual(find_exact(s, "http_request_duration_seconds_count",
                                    kubernetes_pod_name="podinfo-68d4cdcb86-gx9f8", status="200"), [40])
        # a canary scaled to zero gets nothing, and no router is blamed for the load tester's requests
        _, _, parked = flagger_canary_state(canary_ready=0)
        self.assertEqual([f for f in sim.compute_flows(lt, ns, services, parked, 20.0)], [])
        self.assertEqual(sim.readiness_rates(lt, ns, services, parked, 20.0, []), [])
