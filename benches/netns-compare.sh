#!/usr/bin/env bash
# N real cpg-rs nodes against N real Corosync nodes, one per network namespace
# on a bridge (issue 13). Root only. Builds cpgtool (cargo, release) and
# cpgload (cc, -lcpg), installs corosync + libcpg-dev if missing, runs
# benches/netns_compare.py, then benches/netns_report.py (table + SVG).
#
# Usage: benches/netns-compare.sh [compare|scaling] [--out DIR] [--no-build] [netns_compare.py options]
#   compare (default): --nodes 3, --mtus "1500 9000", --crypto "off on",
#       --sizes "64 1024 65536 1048576", 64 B round trip, --transports knet
#       (add udpu: --transports "knet udpu"; crypto on runs knet only),
#       --seconds 3, --repeat 2 (best of 2), rows ours/theirs interleaved;
#       --gso "on off" adds rows of ours with GSO off (cpg-rs-nogso).
#       Output: benches/results/netns-3/{results.jsonl,report.md,chart.svg,logs/}
#   scaling: ours at --scale-nodes "3 5 9 16" (64 B and 1 KiB per member,
#       token rotation time), failover (SIGKILL -> NODEDOWN) for ours at every
#       N and Corosync's at --cs-failover "3 5"; Corosync throughput at
#       --cs-scale "3 5". Output: benches/results/netns-scaling/
# Cleans up (namespaces nb<pid>-*, processes, temp dirs) on any exit.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
mode=compare
case "${1:-}" in compare|scaling) mode="$1"; shift ;; esac
out=""
build=1
pass=()
while [ $# -gt 0 ]; do
	case "$1" in
	--out) out="$2"; shift 2 ;;
	--no-build) build=0; shift ;;
	-h|--help) sed -n '2,20p' "$0"; exec python3 "$here/netns_compare.py" --help ;;
	*) pass+=("$1"); shift ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "netns-compare.sh: root only (network namespaces)" >&2; exit 1; }
if [ -z "$out" ]; then
	if [ "$mode" = compare ]; then out="$here/results/netns-3"; else out="$here/results/netns-scaling"; fi
fi
mkdir -p "$out"
pkgs=()
command -v corosync >/dev/null 2>&1 || pkgs+=(corosync)
[ -f /usr/include/corosync/cpg.h ] || pkgs+=(libcpg-dev)
if [ ${#pkgs[@]} -gt 0 ]; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}" >&2
fi
running="$(ps -C corosync -o pid=,stat= 2>/dev/null | awk '$2 !~ /^Z/ { printf "%s ", $1 }' || true)"
[ -z "$running" ] || echo "netns-compare.sh: note: a corosync runs on this host (pids $running); ours run in their own namespaces and do not touch it" >&2
mkdir -p "$here/corosync/build"
cc -O2 -Wall -o "$here/corosync/build/cpgload" "$here/corosync/cpgload.c" -lcpg -lpthread
if [ "$build" = 1 ]; then
	(cd "$repo" && cargo build --release -p cpg-std --bin cpgtool) >&2
fi
python3 "$here/netns_compare.py" "$mode" --out "$out" "${pass[@]+"${pass[@]}"}"
python3 "$here/netns_report.py" "$out/results.jsonl" --svg "$out/chart.svg" | tee "$out/report.md"
