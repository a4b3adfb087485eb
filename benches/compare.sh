#!/usr/bin/env bash
# Side-by-side benchmark (issue 4): cpg-rs (`cpgtool bench`) against Corosync 3
# (Debian's corosync + libcpg, driven by benches/corosync/cpgload.c) on this
# host, plus the UDP loopback ceiling. Prints one table (benches/report.py)
# and writes everything to benches/results/<timestamp>/:
#   results.jsonl  one JSON line per member process and row, both systems
#   report.txt     the table;  report.json  the same as JSON;  chart.svg
#   logs/          corosync logs and each process's stderr
#
# Usage: benches/compare.sh [--seconds S] [--quick] [--transports "knet udpu"]
#          [--members "1 3"] [--sizes "64 1024 65536 1048576"]
#          [--guarantees "agreed safe"] [--sends "copy zcb"]
#          [--latency-guarantees "agreed safe"] [--no-latency]
#          [--no-corosync] [--no-ours] [--no-loopback] [--no-build]
#          [--sched-rr] [--repeat N] [--out DIR] [--ours "nodes daemon"]
#          [--interleave]
#
# --ours picks our topologies: "nodes" (M member processes, one ring node
# each, system cpg-rs), "daemon" (one cpgd and M client processes over
# shared memory, system cpg-rs-cpgd: the topology of Corosync's rows)
# and/or "libcpg" (the very cpgload binary of Corosync's rows, run on our
# libcpg.so.4 through LD_LIBRARY_PATH against one cpgd: system
# cpg-rs-libcpg, the identical-binary comparison).
# With "daemon" alone the report compares cpg-rs-cpgd with Corosync.
# --daemon-netmtu N (default 65535): cpgd's netmtu; knet's PMTU discovery
# gives Corosync's single node loopback's MTU the same way.
#
# --interleave (with --ours libcpg and one transport): both daemons run
# at once and each row runs on Corosync, then at once on ours, so load
# from elsewhere on the machine hits both systems alike (without it, all
# of Corosync's rows run, then all of ours).
#
# --repeat N runs the whole set of rows N times (spread over time, which
# helps on a shared machine); the report keeps each row's best repeat.
# Corosync is installed with apt-get if missing (needs root), started as
# `corosync -f -c <run dir>/corosync.conf` once per transport, and stopped by
# the pid this script started (never by name). It refuses to start if another
# corosync is already running (they would share the IPC names).
# Only 127.0.0.1 is used. Every wait is bounded.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

seconds=3
quick=0
transports="knet udpu"
members_list="1 3"
sizes="64 1024 65536 1048576"
guarantees="agreed safe"
sends="copy zcb"
lat_guarantees="agreed safe"
do_latency=1
do_corosync=1
do_ours=1
interleave=0
do_loopback=1
do_build=1
sched_rr=no
repeat=1
out=""
ours_topologies="nodes"
daemon_netmtu=65535

while [ $# -gt 0 ]; do
	case "$1" in
	--seconds) seconds="$2"; shift 2 ;;
	--quick) quick=1; shift ;;
	--transports) transports="$2"; shift 2 ;;
	--members) members_list="$2"; shift 2 ;;
	--sizes) sizes="$2"; shift 2 ;;
	--guarantees) guarantees="$2"; shift 2 ;;
	--sends) sends="$2"; shift 2 ;;
	--latency-guarantees) lat_guarantees="$2"; shift 2 ;;
	--no-latency) do_latency=0; shift ;;
	--no-corosync) do_corosync=0; shift ;;
	--no-ours) do_ours=0; shift ;;
	--interleave) interleave=1; shift ;;
	--no-loopback) do_loopback=0; shift ;;
	--no-build) do_build=0; shift ;;
	--sched-rr) sched_rr=yes; shift ;;
	--repeat) repeat="$2"; shift 2 ;;
	--out) out="$2"; shift 2 ;;
	--ours) ours_topologies="$2"; shift 2 ;;
	--daemon-netmtu) daemon_netmtu="$2"; shift 2 ;;
	-h|--help) sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 0 ;;
	*) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
