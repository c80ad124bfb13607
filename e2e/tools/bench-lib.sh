# Shared by e2e/bench-kustomize and e2e/bench-helm (sourced, not run): the cluster, process, probe,
# RSS and cleanup helpers of the controller benchmarks. Expects BENCH_NAME (for log lines), and
# sets/uses T_START (s a controller gets to be ready), T_DELETE (s objects get to be finalized),
# WORK and LOGS (bench_workdir), PENNANT (the pennant binary).

T_START=${T_START:-60}; T_DELETE=${T_DELETE:-300}

log() { printf '[%s %(%H:%M:%S)T] %s\n' "$BENCH_NAME" -1 "$*" >&2; }
now_ms() { date +%s%3N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mib() { awk -v k="$1" 'BEGIN { if (k == "") print "-"; else printf "%.1f", k / 1024 }'; }
secs() { awk -v ms="$1" 'BEGIN { printf "%.1f", ms / 1000 }'; }
status_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null; }
alive() { kill -0 "$1" 2>/dev/null; }

# bench_cluster KEEP: (re)starts the cluster unless KEEP=1 (then `up` is a no-op on the running one,
# e.g. the dev cluster of PENNANT_E2E_STATE), and exports its env (KUBECONFIG, PENNANT_HELM, ...).
bench_cluster() {
  if [ "$1" = 0 ]; then e2e/cluster down >/dev/null 2>&1 || true; fi
  e2e/cluster up >/dev/null
  eval "$(e2e/cluster env)"
}

# bench_pennant: builds target/release/pennant unless PENNANT names a binary; checks it runs.
bench_pennant() {
  if [ -z "$PENNANT" ]; then
    echo "== building pennant (release)"
    cargo build --release --quiet
    PENNANT=target/release/pennant
  fi
  [ -x "$PENNANT" ] || { echo "no pennant binary at $PENNANT" >&2; exit 1; }
}

