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
import unittest
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
        }

    def test_tick_falls_back_to_v1beta1_and_skips_malformed(self):
        client = FakeClient(self.cluster())
        m = sim.Metrics()
        s = sim.Simulator(client, m, 20.0)
        s.tick(1.0)
        s.tick(1.0)
        self.assertIn("/apis/networking.istio.io/v1/virtualservices", client.calls)
        self.assertEqual(client.calls.count("/apis/networking.istio.io/v1beta1/virtualservices"), 2)
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
        self.assertEqual(m.api_errors, 3)
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


if __name__ == "__main__":
    unittest.main()
