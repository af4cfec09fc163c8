#!/usr/bin/env bash
# tests/bench/sni.sh POSTERN: `make bench-sni`, hosting many certificates.
#
# For each N of BENCH_SNI_N, N ECDSA P-256 and N RSA-2048 certificates (one
# name each, the RSA and the ECDSA one of a name alike, one shared
# intermediate; tests/bench/sni_gen.py, kept in build/bench/sni-certs/N),
# served by postern (cert_dir) and by HAProxy (a crt-list of the same
# files), each pinned to CPU 1, the load generator and the backend to CPU 0:
#   - the time of `postern -t` / `haproxy -c`, and from start to the first
#     served handshake;
#   - RSS once loaded, and per certificate (RSS minus the RSS with N = 1,
#     divided by the 2N certificates);
#   - full TLS 1.3 handshakes/s (64 in flight, ECDSA chosen by the client's
#     signature algorithms) with SNI = the first name, the last, a random
#     one for each connection, and a name no certificate has;
#   - after replacing one certificate file, the time from the reload signal
#     (postern SIGHUP; HAProxy -W master SIGUSR2) until the new certificate
#     is served.
# Prints the table and writes it to build/bench/sni-results.md.
#
# Environment: BENCH_SNI_N ["1 1000 10000 100000"], BENCH_SECONDS [3],
# BENCH_CONC [64], BENCH_OUT [build/bench], BENCH_PEERS ["haproxy"; "" for
# postern alone], BENCH_PEER_MAX_N [100000; the peers only up to this N:
# HAProxy needs ~7 ms of CPU per certificate to load, three times over],
# BENCH_KEEP [unset; 1: keep the temporary directory]. Every process started here is stopped by its pid at exit.
set -u

POSTERN=${1:?usage: sni.sh /abs/path/to/postern}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${BENCH_OUT:-$ROOT/build/bench}
NS=${BENCH_SNI_N:-1 1000 10000 100000}
SECS=${BENCH_SECONDS:-3}
CONC=${BENCH_CONC:-64}
PEERS=${BENCH_PEERS-haproxy}
PEER_MAX_N=${BENCH_PEER_MAX_N:-100000}
PY=/usr/bin/python3
PROXY_CPU=1
LOAD_CPU=0

