#!/usr/bin/env python3
"""Prints a fleet of N apps for the canary benchmarks (`e2e/bench --vs`), as one JSON List for
`kubectl apply -f -`: per app `appI` a Deployment shaped like examples/istio/podinfo.yaml (the
simulator's annotations, `replicas` pods) and/or a Canary shaped like examples/istio/canary.yaml
(builtin success-rate and latency checks, `interval`, `stepWeight` up to `maxWeight`).

  canary-fleet.py N [--what deployments|canaries|both] [--provider istio] [--replicas 1]
                    [--interval 10s] [--step-weight 20] [--max-weight 60] [--threshold 2]
                    [--first 1]
"""
import argparse
import json

p = argparse.ArgumentParser()
p.add_argument("n", type=int)
p.add_argument("--what", default="both", choices=["deployments", "canaries", "both"])
p.add_argument("--provider", default="istio")
p.add_argument("--replicas", type=int, default=1)
p.add_argument("--interval", default="10s")
p.add_argument("--step-weight", type=int, default=20)
p.add_argument("--max-weight", type=int, default=60)
p.add_argument("--threshold", type=int, default=2)
p.add_argument("--first", type=int, default=1)
p.add_argument("--image", default="ghcr.io/stefanprodan/podinfo:6.0.0")
a = p.parse_args()


def deployment(name):
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": a.replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "labels": {"app": name},
                    "annotations": {
                        "sim.pennant.dev/error-rate": "0",
                        "sim.pennant.dev/latency-ms": "40",
                    },
                },
                "spec": {
                    "containers": [
                        {
                            "name": "podinfod",
                            "image": a.image,
                            "ports": [{"name": "http", "containerPort": 9898}],
                        }
                    ]
                },
            },
        },
    }


def canary(name):
    service = {"port": 80, "targetPort": 9898}
    if a.provider == "istio":
        service.update({"gateways": ["mesh"], "hosts": [f"{name}.example.com"]})
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name},
        "spec": {
            "provider": a.provider,
            "progressDeadlineSeconds": 120,
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": service,
            "analysis": {
                "interval": a.interval,
                "threshold": a.threshold,
                "maxWeight": a.max_weight,
                "stepWeight": a.step_weight,
                "metrics": [
                    {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "15s"},
                    {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "15s"},
                ],
            },
        },
    }


items = []
for i in range(a.first, a.first + a.n):
    name = f"app{i}"
    if a.what in ("deployments", "both"):
        items.append(deployment(name))
    if a.what in ("canaries", "both"):
        items.append(canary(name))
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
