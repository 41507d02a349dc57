#!/usr/bin/env bash
# The profile-guided release build: the binary the Docker image ships and bench/compare.sh
# measures.
#
# usage: bench/pgo.sh [OUT]          (OUT defaults to target/pgo/portcullis)
#
#   1. build with `-Cprofile-generate` (cargo profile `dist`: release with fat LTO and one
#      codegen unit), in target/pgo/generate
#   2. run it under bench/pgo_train.py: `portcullis demo` and the traffic of a site's users
#      through it (PGO_SECONDS, default 20); it writes its profile when it exits
#   3. merge the profile with the toolchain's own llvm-profdata (rustup's llvm-tools, added if
#      missing: the profile format is the compiler's LLVM's, so no other llvm-profdata will do)
#   4. build again with `-Cprofile-use`, in target/pgo/use, and copy the binary to OUT
#
# Needs cargo (rustup), python3 and about 10 minutes on two cores. RUSTFLAGS from the
# environment are kept and added to. A plain `cargo build --release` makes the same program,
# with about 30% more CPU per proxied request (docs/performance.md, "Sixth pass").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
WORK="$TARGET/pgo"
OUT="${1:-$WORK/portcullis}"
log() { printf '[pgo] %s\n' "$*" >&2; }

host="$(rustc -vV | sed -n 's/^host: //p')"
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
  log "rustup component add llvm-tools (llvm-profdata of the compiler's LLVM)"
  rustup component add llvm-tools >/dev/null
fi

build() {  # build TARGET_DIR EXTRA_RUSTFLAGS
  RUSTFLAGS="${RUSTFLAGS:-} $2" cargo build --profile dist --locked --quiet \
    --bin portcullis --target-dir "$1"
}

rm -rf "$WORK/profiles"
mkdir -p "$WORK/profiles"
log "1/4 instrumented build"
build "$WORK/generate" "-Cprofile-generate=$WORK/profiles"

log "2/4 training run (bench/pgo_train.py)"
LLVM_PROFILE_FILE="$WORK/profiles/portcullis-%p-%m.profraw" \
  python3 bench/pgo_train.py "$WORK/generate/dist/portcullis" "${PGO_SECONDS:-20}"

log "3/4 merging the profile"
# Only the trained binary's files: build scripts compiled in step 1 leave their own.
"$profdata" merge -o "$WORK/portcullis.profdata" "$WORK/profiles"/portcullis-*.profraw

log "4/4 optimized build"
build "$WORK/use" "-Cprofile-use=$WORK/portcullis.profdata"
mkdir -p "$(dirname "$OUT")"
cp "$WORK/use/dist/portcullis" "$OUT"
log "built $OUT"
