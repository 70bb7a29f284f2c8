#!/usr/bin/env bash
# Builds wick's runtime image from docker/Dockerfile and runs it as a cluster would, on a machine
# with no Docker daemon and no registry: Debian's buildah (chroot isolation) builds and runs it;
# a bookworm base made here with debootstrap and slimmed like debian:bookworm-slim stands in for
# it (RUNTIME_IMAGE); the wick binary is built on this host and enters through the Dockerfile's
# `prebuilt` stage (BINARY_STAGE=prebuilt), since no Rust image can be pulled. The image holds no
# model (MODEL_STAGE=model-none): each model is mounted read-only at /models/default.
#
# For the encoder (all-minilm-l6-v2) and the chat model (smollm2-135m-instruct) in turn: start the
# image's entrypoint as its user (uid 1001) with the root file system mounted read-only, wait for
# /ready, run the HEALTHCHECK command, send a /predict or a chat completion, send SIGTERM to wick,
# and require exit status 0 after a drain. Prints the image size (at most 100 MB) and the time to
# ready. Run as root (buildah and debootstrap are installed if missing): docker/smoke.sh
# About 2 minutes the first time (debootstrap), 30 s after, plus the cargo build if stale.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s.%N)
[ "$(id -u)" = 0 ] || { echo "smoke: run as root (buildah, mounts)" >&2; exit 1; }
if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    buildah debootstrap >/dev/null
fi
export BUILDAH_ISOLATION=chroot
BASE=localhost/wick-smoke-base:bookworm-slim
IMAGE=localhost/wick:smoke
MAX_IMAGE_BYTES=100000000
work=$(mktemp -d /tmp/wick-smoke.XXXXXX)
container="" mnt="" wick_pid="" run_pid=""

cleanup() {
  [ -n "$wick_pid" ] && kill -KILL "$wick_pid" 2>/dev/null || true
  [ -n "$run_pid" ] && wait "$run_pid" 2>/dev/null || true
  if [ -n "$container" ]; then
    umount "$mnt/run" 2>/dev/null || true
    umount "$mnt" 2>/dev/null || true
    buildah umount "$container" >/dev/null 2>&1 || true
    buildah rm "$container" >/dev/null 2>&1 || true
  fi
  container="" wick_pid="" run_pid=""
}
trap 'cleanup; rm -rf "$work"' EXIT

seconds_since() { printf '%.1f' "$(echo "$(date +%s.%N) - $1" | bc)"; }
say() { echo "smoke: $*"; }
die() { echo "smoke: FAILED: $*" >&2; exit 1; }

