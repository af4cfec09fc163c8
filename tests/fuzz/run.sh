#!/bin/sh
# Runs libFuzzer harnesses: run.sh smoke N BIN... (N inputs each) or
# run.sh time N BIN... (N seconds each). Each harness starts from a copy of
# tests/fuzz/corpus/<harness name>/ (if any) in a temp dir, so the repository
# is never written. Ends with one line "fuzz: N passed, M failed"; a crash
# keeps its temp dir (log, corpus, crash input) and makes the exit status 1.
set -u

usage() {
	echo "usage: $0 smoke|time N HARNESS..." >&2
	exit 2
}

[ $# -ge 3 ] || usage
mode=$1
n=$2
shift 2
case $n in
'' | *[!0-9]*) usage ;;
esac
# The smoke run (make check) starts from a fixed seed; FUZZ_SEED changes
# it, and the timed runs (make fuzz) take a new one each time. libFuzzer's
# mutations still differ from run to run, so a harness with open findings
# may be named in FUZZ_SMOKE_REPLAY to only replay its corpus in the smoke
# run: those findings are hunted with make fuzz, not left to chance in CI.
# None is open today.
FUZZ_SMOKE_REPLAY=${FUZZ_SMOKE_REPLAY-}
case $mode in
smoke) limit="-runs=$n -seed=${FUZZ_SEED:-1}" ;;
time) limit="-max_total_time=$n" ;;
*) usage ;;
esac

here=$(cd "$(dirname "$0")" && pwd)

# UBSan findings are fatal, so that libFuzzer records them as crashes.
UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export UBSAN_OPTIONS
passed=0
failed=0

for bin in "$@"; do
	name=$(basename "$bin")
	work=$(mktemp -d "${TMPDIR:-/tmp}/postern-fuzz.$name.XXXXXX") || exit 2
	mkdir "$work/corpus" "$work/artifacts"
	if [ -d "$here/corpus/$name" ]; then
		cp -R "$here/corpus/$name/." "$work/corpus/"
	fi
	runs=$limit
	case " $FUZZ_SMOKE_REPLAY " in
	*" $name "*) [ "$mode" = smoke ] && runs="-runs=0" ;;
	esac
	# shellcheck disable=SC2086 # $runs is one or two options
	if "$bin" $runs -timeout=10 -artifact_prefix="$work/artifacts/" \
		"$work/corpus" >"$work/log" 2>&1; then
		done_line=$(grep '^Done ' "$work/log" | tail -n 1)
		echo "fuzz: $name ok (${done_line:-no stats})"
		passed=$((passed + 1))
		rm -rf "$work"
	else
		tail -n 60 "$work/log"
		echo "fuzz: $name FAILED; log, corpus and crash input kept in $work"
		failed=$((failed + 1))
	fi
done

echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
