# shellcheck shell=bash
# Common settings for vmalab's tools. Sourced, never run.
#
# Everything built lives outside the repo, under $VMALAB_CACHE:
#   src/linux-<ver>/            unpacked kernel source (one per version)
#   kernel/<ver>-<flavor>-<hash>/  O= build dir, keyed by source version + config hash
#   deb/                        downloaded linux-source .deb files

set -euo pipefail

VMALAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VMALAB_CACHE=${VMALAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmalab}
VMALAB_LLVM=${VMALAB_LLVM:--19}          # LLVM= suffix: both kernels and the module use clang
BINDGEN_VERSION=0.73.2
VIRTME_NG_VERSION=1.42
KSRC_PACKAGE=linux-source-7.3
KSRC_FALLBACK_DEB="$VMALAB_ROOT/../shared/cache/linux-source-7.3_7.3.4-1~bpo13+1_all.deb"
# Pinned here, not read from the file beside the package: a swapped package and
# checksum file must not pass.
KSRC_FALLBACK_SHA256=703e369ddd4cce971452f5a593ee55df3a5c10c83caf0fa0df039633ed181ee3
# The rustc the kernels and the module are built with. Both kernel builds are keyed by
# `rustc --version` (tools/kernel): another rustc means two kernel builds (~20 min), so
# tools/setup refuses a different one unless VMALAB_RUSTC_OK=1. (Not a
# rust-toolchain.toml: these machines cannot download a toolchain, and a pinned one
# would make rustup try.)
VMALAB_RUSTC_VERSION=1.95.0
export PATH="$HOME/.cargo/bin:$PATH"
export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm-19/lib}

log() { printf '[vmalab %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Run a long command, printing a heartbeat every 30 s and the tail of its log on failure.
run_logged() {
	local what=$1 logf=$2; shift 2
	log "$what (log: $logf)"
	local start=$SECONDS
	"$@" >"$logf" 2>&1 &
	local pid=$!
	local n=0
	while kill -0 "$pid" 2>/dev/null; do
		sleep 1
		if ((++n % 30 == 0)); then
			log "  … $what: $((SECONDS - start)) s: $(tail -n 1 "$logf" | cut -c1-90)"
		fi
	done
	if ! wait "$pid"; then
		tail -n 40 "$logf" >&2
		die "$what failed after $((SECONDS - start)) s (full log: $logf)"
	fi
	log "$what: done in $((SECONDS - start)) s"
}