STARTED=()
cleanup() {
	local p
	for p in "${STARTED[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${STARTED[@]}"; do wait "$p" 2>/dev/null; done
	[[ -n ${TMP:-} && -z ${BENCH_KEEP:-} ]] && rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
say() { printf 'bench-sni: %s\n' "$*" >&2; }
die() {
	say "$*"
	exit 1
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/postern-bench-sni.XXXXXX") || die "mktemp failed"
mkdir -p "$OUT/sni-certs" || die "cannot create $OUT"
BCFLAGS=(-std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror)
cc "${BCFLAGS[@]}" -o "$OUT/loadgen" "$HERE/loadgen.c" -lssl -lcrypto || die "building loadgen failed"
cc "${BCFLAGS[@]}" -o "$OUT/backend" "$HERE/backend.c" || die "building backend failed"

# Below the ephemeral range (32768-), where the load generator's own
# connections would take ports; no socket at all on the port, in any state.
NEXT_PORT=$((10000 + ($$ % 400) * 25))
port_free() { [[ -z $(ss -Htan "sport = :$1" 2>/dev/null) ]]; }
alloc_port() {
	while ! port_free "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
	REPLY=$NEXT_PORT
	NEXT_PORT=$((NEXT_PORT + 1))
}
start_pinned() { # cpu log cmd...: REPLY = pid
	local cpu=$1 log=$2
	shift 2
	(ulimit -n 20000 2>/dev/null; exec taskset -c "$cpu" "$@") >>"$log" 2>&1 </dev/null &
	REPLY=$!
	STARTED+=("$REPLY")
}
stop() { # pid
	kill "$1" 2>/dev/null
	wait "$1" 2>/dev/null
}
now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc -l | xargs printf '%.2f'; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# The SHA-256 of the leaf served for SNI $2 on port $1 ("" on failure).
served() {
	openssl s_client -connect "127.0.0.1:$1" -servername "$2" -sigalgs ECDSA+SHA256 </dev/null 2>/dev/null |
		openssl x509 -outform DER 2>/dev/null | sha256sum | cut -d' ' -f1 | grep -v '^e3b0c442'
}
fp_of() { openssl x509 -in "$1" -outform DER | sha256sum | cut -d' ' -f1; }
# Waits until port $1 serves a leaf (SNI $2) whose digest is $3, or any leaf
# with $3 empty; at most 600 s. Returns 1 if the process $4 exits first.
wait_served() {
	local i got
	for ((i = 0; i < 60000; i++)); do
		kill -0 "$4" 2>/dev/null || return 1
		got=$(served "$1" "$2")
		[[ -n $got && (-z $3 || $got == "$3") ]] && return 0
		sleep 0.01
	done
	return 1
}
# Full handshakes/s with SNI $2 (@FILE: a name of FILE at random) on port
# $1, and the CPU time the proxy $3 spent per handshake (µs): "RATE US".
rate() {
	"$OUT/loadgen" -m handshake -p "$1" -c "$CONC" -t "$SECS" -w 0.3 -V 1.3 -s "$2" -S "$3" 2>/dev/null |
		sed -n 's/^result .* rate=\([0-9.]*\) cpu=\([0-9.-]*\).*/\1 \2/p' |
		awk '{ printf "%.0f %.0f", $1, ($1 > 0 ? $2 / 100 * 1e6 / $1 : 0) }'
}

alloc_port
BACKEND_PORT=$REPLY
start_pinned "$LOAD_CPU" "$TMP/backend.log" "$OUT/backend" "$BACKEND_PORT"
sleep 0.3

# One changed certificate for the reload row: the first name, a new key.
$PY "$HERE/sni_gen.py" "$TMP/changed" 1 >/dev/null || die "sni_gen.py failed"

declare -A R=()
row() { # proxy n key value
	R[$1,$2,$3]=$4
	say "$1 N=$2 $3=$4"
}

measure() { # proxy n port pid dir
	local p=$1 n=$2 port=$3 pid=$4 dir=$5 names r
	names=$dir/names
	row "$p" "$n" rss_kb "$(rss_kb "$pid")"
	for k in first last random unknown; do
		case $k in
		first) r=$(rate "$port" "$(head -n 1 "$names")" "$pid") ;;
		last) r=$(rate "$port" "$(tail -n 1 "$names")" "$pid") ;;
		random) r=$(rate "$port" "@$names" "$pid") ;;
		unknown) r=$(rate "$port" unknown.bench.test "$pid") ;;
		esac
		row "$p" "$n" "$k" "${r% *}"
		row "$p" "$n" "${k}_us" "${r#* }"
	done
}

# Replaces the first ECDSA file by the changed one, sends $3 to $2 and
# times until port $1 serves it; puts the original back.
reload_row() { # proxy n port pid signal dir
	local p=$1 n=$2 port=$3 pid=$4 sig=$5 dir=$6 t0 want
	want=$(fp_of "$TMP/changed/e000000.pem")
	cp "$dir/e000000.pem" "$TMP/orig.pem"
	cp "$TMP/changed/e000000.pem" "$dir/.new.pem" && mv "$dir/.new.pem" "$dir/e000000.pem"
	t0=$(now)
	kill "-$sig" "$pid"
	if wait_served "$port" mail.c000000.bench.test "$want" "$pid"; then
		row "$p" "$n" reload_s "$(elapsed "$t0")"
	else
		row "$p" "$n" reload_s n/a
	fi
	cp "$TMP/orig.pem" "$dir/.new.pem" && mv "$dir/.new.pem" "$dir/e000000.pem"
}

bench_postern() { # n dir
	local n=$1 dir=$2 d=$TMP/postern-$1 port t0 pid
	mkdir -p "$d"
	alloc_port
	port=$REPLY
	cat >"$d/postern.ini" <<-EOF
		[global]
		log = $d/postern.log
		log_level = warn
		max_connections = 9000

		[hosting]
		protocol = raw
		listen = 127.0.0.1:$port
		backend = 127.0.0.1:$BACKEND_PORT
		cert_dir = $dir
	EOF
	t0=$(now)
	"$POSTERN" -t -c "$d/postern.ini" >/dev/null 2>"$d/check.err" || say "postern -t: $(head -n 2 "$d/check.err")"
	row postern "$n" check_s "$(elapsed "$t0")"
	t0=$(now)
	start_pinned "$PROXY_CPU" "$d/stderr" "$POSTERN" -c "$d/postern.ini"
	pid=$REPLY
	if ! wait_served "$port" "$(head -n 1 "$dir/names")" "" "$pid"; then
		say "postern did not start: $(tail -n 3 "$d/stderr" "$d/postern.log")"
		return
	fi
	row postern "$n" first_handshake_s "$(elapsed "$t0")"
	measure postern "$n" "$port" "$pid" "$dir"
	reload_row postern "$n" "$port" "$pid" HUP "$dir"
	stop "$pid"
}

