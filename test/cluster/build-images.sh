#!/usr/bin/env bash
# Builds the images the test cluster runs and prints the directory holding them as
# docker-archive tarballs (what `ctr images import` takes with their names kept):
#   ghcr.io/kube-pcap/gateway:<appVersion>, ghcr.io/kube-pcap/agent:<appVersion>
#       from the shipped Dockerfile, both targets, exactly as users build them, with
#       NODE_IMAGE pointing at a base made here (no registry can be reached here);
#   localhost/kube-pcap-test/workload:1   the test pods' image (workload.Containerfile);
#   localhost/kube-pcap-test/pause:1      the pod sandbox image (pause/main.go).
# The base is a Debian bookworm rootfs from Debian's packages (debootstrap) plus the Node.js
# the project installs (scripts/ensure-node.sh): what node:<version>-bookworm-slim holds.
# Everything is cached outside the repository, keyed by what it is built from: a later run
# with the same sources prints the directory at once.
#
#   test/cluster/build-images.sh <dir>   (a directory with the pause binary: build-node.sh's,
#                                         or build-node.sh --pause-only's)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
NODE_BIN_DIR="${1:?usage: build-images.sh <directory with the pause binary>}"
CACHE="${KUBE_PCAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-pcap}"
LOG_TAG=images
source "$here/../lib-build.sh"

# Buildah's overlay layers are mounted while it builds: in a mount namespace of its own,
# whatever it leaves mounted goes when it ends (the CI run checks that nothing is left).
if [[ "${KUBE_PCAP_IMAGES_NS:-}" != 1 ]]; then
  exec unshare --mount --propagation private -- env KUBE_PCAP_IMAGES_NS=1 bash "$0" "$@"
fi

source "$repo/scripts/ensure-node.sh"
NODE_VERSION="$KUBE_PCAP_NODE_VERSION"
APP_VERSION="$(awk -F'"' '/^appVersion:/ {print $2}' "$repo/charts/kube-pcap/Chart.yaml")"
SUITE=bookworm
MIRROR="${KUBE_PCAP_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
store="$CACHE/buildah"
bah() { buildah --root "$store/storage" --runroot "$store/run" --storage-driver overlay "$@"; }
# A build's output goes to a log, shown when it fails: a warm run stays quiet.
logged() {
  local what="$1"; shift
  local logf; logf="$(mktemp "${TMPDIR:-/tmp}/kube-pcap-build-log.XXXXXX")"
  if ! with_progress "$what" "$@" > "$logf" 2>&1; then
    log "$what failed:"; tail -n 40 "$logf" >&2; rm -f "$logf"; return 1
  fi
  rm -f "$logf"
}

# Bump when the recipe below changes: the base is rebuilt only then (or for another Node).
BASE_RECIPE=1
base_key="$(printf '%s ' "$BASE_RECIPE" "$KUBE_PCAP_NPM_VERSION" "$MIRROR" | sha256sum | cut -c1-10)"
BASE="localhost/kube-pcap-test/node-base:$NODE_VERSION-$SUITE-$base_key"
if ! bah inspect --type image "$BASE" >/dev/null 2>&1; then
  rootfs="$(mktemp -d "${TMPDIR:-/tmp}/kube-pcap-rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap $SUITE (minbase) from $MIRROR (once; a minute or two)"
  with_progress "running debootstrap" debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$rootfs" "$MIRROR" >&2
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  node_dir="$(dirname "$(dirname "$KUBE_PCAP_NODE")")"
  npm_dir="$CACHE/npm/v$KUBE_PCAP_NPM_VERSION"
  install -m 0755 "$node_dir/bin/node" "$rootfs/usr/local/bin/node"
  mkdir -p "$rootfs/usr/local/lib/node_modules"
  cp -a "$npm_dir" "$rootfs/usr/local/lib/node_modules/npm"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
  # This machine's TLS to the npm registry is re-signed by its own CA: the build's npm ci
  # must trust the machine's bundle (on any other machine this is Debian's own bundle).
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/usr/local/share/ca-certificates-build.crt"
  ctr="$(bah from scratch)"
  mnt="$(bah mount "$ctr")"
  cp -a "$rootfs/." "$mnt/"
  bah umount "$ctr" >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env NODE_VERSION="$NODE_VERSION" --env NODE_EXTRA_CA_CERTS=/usr/local/share/ca-certificates-build.crt \
    --cmd node "$ctr"
  bah commit --quiet --rm "$ctr" "$BASE" >/dev/null
  rm -rf "$rootfs"; trap - EXIT
fi

# The shipped images: keyed by the build context the Dockerfile reads (and .dockerignore).
app_key="$( { echo "$BASE"; cd "$repo" && for f in Dockerfile .dockerignore package.json package-lock.json tsconfig.json tsconfig.build.json openapi.yaml; do sha256sum "$f"; done; cd "$repo" && find src routes -type f -print0 | sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-16)"
work_key="$( { echo "$BASE"; sha256sum "$here/workload.Containerfile"; sha256sum "$NODE_BIN_DIR/pause"; } | sha256sum | cut -c1-16)"
OUT="$CACHE/images/app-$app_key-test-$work_key"
if [[ -f "$OUT/images.json" ]]; then echo "$OUT"; exit 0; fi
mkdir -p "$OUT.tmp"

for target in gateway agent; do
  image="ghcr.io/kube-pcap/$target:$APP_VERSION"
  log "building $image from the Dockerfile (--target $target)"
  logged "building $target" bah bud --isolation chroot --network host --pull=never --layers \
    --build-arg "NODE_IMAGE=$BASE" --target "$target" -t "$image" -f "$repo/Dockerfile" "$repo"
  bah push --quiet --format docker "$image" "docker-archive:$OUT.tmp/$target.tar:$image" >&2
done

workload=localhost/kube-pcap-test/workload:1
log "building $workload"
logged "building the workload image" bah bud --isolation chroot --network host --pull=never --layers \
  --build-arg "BASE=$BASE" -t "$workload" -f "$here/workload.Containerfile" "$here"
bah push --quiet --format docker "$workload" "docker-archive:$OUT.tmp/workload.tar:$workload" >&2

pause=localhost/kube-pcap-test/pause:1
ctr="$(bah from scratch)"
bah copy "$ctr" "$NODE_BIN_DIR/pause" /pause >/dev/null
bah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
bah commit --quiet --rm "$ctr" "$pause" >/dev/null
bah push --quiet --format docker "$pause" "docker-archive:$OUT.tmp/pause.tar:$pause" >&2

cat > "$OUT.tmp/images.json" <<JSON
{
  "gateway": "ghcr.io/kube-pcap/gateway:$APP_VERSION",
  "agent": "ghcr.io/kube-pcap/agent:$APP_VERSION",
  "workload": "$workload",
  "pause": "$pause",
  "base": "$BASE",
  "files": ["gateway.tar", "agent.tar", "workload.tar", "pause.tar"]
}
JSON
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
# Older builds of the same images are of no further use.
find "$CACHE/images" -mindepth 1 -maxdepth 1 -type d -name 'app-*' ! -path "$OUT" -exec rm -rf {} +
echo "$OUT"
