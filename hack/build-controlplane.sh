#!/usr/bin/env bash
# Builds the local control plane that tests and the demo run: kube-apiserver,
# kube-controller-manager and kubectl from hack/kube, etcd from hack/etcd.
#
# Binaries land in a cache outside the repo, one directory per version:
#   ${TOKENKEEPER_CACHE:-$HOME/.cache/tokenkeeper}/bin/kube-vX.Y.Z/
#   ${TOKENKEEPER_CACHE:-$HOME/.cache/tokenkeeper}/bin/etcd-vX.Y.Z/
# A directory that exists is complete: each set is built into a temporary directory
# and renamed into place only after it built and reported the right version, so an
# interrupted build never looks cached. Only a fresh machine pays for the build.
#
# Versions come from the committed go.mod files, which are the single source of
# truth; go.sum is honoured (-mod=readonly), so a build never resolves anything new.
#
# stdout carries only `export TOKENKEEPER_KUBE_BIN=...` and
# `export TOKENKEEPER_ETCD_BIN=...` (also written to bin/controlplane.env), so
# `eval "$(hack/build-controlplane.sh)"` works. Progress goes to stderr; a failure
# is one line naming the step and the log to read, with a non-zero exit.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${TOKENKEEPER_CACHE:-$HOME/.cache/tokenkeeper}
bin_root=$cache/bin
log_root=$cache/logs
staging=""
build_pid=""

say() { echo "build-controlplane: $*" >&2; }

fail() {
  # fail STEP HELP: the one line a caller sees, then a non-zero exit.
  say "FAILED at step '$1'; $2"
  exit 1
}

cleanup() {
  if [[ -n $build_pid ]]; then kill "$build_pid" 2>/dev/null || true; fi
  if [[ -n $staging ]]; then rm -rf "$staging"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

module_version() {
  # The version a wrapper module requires of one upstream module, from its go.mod.
  awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' \
    "$repo/hack/$1/go.mod"
}

build_date() {
  if [[ -n ${SOURCE_DATE_EPOCH:-} ]]; then
    date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ
  else
    date -u +%Y-%m-%dT%H:%M:%SZ
  fi
}

kube_ldflags() {
  local version=$1 major minor date pkg flags="-s -w"
  major=${version#v}
  major=${major%%.*}
  minor=${version#v*.}
  minor=${minor%%.*}
  date=$(build_date)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  echo "$flags"
}

etcd_ldflags() {
  # etcd's version string is a constant in its source; only the commit is stamped at
  # build time, and a module download does not carry one, so say where it came from.
  echo "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=module-$1"
}

go_build() {
  # go_build MODULE_DIR LDFLAGS OUTPUT LOG PACKAGE...
  # Runs in the background and is waited for, so a TERM or INT is handled at once
  # instead of after a half-hour compile.
  local dir=$1 ldflags=$2 out=$3 log=$4 status=0
  shift 4
  CGO_ENABLED=0 GOTOOLCHAIN=local go -C "$dir" build -mod=readonly -buildvcs=false \
    -trimpath -ldflags "$ldflags" -o "$out" "$@" >"$log" 2>&1 &
  build_pid=$!
  wait "$build_pid" || status=$?
  build_pid=""
  return "$status"
}

check_version() {
  # check_version BINARY EXPECTED LOG: the binary runs and reports the expected version.
  local output
  output=$("$1" --version 2>&1) || return 1
  echo "$output" >>"$3"
  grep -qF -- "$2" <<<"$output"
}

build_kube() {
  local version=$1 dest=$2 log=$log_root/build-kube-$1.log
  staging=$(mktemp -d "$bin_root/.kube-$version.XXXXXX")
  say "building kube-$version (not cached yet; log: $log)"
  go_build "$repo/hack/kube" "$(kube_ldflags "$version")" "$staging/" "$log" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl ||
    fail "go build kube-$version" "read $log"
  check_version "$staging/kube-apiserver" "Kubernetes $version" "$log" ||
    fail "check kube-apiserver --version is $version" "read $log"
  publish "$staging" "$dest"
}

build_etcd() {
  local version=$1 dest=$2 log=$log_root/build-etcd-$1.log
  staging=$(mktemp -d "$bin_root/.etcd-$version.XXXXXX")
  say "building etcd-$version (not cached yet; log: $log)"
  go_build "$repo/hack/etcd" "$(etcd_ldflags "$version")" "$staging/etcd" "$log" \
    go.etcd.io/etcd/server/v3 ||
    fail "go build etcd-$version" "read $log"
  check_version "$staging/etcd" "etcd Version: ${version#v}" "$log" ||
    fail "check etcd --version is $version" "read $log"
  publish "$staging" "$dest"
}

publish() {
  chmod 755 "$1"
  rm -rf "$2"
  mv "$1" "$2"
  staging=""
}

complete() {
  local dir=$1 name
  shift
  for name in "$@"; do [[ -x $dir/$name ]] || return 1; done
}

main() {
  local kube_version etcd_version kube_dir etcd_dir
  command -v go >/dev/null || fail "find go" "no go on PATH; install Go 1.26 or newer"
  kube_version=$(module_version kube k8s.io/kubernetes)
  etcd_version=$(module_version etcd go.etcd.io/etcd/server/v3)
  [[ -n $kube_version && -n $etcd_version ]] ||
    fail "read versions" "read hack/kube/go.mod and hack/etcd/go.mod"
  kube_dir=$bin_root/kube-$kube_version
  etcd_dir=$bin_root/etcd-$etcd_version
  mkdir -p "$bin_root" "$log_root"

  # One build at a time per cache: two would fight for the cores and the rename.
  exec 9>"$bin_root/.lock"
  flock 9

  if ! complete "$kube_dir" kube-apiserver kube-controller-manager kubectl; then
    build_kube "$kube_version" "$kube_dir"
  fi
  if ! complete "$etcd_dir" etcd; then
    build_etcd "$etcd_version" "$etcd_dir"
  fi

  printf 'export TOKENKEEPER_KUBE_BIN=%q\nexport TOKENKEEPER_ETCD_BIN=%q\n' \
    "$kube_dir" "$etcd_dir" | tee "$bin_root/controlplane.env"
}

main "$@"