bench_haproxy() { # n dir
	local n=$1 dir=$2 d=$TMP/haproxy-$1 port t0 pid bin
	bin=$(command -v haproxy || echo /usr/sbin/haproxy)
	[[ -x $bin ]] || { say "HAProxy not installed (packaging/deps.sh --bench)"; return; }
	mkdir -p "$d"
	alloc_port
	port=$REPLY
	find "$dir" -name '*.pem' ! -name '.*' | sort >"$d/crt-list"
	cat >"$d/haproxy.cfg" <<-EOF
		global
		    nbthread 1
		    maxconn 9000
		    stats socket $d/admin.sock mode 600 level admin

		defaults
		    mode tcp
		    timeout connect 10s
		    timeout client 30m
		    timeout server 30m

		frontend hosting
		    bind 127.0.0.1:$port ssl crt-list $d/crt-list
		    default_backend bench

		backend bench
		    server backend 127.0.0.1:$BACKEND_PORT
	EOF
	t0=$(now)
	"$bin" -c -q -f "$d/haproxy.cfg" >/dev/null 2>"$d/check.err" || say "haproxy -c: $(head -n 2 "$d/check.err")"
	row haproxy "$n" check_s "$(elapsed "$t0")"
	t0=$(now)
	start_pinned "$PROXY_CPU" "$d/stderr" "$bin" -W -db -f "$d/haproxy.cfg"
	pid=$REPLY
	if ! wait_served "$port" "$(head -n 1 "$dir/names")" "" "$pid"; then
		say "HAProxy did not start: $(tail -n 3 "$d/stderr")"
		return
	fi
	row haproxy "$n" first_handshake_s "$(elapsed "$t0")"
	# the worker's RSS (the master holds a copy of the configuration too)
	local w
	w=$(pgrep -P "$pid" | head -n 1)
	measure haproxy "$n" "$port" "${w:-$pid}" "$dir"
	reload_row haproxy "$n" "$port" "$pid" USR2 "$dir"
	stop "$pid"
}

for n in $NS; do
	dir=$OUT/sni-certs/$n
	if [[ ! -s $dir/names ]]; then
		say "generating 2 x $n certificates in ${dir#"$ROOT"/}"
		rm -rf "$dir"
		$PY "$HERE/sni_gen.py" "$dir" "$n" || die "sni_gen.py failed"
	fi
	bench_postern "$n" "$dir"
	((n <= PEER_MAX_N)) && for peer in $PEERS; do "bench_$peer" "$n" "$dir"; done
done

# ------------------------------------------------------------------ table
{
	echo "| proxy | N (x2 certs) | -t / -c s | start to 1st handshake s | RSS MB | KB per cert | hs/s (proxy CPU µs per hs): first name | last name | random name | unknown name | reload of 1 file s |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	first_n=${NS%% *}
	for p in postern $PEERS; do
		for n in $NS; do
			rss=${R[$p,$n,rss_kb]:-0}
			base=${R[$p,$first_n,rss_kb]:-0}
			per=n/a
			[[ $n != "$first_n" && $rss -gt 0 ]] && per=$(echo "($rss - $base) / (2 * $n)" | bc -l | xargs printf '%.1f')
			printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$p" "$n" \
				"${R[$p,$n,check_s]:-n/a}" "${R[$p,$n,first_handshake_s]:-n/a}" \
				"$(echo "$rss / 1024" | bc -l | xargs printf '%.0f')" "$per" \
				"${R[$p,$n,first]:-n/a} (${R[$p,$n,first_us]:-n/a})" \
				"${R[$p,$n,last]:-n/a} (${R[$p,$n,last_us]:-n/a})" \
				"${R[$p,$n,random]:-n/a} (${R[$p,$n,random_us]:-n/a})" \
				"${R[$p,$n,unknown]:-n/a} (${R[$p,$n,unknown_us]:-n/a})" "${R[$p,$n,reload_s]:-n/a}"
		done
	done
	echo
	echo "OpenSSL $(openssl version | cut -d' ' -f2), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')); $SECS s per rate, $CONC in flight, TLS 1.3."
} | tee "$OUT/sni-results.md"
