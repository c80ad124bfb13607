#!/usr/bin/env python3
"""Step lateness of Canaries, for `e2e/bench --vs` (printed figures, never asserted).

  canary-steps.py record NS FILE      # until killed: one line per Canary status change seen by a
                                      # watch, "<unix s> <name> <canaryWeight> <phase>"
  canary-steps.py report FILE INTERVAL_S

Lateness of a step: the time between two consecutive analysis steps of one Canary, as seen by the
watch (`canaryWeight` rising from one non-zero value to the next, or the first `Promoting` after the
last weight), minus the analysis interval. The first step (new revision -> first weight) is not a
step here (it waits for no interval). A step seen early (negative lateness) counts as 0. Prints
the count, p50, p99 and max lateness in seconds.
"""
import subprocess
import sys
import time


def record(ns, path):
    cmd = [
        "kubectl", "-n", ns, "get", "canaries", "--watch", "--output-watch-events=false",
        "-o", "jsonpath={.metadata.name} {.status.canaryWeight} {.status.phase}{\"\\n\"}",
    ]
    with open(path, "a", buffering=1) as out:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
        for line in p.stdout:
            out.write(f"{time.time():.3f} {line}")


def report(path, interval):
    state = {}  # name -> (weight, phase, time of its last step or None)
    late = []
    for line in open(path):
        parts = line.split()
        if len(parts) < 2:
            continue
        t, name = float(parts[0]), parts[1]
        w = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
        phase = parts[3] if len(parts) > 3 else ""
        pw, pphase, step_t = state.get(name, (0, "", None))
        if w > pw > 0 or (phase == "Promoting" and pphase == "Progressing" and pw > 0):
            if step_t is not None:
                late.append(max(0.0, t - step_t - interval))
            step_t = t
        elif w > 0 and pw == 0:
            step_t = t  # the first step: the clock of the next one starts
        elif w == 0 and phase != "Promoting":
            step_t = None
        state[name] = (w, phase, step_t)
    if not late:
        print("steps=0 p50=- p99=- max=-")
        return
    late.sort()
    q = lambda f: late[min(len(late) - 1, int(f * len(late)))]
    print(f"steps={len(late)} p50={q(0.5):.2f} p99={q(0.99):.2f} max={late[-1]:.2f}")


if __name__ == "__main__":
    if sys.argv[1] == "record":
        record(sys.argv[2], sys.argv[3])
    else:
        report(sys.argv[2], float(sys.argv[3]))