# flux_crds_missing CONTROLLER GROUP: applies Flux's CRDs of GROUP (from e2e/tools/flux-crds
# CONTROLLER) for the kinds the cluster has no CRD for; pennant's (compatible, tests/compat_flux.rs)
# stay as they are, so a shared cluster's CRDs do not change under other users.
flux_crds_missing() {
  local f crd
  for f in "$(e2e/tools/flux-crds "$1")"/"$2"_*.yaml; do
    crd=$(basename "$f" .yaml); crd=${crd#"$2"_}.$2
    kubectl get crd "$crd" >/dev/null 2>&1 || kubectl apply --server-side -f "$f" >/dev/null
  done
}

# bench_workdir PREFIX: WORK (removed by bench_cleanup) and LOGS under it.
bench_workdir() {
  WORK=$(mktemp -d "/tmp/$1.XXXXXX")
  LOGS=$WORK/logs; mkdir -p "$LOGS"
}

# delete_kinds NS KIND...: deletes NS's objects of each KIND in turn, waiting for each kind to go
# (its controller still runs and releases the finalizers); finalizers left after T_DELETE s are
# removed; then the namespace goes.
delete_kinds() {
  local ns=$1 kinds; shift
  for kinds in "$@"; do
    kubectl -n "$ns" delete "$kinds" --all --wait=false >/dev/null 2>&1 || true
    local deadline=$(( $(date +%s) + T_DELETE ))
    while [ -n "$(kubectl -n "$ns" get "$kinds" -o name 2>/dev/null)" ]; do
      if [ "$(date +%s)" -ge "$deadline" ]; then
        log "$kinds of $ns not finalized in ${T_DELETE}s: removing their finalizers"
        kubectl -n "$ns" get "$kinds" -o name 2>/dev/null |
          xargs -r -P 4 -I{} kubectl -n "$ns" patch {} --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
        break
      fi
      sleep 1
    done
  done
  kubectl delete namespace "$ns" --wait=false --ignore-not-found >/dev/null 2>&1 || true
}

# stop PID: TERM, up to 10 s, then KILL; reaps it. No-op on "".
stop() {
  [ -n "$1" ] || return 0
  kill "$1" 2>/dev/null || true
  local i; for i in $(seq 1 50); do alive "$1" || break; sleep 0.2; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# wait_probe PID URL WHAT LOGF: until URL answers 2xx; stops PID and exits 1 (with LOGF's end) if
# PID dies or T_START s pass.
wait_probe() {
  local deadline=$(( $(date +%s) + T_START ))
  until curl -sf --max-time 2 "$2" >/dev/null; do
    if ! alive "$1" || [ "$(date +%s)" -ge "$deadline" ]; then
      echo "$3 did not become ready in ${T_START}s; end of $4:" >&2
      tail -n 20 "$4" >&2; stop "$1"; exit 1
    fi
    sleep 0.2
  done
}

# start_pennant CONTROLLERS NS STORAGE LOGF [FLAG...]: `pennant controller` watching NS only, out of
# the cluster; sets LAST_PID once /readyz answers.
start_pennant() {
  local port; port=$(free_port)
  mkdir -p "$3"
  "$PENNANT" controller --controllers "$1" --namespace "$2" --storage-path "$3" \
    --listen "127.0.0.1:$port" "${@:5}" >"$4" 2>&1 &
  LAST_PID=$!
  wait_probe "$LAST_PID" "http://127.0.0.1:$port/readyz" "pennant ($1)" "$4"
}

# start_flux BINARY NS LOGF [FLAG...]: one of Flux's controllers watching NS only, out of the cluster,
# with its defaults otherwise; sets LAST_PID once its /readyz answers.
start_flux() {
  local hport mport; hport=$(free_port); mport=$(free_port)
  RUNTIME_NAMESPACE=$2 "$1" --watch-all-namespaces=false --events-addr= \
    --enable-leader-election=false --metrics-addr="127.0.0.1:$mport" --health-addr="127.0.0.1:$hport" \
    "${@:4}" >"$3" 2>&1 &
  LAST_PID=$!
  wait_probe "$LAST_PID" "http://127.0.0.1:$hport/readyz" "$(basename "$1")" "$3"
}

# tree_pids PID...: the PIDs and all their descendants (pennant's helm and kustomize CLI children).
tree_pids() {
  ps -e -o pid=,ppid= | awk -v roots="$*" '
    BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
    { parent[$1] = $2 }
    END {
      do { added = 0; for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; added = 1 } } while (added)
      for (p in keep) print p
    }'
}

# pss_kib PID: the process's proportional set size (/proc/PID/smaps_rollup), KiB: its private
# pages plus its share of the pages it shares (N helm processes share one copy of the helm
# binary's text: VmRSS counts it N times, PSS once in all).
pss_kib() { awk '$1 == "Pss:" { print $2; exit }' "/proc/$1/smaps_rollup" 2>/dev/null; }

# sample_rss FILE PID...: every 0.2 s, the summed VmRSS of the PIDs and their child processes
# (a helm or kustomize CLI pennant runs counts, as Flux runs Helm and kustomize in-process); FILE
# holds the largest seen, FILE.pss the largest summed PSS (the memory the set really occupies:
# shared pages such as the text of several helm processes counted once; about VmRSS for one
# static Go binary). Runs until the first PID exits or it is killed.
sample_rss() {
  local f=$1 max=0 maxp=0 v s sp p; shift
  echo 0 >"$f.pss"
  while alive "$1"; do
    s=0; sp=0
    # a child may exit between the listing and the read (status_kib then fails: not fatal here)
    for p in $(tree_pids "$@"); do
      v=$(status_kib "$p" VmRSS || true); s=$(( s + ${v:-0} ))
      v=$(pss_kib "$p" || true); sp=$(( sp + ${v:-0} ))
    done
    if [ "$s" -gt "$max" ]; then max=$s; echo "$max" >"$f"; fi
    if [ "$sp" -gt "$maxp" ]; then maxp=$sp; echo "$maxp" >"$f.pss"; fi
    sleep 0.2
  done
}
