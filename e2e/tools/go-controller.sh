# Shared by e2e/tools/build-*-controller (sourced, not run): builds one of Flux's controllers from its Go
# module into the tool cache, trying candidate versions newest first, once per version.
#
#   source "$(dirname "$0")/go-controller.sh"
#   build_first_candidate NAME MODULE "V1 V2 ..." HELP_FLAG    # prints the binary's path, or exits 1
#
# A candidate that fails (the proxy refuses the module or one of its dependencies, or its go.mod needs a
# newer Go than $GOTOOLCHAIN: default local, no toolchain download; a build script may name one) is recorded in
# NAME-<v>.failed (last 20 lines of output, first one shown on stderr) and skipped on later runs; remove
# that file to try again. The build runs in a writable copy of the module because Flux's go.mod files have
# replace directives (`./api`, the nested API module, absent from the module zip, is the same version of
# MODULE/api). Flags as Flux's Dockerfiles (static, CGO off, -trimpath). The built binary must list
# HELP_FLAG in its --help. GO_BUILD_JOBS (default 2) is `go build -p`; GOMAXPROCS is passed through.
# GO_CONTROLLER_PKG (default `.`) is the main package inside the module (Flagger's is `./cmd/flagger`);
# the nested `./api` module is fetched only when go.mod replaces it.
# One build per NAME at a time (flock on $CACHE/.lock-NAME).

CACHE=${PENNANT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pennant}
export CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=${GOTOOLCHAIN:-local} GOFLAGS="-modcacherw -trimpath -buildvcs=false"

log() { printf '[build-%s %(%H:%M:%S)T] %s\n' "${GO_CONTROLLER_NAME:-controller}" -1 "$*" >&2; }

# Directory of a module in the module cache (downloaded through the Go proxy when missing).
moddir() {
  (cd "$CACHE" && go mod download -json "$1") |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit("go mod download: "+d.get("Error","no Dir")))'
}

# build_version NAME MODULE V HELP_FLAG: 0 and the binary in place, or 1 with V's .failed file written.
build_version() {
  local name=$1 module=$2 v=$3 flag=$4 dir=$CACHE/$1-$3
  [[ -x $dir/$name ]] && return 0
  if [[ -f $dir.failed ]]; then
    log "skipping $v (failed before: $(grep -m 1 -v '^\s*$' "$dir.failed"); remove $dir.failed to retry)"
    return 1
  fi
  log "building $name $v (first time, 10-25 min)..."
  local t0=$SECONDS out
  rm -rf "$dir.src" "$dir.tmp"
  if ! out=$( {
      src=$(moddir "$module@$v") && cp -r "$src" "$dir.src" &&
        { [[ -d $dir.src/api ]] || ! grep -q '=> \./api' "$dir.src/go.mod" ||
          { src=$(moddir "$module/api@$v") && cp -r "$src" "$dir.src/api"; }; } &&
        chmod -R u+w "$dir.src" &&
        (cd "$dir.src" && nice -n 19 go build -p "${GO_BUILD_JOBS:-2}" -ldflags "-s -w" \
          -tags netgo,osusergo,static_build -o "$dir.tmp/$name" "${GO_CONTROLLER_PKG:-.}") &&
        "$dir.tmp/$name" --help 2>&1 | grep -q -- "$flag"
    } 2>&1); then
    printf '%s\n' "$out" | tail -n 20 >"$dir.failed"
    rm -rf "$dir.src" "$dir.tmp"
    log "$name $v does not build here: $(grep -m 1 -v '^\s*$' "$dir.failed")"
    return 1
  fi
  rm -rf "$dir.src"
  mv "$dir.tmp" "$dir"
  log "built $name $v in $((SECONDS - t0))s -> $dir"
}

# build_first_candidate NAME MODULE CANDIDATES HELP_FLAG: prints the first candidate's binary that builds.
build_first_candidate() {
  local name=$1 module=$2 candidates=$3 flag=$4 v
  GO_CONTROLLER_NAME=$name
  mkdir -p "$CACHE"
  for v in $candidates; do
    if ( flock 9; build_version "$name" "$module" "$v" "$flag" ) 9>"$CACHE/.lock-$name"; then
      echo "$CACHE/$name-$v/$name"
      return 0
    fi
  done
  log "no candidate built: $candidates"
  exit 1
}
