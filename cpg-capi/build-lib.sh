#!/bin/sh
# Build libcpg.so.4 (cpg-rs's drop-in for Corosync's libcpg) from the
# cpg-capi static library:
#
#   cpg-capi/build-lib.sh [--out DIR] [--no-cargo] [--keep-debug]
#
# DIR (default: <target>/capi, <target> being $CARGO_TARGET_DIR or the
# workspace's target/) then holds libcpg.so.4, the libcpg.so symlink and
# libcpg.pc (pointing at DIR and cpg-capi/include); the last line printed
# is DIR. Needs cargo, a C compiler and binutils (ld, objcopy): a fresh
# clone with Rust and gcc is enough.
#
# Why not a cdylib: rustc hands GNU ld a version script of its own for a
# cdylib (an anonymous node hiding everything but the exported functions),
# and ld refuses a second script with named nodes beside it. Debian's
# libcpg.so.4 has 12 functions in node COROSYNC_CPG_1.0 and 8 unversioned
# ("Base" in objdump -T), which only a named node can express. So:
#   1. cargo builds libcpg_capi.a (Rust's std included);
#   2. ld -r pulls the members the 20 functions need into one object;
#   3. objcopy makes every symbol but the 20 local (no Rust symbol, no
#      std symbol can be exported or interposed);
#   4. cc -shared links it with libcpg.versions and soname libcpg.so.4;
#      --gc-sections drops what nothing reaches.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
target=${CARGO_TARGET_DIR:-$root/target}
case $target in /*) ;; *) target=$root/$target ;; esac
out=$target/capi
cargo=1
strip=-Wl,--strip-debug

while [ $# -gt 0 ]; do
	case $1 in
	--out) out=$2; shift 2 ;;
	--no-cargo) cargo=0; shift ;;
	--keep-debug) strip=; shift ;;
	-h|--help) sed -n '2,12p' "$0"; exit 0 ;;
	*) echo "build-lib.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done

CC=${CC:-cc}
LD=${LD:-ld}
OBJCOPY=${OBJCOPY:-objcopy}

if [ "$cargo" = 1 ]; then
	(cd "$root" && cargo build --release -p cpg-capi) >&2
fi
lib=$target/release/libcpg_capi.a
[ -f "$lib" ] || { echo "build-lib.sh: $lib is missing" >&2; exit 1; }

mkdir -p "$out"
work=$(mktemp -d "$out/.link.XXXXXX")
trap 'rm -rf "$work"' EXIT

undefined=
for s in $(cat "$here/libcpg.exports"); do
	undefined="$undefined -u $s"
done
# shellcheck disable=SC2086 # one -u per symbol
"$LD" -r -o "$work/all.o" $undefined "$lib"
"$OBJCOPY" --keep-global-symbols="$here/libcpg.exports" "$work/all.o" "$work/cpg.o"
# the libraries Rust's std needs (rustc --print native-static-libs)
# shellcheck disable=SC2086 # $strip is one flag or none
"$CC" -shared -o "$work/libcpg.so.4" "$work/cpg.o" \
	-Wl,--version-script="$here/libcpg.versions" \
	-Wl,-soname,libcpg.so.4 \
	-Wl,--gc-sections -Wl,-z,relro,-z,now -Wl,--no-undefined $strip \
	-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
mv -f "$work/libcpg.so.4" "$out/libcpg.so.4"
ln -sfn libcpg.so.4 "$out/libcpg.so"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/Cargo.toml" | head -n 1)
"$here/install.sh" --pc-only --libdir "$out" --includedir "$here/include" \
	--version "$version" >"$out/libcpg.pc"
echo "$out"