if [ "$quick" = 1 ]; then
	seconds=1
fi
if [ "$interleave" = 1 ] && { [ "$ours_topologies" != libcpg ] ||
	[ "$transports" != "${transports%% *}" ] || [ "$do_corosync" != 1 ] || [ "$do_ours" != 1 ]; }; then
	echo "compare.sh: --interleave needs --ours libcpg, one transport and both systems" >&2
	exit 2
fi
drain=10
if [ "$quick" = 1 ]; then drain=3; fi
wait_timeout=30

stamp="$(date +%Y%m%d-%H%M%S)"
out="${out:-$here/results/$stamp}"
mkdir -p "$out/logs"
results="$out/results.jsonl"
: > "$results"
build="$here/corosync/build"
mkdir -p "$build"

log() { echo "[compare] $*" >&2; }

# ---------------------------------------------------------------- cleanup
cs_pid=""
cs_dirs=()
stop_corosync() {
	if [ -n "$cs_pid" ]; then
		if kill -0 "$cs_pid" 2>/dev/null; then
			kill -TERM "$cs_pid" 2>/dev/null || true
			for _ in $(seq 1 100); do
				kill -0 "$cs_pid" 2>/dev/null || break
				sleep 0.1
			done
			if kill -0 "$cs_pid" 2>/dev/null; then
				log "corosync $cs_pid did not stop on TERM in 10 s: KILL"
				kill -KILL "$cs_pid" 2>/dev/null || true
			fi
		fi
		wait "$cs_pid" 2>/dev/null || true
		cs_pid=""
	fi
}
cleanup() {
	stop_corosync
	if declare -f stop_cpgd >/dev/null; then stop_cpgd; fi
	local d
	for d in "${cs_dirs[@]+"${cs_dirs[@]}"}"; do
		rm -rf "$d"
	done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- build
cc_bin="${CC:-cc}"
build_c() {
	"$cc_bin" -O2 -Wall -o "$build/loopback_ceiling" "$here/loopback_ceiling.c" -lpthread
	if [ "$do_corosync" = 1 ]; then
		"$cc_bin" -O2 -Wall -o "$build/cpgload" "$here/corosync/cpgload.c" -lcpg -lpthread
	fi
}

install_packages() { # what this script needs: a C compiler, and Corosync unless --no-corosync
	local pkgs=()
	command -v "${CC:-cc}" >/dev/null 2>&1 || pkgs+=(gcc libc6-dev)
	if [ "$do_corosync" = 1 ]; then
		command -v corosync >/dev/null 2>&1 || pkgs+=(corosync)
		[ -f /usr/include/corosync/cpg.h ] || pkgs+=(libcpg-dev)
	fi
	[ ${#pkgs[@]} -eq 0 ] && return 0
	if [ "$(id -u)" != 0 ]; then
		echo "compare.sh: missing ${pkgs[*]} and not root to apt-get install them" >&2
		return 1
	fi
	log "installing ${pkgs[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# Keep the package from starting its own corosync service (on hosts with an
	# init system): we run our own with our own config, and one per host only.
	local prc=""
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		prc=/usr/sbin/policy-rc.d
		printf '#!/bin/sh\nexit 101\n' >"$prc" && chmod 755 "$prc"
	fi
	local rc=0
	if ! apt-get install -y "${pkgs[@]}" >"$out/logs/apt.log" 2>&1; then
		apt-get update >>"$out/logs/apt.log" 2>&1 || true
		apt-get install -y "${pkgs[@]}" >>"$out/logs/apt.log" 2>&1 || rc=$?
	fi
	[ -n "$prc" ] && rm -f "$prc"
	if [ "$rc" != 0 ]; then
		echo "compare.sh: apt-get install ${pkgs[*]} failed (logs/apt.log)" >&2
		return 1
	fi
	# The package may start its own service (it does not in a container without
	# systemd, but make sure we never get in its way: we refuse to run alongside).
}

install_packages
if [ "$do_corosync" = 1 ]; then
	running="$(ps -C corosync -o pid=,stat= 2>/dev/null | awk '$2 !~ /^Z/ { printf "%s ", $1 }' || true)"
	if [ -n "$running" ]; then
		echo "compare.sh: a corosync is already running (pids: $running);" \
			"stop it first or use --no-corosync (this script only stops what it started)" >&2
		exit 1
	fi
fi
build_c

# ---------------------------------------------------------------- rows
row_timeout() { # bound for one member process of a row
	awk -v s="$seconds" -v w="$wait_timeout" -v d="$drain" 'BEGIN { printf "%d", s + w + d + 40 }'
}

# run_corosync_row SYSTEM M SIZE G SEND LATENCY(0/1)
run_corosync_row() {
	local system="$1" m="$2" size="$3" g="$4" send="$5" lat="$6"
	local group="cpgbench-$system-$m-$size-$g-$send-$lat-$$"
	local tag="$system-m$m-$size-$g-$send$([ "$lat" = 1 ] && echo -lat)-r$rep"
	local pids=() i f extra=()
	[ "$lat" = 1 ] && extra=(--latency)
	for i in $(seq 1 "$m"); do
		timeout --kill-after=5 "$(row_timeout)" "$build/cpgload" --size "$size" --guarantee "$g" \
			--send "$send" --seconds "$seconds" --group "${group:0:120}" --expect-members "$m" \
			--system "$system" --wait-timeout "$wait_timeout" --drain-timeout "$drain" \
			--json "${extra[@]+"${extra[@]}"}" \
			>"$out/logs/$tag.$i.out" 2>"$out/logs/$tag.$i.err" &
		pids+=($!)
	done
	for i in "${!pids[@]}"; do
		wait "${pids[$i]}" || true
	done
	for i in $(seq 1 "$m"); do
		f="$out/logs/$tag.$i.out"
		if grep -q '^{' "$f" 2>/dev/null; then
			grep '^{' "$f" | tail -n 1 | tag_rep >>"$results"
		else
			printf '{"system":"%s","members":%s,"size":%s,"guarantee":"%s","send":"%s","seconds":%s,"latency":%s,"error":"cpgload printed no result (see logs/%s.%s.err)"}\n' \
				"$system" "$m" "$size" "$g" "$send" "$seconds" "$([ "$lat" = 1 ] && echo true || echo false)" "$tag" "$i" | tag_rep >>"$results"
		fi
	done
	tail -n "$m" "$results" | python3 "$here/report.py" --summary-lines >&2 || true
}

tag_rep() { sed "s/^{/{\"rep\":$rep,/"; }

for_each_row() { # calls "$1" SYSTEM M SIZE G SEND LAT for every row, --repeat times
	local fn="$1" system="$2" m size g send
	for rep in $(seq 1 "$repeat"); do
		for_each_row_once "$@"
	done
}
rep=1
for_each_row_once() {
	local fn="$1" system="$2" m size g send
	for m in $members_list; do
		for size in $sizes; do
			for g in $guarantees; do
				for send in $sends; do
					"$fn" "$system" "$m" "$size" "$g" "$send" 0
				done
			done
		done
	done
	if [ "$do_latency" = 1 ]; then
		for m in $members_list; do
			for g in $lat_guarantees; do
				"$fn" "$system" "$m" 64 "$g" copy 1
			done
		done
	fi
}

# ---------------------------------------------------------------- corosync
start_corosync() { # TRANSPORT -> sets cs_pid, returns 1 if it does not come up
	local t="$1"
	local dir
	dir="$(mktemp -d /tmp/cpgbench-corosync-$t.XXXXXX)"
	cs_dirs+=("$dir")
	sed -e "s#@RUNDIR@#$dir#g" -e "s#@CLUSTER@#cpgbench#g" -e "s#@SCHED_RR@#$sched_rr#g" \
		"$here/corosync/corosync-$t.conf.in" >"$dir/corosync.conf"
	corosync -t -c "$dir/corosync.conf" >"$out/logs/corosync-$t.check" 2>&1 || {
		log "corosync -t rejected the $t config (logs/corosync-$t.check)"
		return 1
	}
	cp "$dir/corosync.conf" "$out/logs/corosync-$t.conf"
	(cd "$dir" && exec corosync -f -c "$dir/corosync.conf") >"$out/logs/corosync-$t.stdout" 2>&1 &
	cs_pid=$!
	log "started corosync ($t) pid $cs_pid, run dir $dir"
	local deadline=$((SECONDS + 30))
	while [ $SECONDS -lt $deadline ]; do
		if ! kill -0 "$cs_pid" 2>/dev/null; then
			log "corosync ($t) exited during startup"
			cp "$dir/corosync.log" "$out/logs/corosync-$t.log" 2>/dev/null || true
			cs_pid=""
			return 1
		fi
		if timeout 5 corosync-cfgtool -s >/dev/null 2>&1 &&
			timeout 20 "$build/cpgload" --size 64 --seconds 0.1 --group "cpgbench-probe-$$" \
				--expect-members 1 --wait-timeout 5 --drain-timeout 2 --json 2>/dev/null |
			grep -q '"msgs_per_sec"'; then
			return 0
		fi
		sleep 0.5
	done
	log "corosync ($t) did not become ready in 30 s"
	return 1
}

error_row() { # SYSTEM M SIZE G SEND LAT  (records a row that could not run)
	printf '{"system":"%s","members":%s,"size":%s,"guarantee":"%s","send":"%s","seconds":%s,"latency":%s,"error":"%s"}\n' \
		"$1" "$2" "$3" "$4" "$5" "$seconds" "$([ "$6" = 1 ] && echo true || echo false)" "$row_error" | tag_rep >>"$results"
}

meta_line() { # WHEN: one {"meta":...} line (machine, load, versions) for the report
	local cs_ver="none"
	command -v corosync >/dev/null 2>&1 && cs_ver="$(corosync -v 2>/dev/null | sed -n "s/.*version '\([^']*\)'.*/\1/p" | head -n 1)"
	printf '{"meta":{"when":"%s","date":"%s","kernel":"%s","cpus":%s,"loadavg":"%s","corosync":"%s","seconds":%s,"repeat":%s,"sched_rr":"%s","git":"%s"}}\n' \
		"$1" "$(date -Is)" "$(uname -r)" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" "${cs_ver:-unknown}" \
		"$seconds" "$repeat" "$sched_rr" "$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)" >>"$results"

}
meta_line start

