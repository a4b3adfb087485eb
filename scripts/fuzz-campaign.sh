#!/usr/bin/env bash
# A fuzzing campaign: builds every cargo-fuzz target of the workspace and
# runs each in turn for SECONDS (and/or until --runs executions), then
# prints one summary line per target with libFuzzer's execution count.
#
#   scripts/fuzz-campaign.sh [--runs N] [--jobs N] [--workers N] SECONDS [TARGET...]
#
#   SECONDS       time limit per target (libFuzzer -max_total_time); 0 = none (needs --runs)
#   --runs N      stop a target after N executions (libFuzzer -runs), e.g. 10000000
#   --jobs N      libFuzzer -jobs (default 1: one fuzzer process, see below)
#   --workers N   libFuzzer -workers: jobs run at once (default 1)
#   TARGET        frame pack cpg token mcast join commit config engine (default: all)
#
# Defaults suit a shared 2-core machine: one fuzzer process at a time, under
# `nice -n 10` (NICE=0 to change), leaving a core to everyone else. On a
# machine of your own, --jobs 2 --workers 2 doubles the rate (each job's
# count is summed). Corpora grow in <crate>/fuzz/corpus/<target> (kept
# between campaigns, git-ignored); crashes land in
# <crate>/fuzz/artifacts/<target>/ and are listed in the summary. Logs:
# target/fuzz-campaign/<target>.log. Exit status 1 if any target crashed.
#
# Builds use `-s none`: every fuzzed crate is `#![forbid(unsafe_code)]`
# (cpg-core, cpg-sim; cpg-std's config path has none either), so
# AddressSanitizer finds nothing there and costs ~4x the speed;
# FUZZ_SANITIZER=address brings it back. Debug assertions and overflow
# checks stay on (cargo-fuzz's default). The engine target builds without
# `trace-compares`: its built and mutated modes already produce valid
# headers and live ring ids, and the comparison hooks took 40 % of its time.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

usage() { sed -n '4,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

runs="" jobs=1 workers=""
while [ $# -gt 0 ]; do
	case "$1" in
	--runs) runs=${2:?}; shift 2 ;;
	--jobs) jobs=${2:?}; shift 2 ;;
	--workers) workers=${2:?}; shift 2 ;;
	-h | --help) usage ;;
	--*) usage ;;
	*) break ;;
	esac
done
[ $# -ge 1 ] || usage
seconds=$1
shift
[[ "$seconds" =~ ^[0-9]+$ ]] || usage
[ "$seconds" -gt 0 ] || [ -n "$runs" ] || { echo "SECONDS 0 needs --runs" >&2; exit 2; }
workers=${workers:-1}
nice_level=${NICE:-10}
# An input running longer is a crash (timeout-… artifact): no input needs
# more than milliseconds, so seconds mean work that grows with a value
# from the input (CPU exhaustion).
timeout=${FUZZ_TIMEOUT:-5}
sanitizer=${FUZZ_SANITIZER:-none}

# target -> fuzz crate directory, extra build flags, extra libFuzzer flags
declare -A dir build extra
for t in frame pack cpg token mcast join commit seal_open ipc; do
	dir[$t]=cpg-core/fuzz build[$t]="" extra[$t]=""
done
dir[config]=cpg-std/fuzz build[config]="" extra[config]="-dict=config.dict"
dir[engine]=cpg-sim/fuzz build[engine]="--no-trace-compares" extra[engine]=""
all=(frame pack cpg token mcast join commit seal_open ipc config engine)

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
	[ -n "${dir[$t]:-}" ] || { echo "unknown target $t (known: ${all[*]})" >&2; exit 2; }
done

logs=$root/target/fuzz-campaign
mkdir -p "$logs"

echo "== build (${targets[*]})"
for t in "${targets[@]}"; do
	(cd "${dir[$t]}" && nice -n "$nice_level" cargo +nightly fuzz build -s "$sanitizer" ${build[$t]} "$t")
done

summary=()
crashed=0
for t in "${targets[@]}"; do
	d=${dir[$t]}
	mkdir -p "$d/corpus/$t"
	seeds=()
	[ -d "$d/seeds/$t" ] && seeds=("seeds/$t")
	limit=()
	[ "$seconds" -gt 0 ] && limit+=("-max_total_time=$seconds")
	[ -n "$runs" ] && limit+=("-runs=$runs")
	# -jobs=1 would still fork a child: pass them only to fork several.
	parallel=()
	[ "$jobs" -gt 1 ] && parallel+=("-jobs=$jobs" "-workers=$workers")
	log=$logs/$t.log
	# -jobs > 1 makes libFuzzer write one fuzz-<n>.log per job into the
	# working directory: run from a directory of this target's own.
	jobdir=$logs/$t.jobs
	rm -rf "$jobdir" && mkdir -p "$jobdir" "$d/artifacts/$t"
	before=$(ls "$d/artifacts/$t" | wc -l)
	echo "== $t (${limit[*]}, jobs $jobs, workers $workers, nice $nice_level)"
	start=$(date +%s)
	set +e
	(cd "$jobdir" && nice -n "$nice_level" cargo +nightly fuzz run --fuzz-dir "$root/$d" \
		-s "$sanitizer" ${build[$t]} "$t" "$root/$d/corpus/$t" "${seeds[@]/#/$root/$d/}" -- \
		"${limit[@]}" "${parallel[@]}" -print_final_stats=1 -timeout="$timeout" \
		${extra[$t]/#-dict=/-dict=$root/$d/}) >"$log" 2>&1
	status=$?
	set -e
	elapsed=$(($(date +%s) - start))
	# One stats block per process: the main one, or one per job.
	stat_files=("$log")
	compgen -G "$jobdir/fuzz-*.log" >/dev/null && stat_files=("$jobdir"/fuzz-*.log)
	execs=$(cat "${stat_files[@]}" | awk '/stat::number_of_executed_units/ {s += $2} END {print s + 0}')
	rate=$(cat "${stat_files[@]}" | awk '/stat::average_exec_per_sec/ {s += $2} END {print s + 0}')
	after=$(ls "$d/artifacts/$t" | wc -l)
	new_crashes=$((after - before))
	verdict=ok
	if [ "$status" -ne 0 ] || [ "$new_crashes" -gt 0 ]; then
		verdict="CRASH (exit $status, $new_crashes new in $d/artifacts/$t/, log $log)"
		crashed=1
	fi
	line=$(printf '%-7s %12s execs %9s exec/s %6ss  %s' "$t" "$execs" "$rate" "$elapsed" "$verdict")
	echo "$line"
	summary+=("$line")
done

echo
echo "== summary (stat::number_of_executed_units per target)"
printf '%s\n' "${summary[@]}"
exit "$crashed"
