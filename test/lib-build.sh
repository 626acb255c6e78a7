#!/usr/bin/env bash
# Sourced by the scripts that build test binaries from the Go module proxy
# (test/controlplane/build-binaries.sh, test/cluster/build-node.sh): progress while a cold
# build is silent for minutes, and the throwaway-module build of Kubernetes commands.
#
# Callers set LOG_TAG, CACHE and K8S_VERSION before sourcing.

log() { printf '[%s] %s\n' "${LOG_TAG:-build}" "$*" >&2; }

# with_progress <what> <command...>: go build is silent on a cold cache; say it still works.
with_progress() {
  local what="$1"; shift
  local started=$SECONDS
  ( while sleep 20; do log "... still $what ($((SECONDS - started)) s)"; done ) &
  local ticker=$!
  local status=0
  "$@" || status=$?
  kill "$ticker" 2>/dev/null; wait "$ticker" 2>/dev/null || true
  return "$status"
}

need_go() { command -v go >/dev/null || { log "go is needed to build $1"; exit 1; }; }

# build_k8s <out-dir> <cmd>...: builds k8s.io/kubernetes/cmd/<cmd> v$K8S_VERSION into <out-dir>.
# k8s.io/kubernetes replaces its staging modules with ./staging paths, which a module that
# requires it cannot follow: the throwaway module points each at its published v0.x.y twin.
# All commands come from one module and one build cache, so the second costs a fraction of
# the first.
build_k8s() {
  local out="$1"; shift
  need_go "$*"
  local work; work="$(mktemp -d "${TMPDIR:-/tmp}/kube-pcap-build.XXXXXX")"
  (
    trap 'rm -rf "$work"' EXIT
    cd "$work"
    export GOFLAGS="-mod=mod" CGO_ENABLED=0
    go mod init kube-pcap-k8s >/dev/null 2>&1
    go mod download "k8s.io/kubernetes@v$K8S_VERSION"
    local modfile staging gover
    modfile="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/v$K8S_VERSION.mod"
    staging="v0.${K8S_VERSION#1.}"
    gover="$(awk '$1=="go"{print $2; exit}' "$modfile")"
    {
      printf 'module kube-pcap-k8s\n\ngo %s\n\nrequire k8s.io/kubernetes v%s\n\n' "$gover" "$K8S_VERSION"
      awk -v v="$staging" '$2=="=>" && $3 ~ /^\.\/staging\// {print "replace " $1 " => " $1 " " v}' "$modfile"
    } > go.mod
    {
      printf '//go:build tools\n\npackage tools\n\nimport (\n'
      for c in "$@"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
      printf ')\n'
    } > tools.go
    log "resolving k8s.io/kubernetes v$K8S_VERSION (staging modules at $staging)"
    with_progress "downloading Kubernetes modules" go mod tidy >&2
    local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(cut -d. -f2 <<<"$K8S_VERSION") -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION"
    mkdir -p "$out"
    # One go build for all of them: their links overlap with the compiles of the others.
    local tmp; tmp="$(mktemp -d "$out/.build.XXXXXX")"
    log "building $* v$K8S_VERSION (cold: 5 to 15 minutes; cached afterwards)"
    local pkgs=(); for c in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
    if ! with_progress "building $*" go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}"; then rm -rf "$tmp"; exit 1; fi
    for c in "$@"; do mv "$tmp/$c" "$out/$c"; done
    rm -rf "$tmp"
  )
}