# ---------------------------------------------------------------- loopback
if [ "$do_loopback" = 1 ]; then
	log "loopback ceiling (${seconds}s per size; again at the end)"
	timeout 120 "$build/loopback_ceiling" --seconds "$seconds" >>"$results" 2>"$out/logs/loopback.err" ||
		log "loopback_ceiling failed (logs/loopback.err)"
fi

if [ "$do_corosync" = 1 ] && [ "$interleave" = 0 ]; then
	for t in $transports; do
		if start_corosync "$t"; then
			log "corosync-$t: running rows (${seconds}s each)"
			for_each_row run_corosync_row "corosync-$t"
		else
			row_error="corosync ($t) did not start"
			for_each_row error_row "corosync-$t"
		fi
		if [ -n "$cs_pid" ]; then
			dir="${cs_dirs[${#cs_dirs[@]}-1]}"
			stop_corosync
			cp "$dir/corosync.log" "$out/logs/corosync-$t.log" 2>/dev/null || true
		fi
	done
fi

# ---------------------------------------------------------------- ours
cpgtool="$repo/target/release/cpgtool"
run_ours_row() { # SYSTEM M SIZE G SEND LAT
	local system="$1" m="$2" size="$3" g="$4" send="$5" lat="$6"
	local tag="$system-m$m-$size-$g-$send$([ "$lat" = 1 ] && echo -lat)-r$rep"
	local extra=()
	[ "$lat" = 1 ] && extra=(--latency)
	# cpgd's single node on loopback uses loopback's path MTU, as knet's
	# PMTU discovery gives Corosync's single node (totem netmtu follows it)
	[ "$system" = cpg-rs-cpgd ] && extra+=(--daemon --netmtu "$daemon_netmtu")
	local bound
	bound=$(awk -v s="$seconds" -v m="$m" 'BEGIN { printf "%d", s + 120 }')
	timeout --kill-after=5 "$bound" "$cpgtool" bench --members "$m" --size "$size" --guarantee "$g" \
		--send "$send" --seconds "$seconds" "${extra[@]+"${extra[@]}"}" --json \
		>"$out/logs/$tag.out" 2>"$out/logs/$tag.err" || true
	if grep -q '^{' "$out/logs/$tag.out"; then
		grep '^{' "$out/logs/$tag.out" | tag_rep >>"$results"
		grep '^{' "$out/logs/$tag.out" | python3 "$here/report.py" --summary-lines >&2 || true
	else
		row_error="cpgtool bench printed no result (see logs/$tag.err)"
		error_row "$system" "$m" "$size" "$g" "$send" "$lat"
	fi
}
# ---------------------------------------------------------------- ours, libcpg.so.4
cpgd_pid=""
cpgd_dir=""
capi_dir="$repo/target/capi"
start_cpgd() { # one cpgd on a free port, its socket in a run dir; libcpg.so.4 built
	if [ "$do_build" = 1 ]; then
		(cd "$repo" && timeout 1800 cpg-capi/build-lib.sh --out "$capi_dir") >"$out/logs/capi-build.log" 2>&1 ||
			{ log "cpg-capi/build-lib.sh failed (logs/capi-build.log)"; return 1; }
	fi
	[ -f "$capi_dir/libcpg.so.4" ] || return 1
	cpgd_dir="$(mktemp -d /tmp/cpgbench-cpgd.XXXXXX)"
	"$cpgtool" config --nodes 1 --crypto none --out "$cpgd_dir/cpg.toml" \
		--state-dir "$cpgd_dir/state" >/dev/null 2>"$out/logs/cpgd.config" || return 1
	sed -i -e "s|^socket = .*|socket = \"$cpgd_dir/cpgd.sock\"|" \
		-e "s|^netmtu = .*|netmtu = $daemon_netmtu|" "$cpgd_dir/cpg.toml"
	"$repo/target/release/cpgd" --config "$cpgd_dir/cpg.toml" --nodeid 1 --log-level warn \
		>"$out/logs/cpgd.stdout" 2>"$out/logs/cpgd.stderr" &
	cpgd_pid=$!
	local deadline=$((SECONDS + 30))
	while [ $SECONDS -lt $deadline ]; do
		[ -S "$cpgd_dir/cpgd.sock" ] && return 0
		kill -0 "$cpgd_pid" 2>/dev/null || return 1
		sleep 0.2
	done
	return 1
}
stop_cpgd() {
	if [ -n "$cpgd_pid" ]; then
		kill -TERM "$cpgd_pid" 2>/dev/null || true
		wait "$cpgd_pid" 2>/dev/null || true
		cpgd_pid=""
	fi
	[ -n "$cpgd_dir" ] && rm -rf "$cpgd_dir"
	cpgd_dir=""
}
run_libcpg_row() { # SYSTEM M SIZE G SEND LAT: Corosync's row, the same cpgload binary, on ours
	(
		export LD_LIBRARY_PATH="$capi_dir" CPGD_SOCKET="$cpgd_dir/cpgd.sock"
		run_corosync_row "$@"
	)
}

