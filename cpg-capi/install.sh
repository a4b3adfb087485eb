#!/bin/sh
# Install libcpg.so.4 (built by build-lib.sh), its headers and libcpg.pc:
#
#   cpg-capi/install.sh [--prefix /usr/local] [--libdir DIR] [--includedir DIR]
#                       [--destdir DIR] [--from DIR] [--no-build]
#
#   --prefix      default /usr/local
#   --libdir      default PREFIX/lib (libcpg.so.4, libcpg.so, pkgconfig/libcpg.pc)
#   --includedir  default PREFIX/include (corosync/cpg.h, corosync/corotypes.h)
#   --destdir     staging root prepended to every path (packaging)
#   --from        where build-lib.sh put the library (default: it runs
#                 build-lib.sh unless --no-build, then <target>/capi)
#
# Afterwards (as root, without --destdir) ldconfig runs, so programs linked
# against -lcpg find this library first when PREFIX/lib comes before the
# system's directory in the loader's search (it does for /usr/local/lib on
# Debian). Any program can also be pointed at it with LD_LIBRARY_PATH.
#
# (--pc-only --libdir L --includedir I --version V prints a libcpg.pc for
# those directories; build-lib.sh uses it for the one in the build tree.)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
prefix=/usr/local
libdir=
includedir=
destdir=
from=
build=1
pc_only=0
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/Cargo.toml" | head -n 1)

while [ $# -gt 0 ]; do
	case $1 in
	--prefix) prefix=$2; shift 2 ;;
	--libdir) libdir=$2; shift 2 ;;
	--includedir) includedir=$2; shift 2 ;;
	--destdir) destdir=$2; shift 2 ;;
	--from) from=$2; shift 2 ;;
	--no-build) build=0; shift ;;
	--pc-only) pc_only=1; shift ;;
	--version) version=$2; shift 2 ;;
	-h|--help) sed -n '2,22p' "$0"; exit 0 ;;
	*) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
libdir=${libdir:-$prefix/lib}
includedir=${includedir:-$prefix/include}

pc() {
	cat <<EOF
# libcpg.so.4 of cpg-rs: Corosync's CPG API over cpgd
libdir=$libdir
includedir=$includedir

Name: cpg
Description: Closed Process Group API (cpg-rs, talks to cpgd)
Version: $version
Libs: -L\${libdir} -lcpg
Cflags: -I\${includedir}
EOF
}

if [ "$pc_only" = 1 ]; then
	pc
	exit 0
fi

if [ -z "$from" ]; then
	if [ "$build" = 1 ]; then
		from=$("$here/build-lib.sh" | tail -n 1)
	else
		root=$(dirname "$here")
		from=${CARGO_TARGET_DIR:-$root/target}/capi
	fi
fi
[ -f "$from/libcpg.so.4" ] || { echo "install.sh: no $from/libcpg.so.4 (run build-lib.sh)" >&2; exit 1; }

install -d "$destdir$libdir" "$destdir$libdir/pkgconfig" "$destdir$includedir/corosync"
install -m 0755 "$from/libcpg.so.4" "$destdir$libdir/libcpg.so.4"
ln -sfn libcpg.so.4 "$destdir$libdir/libcpg.so"
install -m 0644 "$here/include/corosync/cpg.h" "$here/include/corosync/corotypes.h" \
	"$destdir$includedir/corosync/"
pc >"$destdir$libdir/pkgconfig/libcpg.pc"
chmod 0644 "$destdir$libdir/pkgconfig/libcpg.pc"
echo "installed libcpg.so.4 in $destdir$libdir, headers in $destdir$includedir/corosync"
if [ -z "$destdir" ] && [ "$(id -u)" = 0 ] && command -v ldconfig >/dev/null 2>&1; then
	ldconfig
fi