# --- the base: debootstrap'd bookworm, slimmed as debian:bookworm-slim is -----------------------
make_base() {
  local root="$work/rootfs"
  debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
    bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
    die "debootstrap (log: $(tail -3 "$work/debootstrap.log"))"
  rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/man/* \
    "$root"/usr/share/info/* "$root"/usr/share/lintian
  find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  tar --numeric-owner -C "$root" -cf "$work/base.tar" .
  rm -rf "$root"
  local ctr
  ctr=$(buildah from scratch)
  buildah add "$ctr" "$work/base.tar" / >/dev/null
  buildah config --cmd /bin/bash "$ctr"
  buildah commit -q --rm "$ctr" "$BASE" >/dev/null
  rm -f "$work/base.tar"
}
if buildah inspect --type image "$BASE" >/dev/null 2>&1; then
  say "base $BASE (cached)"
else
  t=$(date +%s.%N)
  make_base
  say "base $BASE made by debootstrap in $(seconds_since "$t") s"
fi

# --- the image ------------------------------------------------------------------------------------
t=$(date +%s.%N)
cargo build --release --locked --bin wick -q
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c \
  'import json, sys; print(json.load(sys.stdin)["target_directory"])')
mkdir -p "$work/context"
# Copied at once (another build may replace the file), stripped as the build stage strips.
strip --strip-debug -o "$work/context/wick" "$target_dir/release/wick"
say "wick built on the host ($(du -h "$work/context/wick" | cut -f1)) in $(seconds_since "$t") s"

t=$(date +%s.%N)
dangling_before=$(buildah images -q --filter dangling=true | sort)
containers_before=$(buildah containers -q | sort)
buildah bud --isolation chroot --format docker -q -f docker/Dockerfile --target runtime \
  --build-arg BINARY_STAGE=prebuilt --build-arg MODEL_STAGE=model-none \
  --build-arg RUNTIME_IMAGE="$BASE" -t "$IMAGE" "$work/context" >/dev/null
# The stage containers and images this build left behind (not anyone else's).
comm -13 <(echo "$containers_before") <(buildah containers -q | sort) |
  xargs -r buildah rm >/dev/null 2>&1 || true
comm -13 <(echo "$dangling_before") <(buildah images -q --filter dangling=true | sort) |
  xargs -r buildah rmi >/dev/null 2>&1 || true
# The size of the image's file system, uncompressed (what `docker images` reports).
sizer=$(buildah from "$IMAGE")
size=$(du -sb "$(buildah mount "$sizer")" | cut -f1)
buildah umount "$sizer" >/dev/null && buildah rm "$sizer" >/dev/null
say "image $IMAGE built in $(seconds_since "$t") s: $((size / 1000000)) MB (limit $((MAX_IMAGE_BYTES / 1000000)) MB)"
[ "$size" -le "$MAX_IMAGE_BYTES" ] || die "image is $size bytes, over $MAX_IMAGE_BYTES"
user=$(buildah inspect --type image --format '{{.Docker.Config.User}}' "$IMAGE")
[ "$user" = "1001:1001" ] || die "image user is '$user', not 1001:1001"
health=$(buildah inspect --type image --format '{{.Docker.Config.Healthcheck.Test}}' "$IMAGE")
[ "$health" = '[CMD wick probe http://127.0.0.1:8080/health]' ] ||
  die "HEALTHCHECK is $health"
entrypoint=$(buildah inspect --type image --format '{{range .Docker.Config.Entrypoint}}{{.}} {{end}}' "$IMAGE")
say "user $user, entrypoint '$entrypoint', HEALTHCHECK $health"

# --- run it -----------------------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# run_image MODEL_DIR REQUEST_PATH REQUEST_BODY JQ_CHECK
run_image() {
  local model=$1 path=$2 body=$3 check=$4 port log t0
  [ -f "$model/.complete" ] || die "$model missing: run models/fetch $(basename "$model")"
  port=$(free_port)
  log="$work/$(basename "$model").log"
  container=$(buildah from "$IMAGE")
  mnt=$(buildah mount "$container")
  # A read-only root, as readOnlyRootFilesystem gives a pod; /run stays a small tmpfs only
  # because buildah itself writes /run/.containerenv there.
  mount --bind "$mnt" "$mnt"
  mount -o remount,bind,ro "$mnt"
  mount -t tmpfs -o size=1m,mode=755 tmpfs "$mnt/run"
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086 # the entrypoint is words
  buildah run --isolation chroot -v "$(realpath "$model"):/models/default:ro" \
    -e WICK_HOST=127.0.0.1 -e WICK_PORT="$port" -e WICK_PRE_STOP_DELAY=1 \
    "$container" -- $entrypoint >"$log" 2>&1 &
  run_pid=$!
  local ready=""
  for _ in $(seq 1 1200); do
    if curl -sf "http://127.0.0.1:$port/ready" >/dev/null 2>&1; then ready=1; break; fi
    kill -0 "$run_pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$ready" ] || die "$(basename "$model") never got ready: $(tail -5 "$log")"
  local to_ready
  to_ready=$(seconds_since "$t0")
  for p in $(pgrep -x wick); do
    # (Other wick processes on the machine may come and go meanwhile.)
    if { tr '\0' '\n' <"/proc/$p/environ"; } 2>/dev/null | grep -qx "WICK_PORT=$port"; then
      wick_pid=$p
    fi
  done
  [ -n "$wick_pid" ] || die "wick's process not found"
  local uid root_mode
  uid=$(awk '/^Uid:/ {print $2}' "/proc/$wick_pid/status")
  root_mode=$(awk '$5 == "/" {print $6}' "/proc/$wick_pid/mountinfo" | cut -d, -f1)
  [ "$uid" = 1001 ] || die "wick runs as uid $uid"
  [ "$root_mode" = ro ] || die "wick's root is mounted $root_mode"
  # The image's HEALTHCHECK command, inside the image, as its user.
  chroot --userspec=1001:1001 "$mnt" wick probe "http://127.0.0.1:$port/health" ||
    die "the HEALTHCHECK command failed"
  local answer
  answer=$(curl -sf -m 60 -H 'content-type: application/json' -d "$body" "http://127.0.0.1:$port$path") ||
    die "$path failed"
  echo "$answer" | python3 -c "import json, sys; r = json.load(sys.stdin); assert $check, r" ||
    die "$path answered $answer"
  local t1 code=0
  t1=$(date +%s.%N)
  kill -TERM "$wick_pid"
  wait "$run_pid" || code=$?
  run_pid="" wick_pid=""
  [ "$code" = 0 ] || die "exit status $code after SIGTERM: $(tail -5 "$log")"
  grep -q '"to":"stopped"' "$log" || die "no clean stop in the log"
  local written
  written=$(find "$mnt/run" -mindepth 1 ! -name .containerenv | wc -l)
  [ "$written" = 0 ] || die "wick wrote to /run"
  say "$(basename "$model"): uid $uid, root $root_mode, ready in $to_ready s, HEALTHCHECK ok, $path ok, SIGTERM -> exit 0 in $(seconds_since "$t1") s"
  cleanup
}

run_image models/all-minilm-l6-v2 /predict '{"inputs": "a smoke test of the image"}' \
  'r["task"] == "embed" and len(r["outputs"][0]) == 384'
run_image models/smollm2-135m-instruct /v1/chat/completions \
  '{"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}' \
  'r["choices"][0]["message"]["content"] and r["usage"]["completion_tokens"] > 0'
say "passed in $(seconds_since "$started") s"