# ---------------------------------------------------------------- interleaved
run_pair_row() { # TRANSPORT M SIZE G SEND LAT: Corosync's row, then the same on ours
	local t="$1"
	shift
	run_corosync_row "corosync-$t" "$@"
	run_libcpg_row cpg-rs-libcpg "$@"
}
build_ours() { # cpgtool and cpgd, when asked to build and cargo is here
	if [ "$do_build" = 1 ] && command -v cargo >/dev/null 2>&1; then
		log "building cpgtool and cpgd (cargo build --release -p cpg-std --bin cpgtool -p cpgd)"
		(cd "$repo" && timeout 1800 cargo build --release -p cpg-std --bin cpgtool -p cpgd) \
			>"$out/logs/cargo.log" 2>&1 || log "cargo build failed (logs/cargo.log)"
	fi
}
if [ "$interleave" = 1 ]; then
	t="$transports"
	build_ours
	cs_up=0
	cpgd_up=0
	if start_corosync "$t"; then cs_up=1; fi
	if start_cpgd; then cpgd_up=1; fi
	if [ "$cs_up" = 1 ] && [ "$cpgd_up" = 1 ]; then
		log "corosync-$t and cpg-rs-libcpg, interleaved row by row (${seconds}s each)"
		for_each_row run_pair_row "$t"
	else
		# the system that came up runs its rows alone; the other's are errors
		if [ "$cs_up" = 1 ]; then
			for_each_row run_corosync_row "corosync-$t"
		else
			row_error="corosync ($t) did not start"
			for_each_row error_row "corosync-$t"
		fi
		if [ "$cpgd_up" = 1 ]; then
			for_each_row run_libcpg_row cpg-rs-libcpg
		else
			row_error="cpgd or libcpg.so.4 did not come up (logs/cpgd.*)"
			for_each_row error_row cpg-rs-libcpg
		fi
	fi
	stop_cpgd
	if [ -n "$cs_pid" ]; then
		dir="${cs_dirs[${#cs_dirs[@]}-1]}"
		stop_corosync
		cp "$dir/corosync.log" "$out/logs/corosync-$t.log" 2>/dev/null || true
	fi
	do_corosync=0
	do_ours=0
