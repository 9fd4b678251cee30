#!/usr/bin/env bash
# Fetches the Keycloak server distribution that tests and the demo run, and
# prepares it once so that every later start is as quick as it can be.
#
# The distribution lands in a cache outside the repo, one directory per version:
#   ${TOKENKEEPER_CACHE:-$HOME/.cache/tokenkeeper}/keycloak-<version>/
# A directory that exists is complete: the archive is fetched with Maven, unpacked
# and prepared in a temporary directory, and renamed into place only at the end, so
# an interrupted fetch never looks cached.
#
# Preparing means running Keycloak's build (Quarkus re-augmentation) for dev mode
# with the build options that devenv/keycloak.py starts with. `kc.sh build` refuses
# the dev profile, so the script starts `kc.sh start-dev`, which builds and then
# relaunches itself, and stops it as soon as the relaunch begins. Without this every
# start rebuilds first: 28 s on two quiet cores, 50-95 s on busy ones. The options
# are written to .tokenkeeper-build-options in the cache; devenv/keycloak.py passes
# exactly those, so the two can never disagree.
#
# stdout carries only the distribution's directory, so
# `home=$(hack/fetch-keycloak.sh)` works; `--print-home` prints it without fetching.
# Progress goes to stderr; a failure is one line naming the step and the log to
# read, with a non-zero exit.
set -euo pipefail

version=26.7.3
artifact=org.keycloak:keycloak-quarkus-dist:$version:tar.gz
build_options=(--db=dev-mem)
min_java_major=21
augment_timeout_seconds=900

cache=${TOKENKEEPER_CACHE:-$HOME/.cache/tokenkeeper}
home=$cache/keycloak-$version
log_root=$cache/logs
log=$log_root/fetch-keycloak-$version.log
staging=""
step_pid=""
keycloak_pid=""

say() { echo "fetch-keycloak: $*" >&2; }

fail() {
  # fail STEP HELP: the one line a caller sees, then a non-zero exit.
  say "FAILED at step '$1'; $2"
  exit 1
}

cleanup() {
  if [[ -n $step_pid ]]; then kill "$step_pid" 2>/dev/null || true; fi
  if [[ -n $keycloak_pid ]]; then stop_group "$keycloak_pid"; fi
  if [[ -n $staging ]]; then rm -rf "$staging"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

java_major() {
  # The feature release of the JDK at $1, from its release file (no JVM started).
  sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$1/release" 2>/dev/null
}

find_java_home() {
  # JAVA_HOME if it is new enough, else the newest JDK under /usr/lib/jvm.
  local candidate major best="" best_major=0
  for candidate in ${JAVA_HOME:+"$JAVA_HOME"} /usr/lib/jvm/*; do
    [[ -x $candidate/bin/java ]] || continue
    major=$(java_major "$candidate")
    [[ -n $major ]] || continue
    if [[ -n ${JAVA_HOME:-} && $candidate == "$JAVA_HOME" && $major -ge $min_java_major ]]; then
      echo "$candidate"
      return 0
    fi
    if ((major > best_major)); then
      best=$candidate
      best_major=$major
    fi
  done
  ((best_major >= min_java_major)) || return 1
  echo "$best"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

stop_group() {
  # SIGTERM the process group led by $1, SIGKILL it if it outlives a grace period.
  local pid=$1 _
  kill -TERM -- "-$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  keycloak_pid=""
}

run_step() {
  # Runs "$@" in the background and waits for it, so a TERM or INT is handled at
  # once instead of after a download or unpack has finished.
  local status=0
  "$@" >>"$log" 2>&1 &
  step_pid=$!
  wait "$step_pid" || status=$?
  step_pid=""
  return "$status"
}

fetch() {
  say "fetching $artifact with mvn (log: $log)"
  run_step mvn -B dependency:copy -Dartifact="$artifact" -DoutputDirectory="$staging" ||
    fail "mvn dependency:copy $artifact" "read $log"
}

unpack() {
  local archive=$staging/keycloak-quarkus-dist-$version.tar.gz
  run_step tar --no-same-owner -xzf "$archive" -C "$staging" ||
    fail "unpack $(basename "$archive")" "read $log"
  rm -f "$archive"
  [[ -x $staging/keycloak-$version/bin/kc.sh ]] ||
    fail "unpack keycloak-$version" "the archive has no keycloak-$version/bin/kc.sh"
}

augment() {
  # Runs start-dev until it relaunches itself, which it does right after the build.
  local dist=$1 java_home=$2 deadline
  say "building keycloak-$version for dev mode (${build_options[*]}; log: $log)"
  JAVA_HOME=$java_home setsid "$dist/bin/kc.sh" start-dev "${build_options[@]}" \
    --http-host=127.0.0.1 --http-port="$(free_port)" \
    --http-management-port="$(free_port)" </dev/null >>"$log" 2>&1 &
  keycloak_pid=$!
  deadline=$((SECONDS + augment_timeout_seconds))
  until grep -q "Running the server in development mode" "$log"; do
    kill -0 "$keycloak_pid" 2>/dev/null ||
      fail "kc.sh start-dev (build for dev mode)" "it exited early; read $log"
    ((SECONDS < deadline)) ||
      fail "kc.sh start-dev (build for dev mode)" "no build after ${augment_timeout_seconds}s; read $log"
    sleep 0.5
  done
  stop_group "$keycloak_pid"
  grep -q "Quarkus augmentation completed" "$log" ||
    fail "kc.sh start-dev (build for dev mode)" "the log shows no build; read $log"

  # The relaunch may have begun writing runtime state; the cache holds none.
  rm -rf "$dist/data"
  printf '%s\n' "${build_options[@]}" >"$dist/.tokenkeeper-build-options"
}

main() {
  local java_home
  if [[ ${1:-} == --print-home ]]; then
    echo "$home"
    return 0
  fi
  [[ $# -eq 0 ]] || fail "read arguments" "usage: fetch-keycloak.sh [--print-home]"
  command -v mvn >/dev/null || fail "find mvn" "no mvn on PATH; install Maven"
  java_home=$(find_java_home) ||
    fail "find a JDK" "Keycloak $version needs Java $min_java_major or newer; none under /usr/lib/jvm"
  mkdir -p "$cache" "$log_root"

  # One fetch at a time per cache: two would race for the rename.
  exec 9>"$cache/.keycloak.lock"
  flock 9

  if [[ ! -f $home/.tokenkeeper-build-options ]]; then
    : >"$log"
    staging=$(mktemp -d "$cache/.keycloak-$version.XXXXXX")
    fetch
    unpack
    augment "$staging/keycloak-$version" "$java_home"
    rm -rf "$home"
    mv "$staging/keycloak-$version" "$home"
    rm -rf "$staging"
    staging=""
    say "keycloak-$version is ready"
  fi
  echo "$home"
}

main "$@"
