#!/bin/sh
# Runs each cmocka unit-test binary given as an argument, shows its output,
# and ends with exactly one summary line: "unit: N passed, M failed", N and
# M counting test cases. A binary that crashes, or exits non-zero without
# reporting failed tests (sanitizer report, leak, abort), counts as one
# failure. Exit status: 0 if nothing failed, 1 otherwise, 2 on usage error.
set -u

if [ $# -eq 0 ]; then
	echo "usage: $0 TEST-BINARY..." >&2
	exit 2
fi

# The counts below are parsed from cmocka's default format.
unset CMOCKA_MESSAGE_OUTPUT

passed=0
failed=0
out=$(mktemp "${TMPDIR:-/tmp}/postern-unit.XXXXXX") || exit 2
trap 'rm -f "$out"' EXIT INT TERM

for bin in "$@"; do
	"$bin" >"$out" 2>&1
	rc=$?
	cat "$out"
	p=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) test(s)\..*/\1/p' "$out" | head -n 1)
	f=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test(s).*/\1/p' "$out" | head -n 1)
	p=${p:-0}
	f=${f:-0}
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "unit: $bin exited with status $rc"
		f=1
	fi
	passed=$((passed + p))
	failed=$((failed + f))
done

echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