fi

if [ "$do_ours" = 1 ]; then
	build_ours
	if [ -x "$cpgtool" ] && timeout 20 "$cpgtool" bench --help >/dev/null 2>&1; then
		for topo in $ours_topologies; do
			case "$topo" in
			nodes) log "cpg-rs (M nodes): running rows (${seconds}s each)"
				for_each_row run_ours_row cpg-rs ;;
			daemon) log "cpg-rs-cpgd (one cpgd, M clients): running rows (${seconds}s each)"
				for_each_row run_ours_row cpg-rs-cpgd ;;
			libcpg)
				if start_cpgd; then
					log "cpg-rs-libcpg (cpgload on our libcpg.so.4, one cpgd): running rows (${seconds}s each)"
					for_each_row run_libcpg_row cpg-rs-libcpg
					stop_cpgd
				else
					row_error="cpgd or libcpg.so.4 did not come up (logs/cpgd.*)"
					for_each_row error_row cpg-rs-libcpg
				fi ;;
			*) log "unknown --ours topology $topo" ;;
			esac
		done
	else
		echo "cpg-rs: cpgtool bench not available" >&2
		row_error="cpg-rs: cpgtool bench not available"
		for_each_row error_row cpg-rs
	fi
fi

# ---------------------------------------------------------------- report
if [ "$do_loopback" = 1 ]; then # a second sample of the ceiling (the report keeps the best)
	timeout 120 "$build/loopback_ceiling" --seconds "$seconds" >>"$results" 2>>"$out/logs/loopback.err" ||
		log "loopback_ceiling failed (logs/loopback.err)"
fi
meta_line end
report_args=()
[ "$ours_topologies" = daemon ] && report_args=(--ours-system cpg-rs-cpgd)
[ "$ours_topologies" = libcpg ] && report_args=(--ours-system cpg-rs-libcpg)
python3 "$here/report.py" "$results" "${report_args[@]+"${report_args[@]}"}" --svg "$out/chart.svg" \
	--json-out "$out/report.json" | tee "$out/report.txt"
log "results in $out"
