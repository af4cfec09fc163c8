#!/bin/bash
# make check: the layer check of the include graph, unit and integration
# tests on the normal build, then both again on an AddressSanitizer + UBSan
# build, then a libFuzzer smoke run.
# Ends with one line "N passed, M failed" summing every stage.
set -u
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
log=$(mktemp -d "${TMPDIR:-/tmp}/postern-check.XXXXXX")
trap 'rm -rf "$log"' EXIT
passed=0 failed=0 stages_failed=()

stage() { # NAME COMMAND...: runs a stage, collects its "N passed, M failed" line
	local name=$1; shift
	echo "== $name"
	"$@" 2>&1 | tee "$log/$name.out"
	local rc=${PIPESTATUS[0]}
	local line
	line=$(grep -E '^[a-z-]*:? ?[0-9]+ passed, [0-9]+ failed' "$log/$name.out" | tail -n 1)
	if [[ -n $line ]]; then
		local p f
		p=$(sed -E 's/^[^0-9]*([0-9]+) passed.*/\1/' <<<"$line")
		f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
		passed=$((passed + p)) failed=$((failed + f))
	fi
	if ((rc != 0)); then
		stages_failed+=("$name")
		[[ -z $line ]] && failed=$((failed + 1))
	fi
}

stage layers make -s layers
stage build make -s -j"$jobs" all
stage unit make -s -j"$jobs" unit
stage integration make -s integration
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
stage asan-build make -s -j"$jobs" BUILD=build/asan SAN=1 all
stage asan-unit make -s -j"$jobs" BUILD=build/asan SAN=1 unit
stage asan-integration env POSTERN_ASAN=1 make -s BUILD=build/asan SAN=1 integration
stage fuzz-smoke make -s -j"$jobs" fuzz-smoke

echo
if ((${#stages_failed[@]})); then
	echo "failed stages: ${stages_failed[*]}"
fi
echo "$passed passed, $failed failed"
((${#stages_failed[@]} == 0 && failed == 0))
