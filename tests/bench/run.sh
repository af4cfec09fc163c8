#!/usr/bin/env bash
# tests/bench/run.sh POSTERN: the side-by-side benchmark behind `make bench`.
#
# Builds the load generator and the backend (build/bench/), generates an
# RSA-2048 and an ECDSA P-256 self-signed certificate, starts the backend,
# postern and its peers (stunnel, hitch, HAProxy, nginx with the stream and
# mail modules) on loopback ports, each proxy pinned to CPU 1 and the load
# generator and the backend to CPU 0, and measures every row for every proxy,
# repetitions interleaved (for each repetition, for each row, for each proxy,
# in an order that rotates). Prints progress on stderr, then the table of
# medians (min-max) and postern's ratio to the best peer on stdout, and
# writes it to build/bench/results.md, the ratios to build/bench/ratios.svg.
#
# Environment (defaults in brackets):
#   BENCH_SECONDS [2]     measured time per measurement
#   BENCH_LAT_SECONDS [2] measured time of the round-trip rows
#   BENCH_REPS [3]        repetitions
#   BENCH_WARMUP [0.2]    unmeasured warm-up before each measurement
#   BENCH_CONC [64]       connections at a time for the handshake rows
#   BENCH_BULK_CONNS [1]  connections of the bulk row
#   BENCH_IDLE [5000,9000] idle connection counts for the memory rows
#   BENCH_IDLE_RESUME [1] 1: open the idle connections with TLS 1.3 resumption
#                         after one full handshake (2x faster); 0: all full
#   BENCH_PEERS ["stunnel hitch haproxy nginx"]
#   BENCH_ROWS [all]      space-separated row keys to measure (see ROWS below)
#   BENCH_CPU_OK [90]     proxy CPU % (of what its core could give it) under
#                         which a cell is marked "*": not the bottleneck
#   BENCH_BUSY_MAX [15]   % of a core taken by other processes or the
#                         hypervisor from which a cell is marked "‡"
#   BENCH_SPEED_SECONDS [1] openssl speed -seconds
#   BENCH_OUT [build/bench] where results.md and ratios.svg go
#   BENCH_KEEP [0]        1: keep the temporary directory (configs, logs)
#   BENCH_BUDGET [540]    seconds: a repetition that would end past this
#                         (judged by the previous one) is not started
#
# Fails soft: a peer that does not start gets "n/a" cells and the reason;
# every process started here is stopped by its pid at exit.
set -u

POSTERN=${1:?usage: run.sh /abs/path/to/postern}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${BENCH_OUT:-$ROOT/build/bench}
SECS=${BENCH_SECONDS:-2}
REPS=${BENCH_REPS:-3}
LAT_SECS=${BENCH_LAT_SECONDS:-2}
WARMUP=${BENCH_WARMUP:-0.2}
CONC=${BENCH_CONC:-64}
BULK_CONNS=${BENCH_BULK_CONNS:-1}
IDLE=${BENCH_IDLE:-5000,9000}
IDLE_RESUME=${BENCH_IDLE_RESUME:-1}
PEERS=${BENCH_PEERS:-stunnel hitch haproxy nginx}
CPU_OK=${BENCH_CPU_OK:-90}
BUSY_MAX=${BENCH_BUSY_MAX:-15}
SPEED_SECS=${BENCH_SPEED_SECONDS:-1}
KEEP=${BENCH_KEEP:-0}
BUDGET=${BENCH_BUDGET:-540}

PROXY_CPU=1 # the proxy's core
LOAD_CPU=0  # the load generator's and the backend's core
PROXY_MASK=0x2

ALL_ROWS="hs13rsa hs12rsa hs13ec hs12ec res13 res12 stls bulk lat idle"
ROWS=${BENCH_ROWS:-$ALL_ROWS}

T_START=$(date +%s)
say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[[ -x $POSTERN ]] || die "no postern binary at $POSTERN (run make first)"
for t in cc openssl taskset timeout awk; do
	command -v "$t" >/dev/null 2>&1 || die "$t is missing (packaging/deps.sh --bench installs what is needed)"
done
[[ $(nproc) -ge 2 ]] || die "needs two CPUs (proxy on CPU $PROXY_CPU, load on CPU $LOAD_CPU); this machine has $(nproc)"
[[ $SECS =~ ^[0-9]+([.][0-9]+)?$ && $LAT_SECS =~ ^[0-9]+([.][0-9]+)?$ && $REPS =~ ^[1-9][0-9]*$ ]] ||
	die "BENCH_SECONDS, BENCH_LAT_SECONDS and BENCH_REPS must be numbers"

# ------------------------------------------------------------------ cleanup

TMP=""
declare -a STARTED=() # pids of every process started here

# Whether a pid runs (kill -0 also answers for a zombie, an unreaped child).
running() {
	local st
	st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ -n $st && ${st%% *} != Z ]]
}

# The children of a pid as "pid:starttime" (the start time tells a worker
# from a later process that got its pid), and whether such a one still runs.
kids_of() { # pid -> lines
	local k
	for k in $(pgrep -P "$1" 2>/dev/null); do
		echo "$k:$(sed 's/.*) //' "/proc/$k/stat" 2>/dev/null | cut -d' ' -f20)"
	done
}
kid_running() { # pid:starttime
	running "${1%%:*}" &&
		[[ $(sed 's/.*) //' "/proc/${1%%:*}/stat" 2>/dev/null | cut -d' ' -f20) == "${1#*:}" ]]
}
cleanup() {
	local pid i alive
	local -a kids=()
	# children of ours that are not ours to reap (nginx's and hitch's
	# workers): stopped by their pids too if they outlive their parent
	for pid in "${STARTED[@]}"; do
		# shellcheck disable=SC2207
		kids+=($(kids_of "$pid"))
	done
	for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
		kill -TERM "${STARTED[i]}" 2>/dev/null
	done
	for ((i = 0; i < 30; i++)); do
		alive=0
		for pid in "${STARTED[@]}"; do
			running "$pid" && alive=1
		done
		for pid in "${kids[@]}"; do
			kid_running "$pid" && alive=1
		done
		((alive)) || break
		sleep 0.1
	done
	for pid in "${STARTED[@]}"; do
		running "$pid" && kill -KILL "$pid" 2>/dev/null
	done
	for pid in "${kids[@]}"; do
		kid_running "$pid" && kill -KILL "${pid%%:*}" 2>/dev/null
	done
	wait 2>/dev/null
	if [[ -n $TMP && -d $TMP ]]; then
		if [[ $KEEP == 1 ]]; then
			say "kept $TMP"
		else
			rm -rf "$TMP"
		fi
	fi
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

TMP=$(mktemp -d "${TMPDIR:-/tmp}/postern-bench.XXXXXX") || die "mktemp failed"
chmod 0755 "$TMP"
mkdir -p "$OUT" "$TMP/res" "$TMP/logs" || die "cannot create $OUT"

# ------------------------------------------------------------------- build

say "building the load generator and the backend into ${OUT#"$ROOT"/}"
BCFLAGS=(-std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror)
cc "${BCFLAGS[@]}" -o "$OUT/loadgen" "$HERE/loadgen.c" -lssl -lcrypto || die "building loadgen failed"
cc "${BCFLAGS[@]}" -o "$OUT/backend" "$HERE/backend.c" || die "building backend failed"
LOADGEN=$OUT/loadgen

# ------------------------------------------------------------ certificates

say "generating an RSA-2048 and an ECDSA P-256 self-signed certificate"
gen_cert() { # name, then openssl req -newkey arguments
	local name=$1
	shift
	openssl req -x509 -nodes "$@" -keyout "$TMP/$name.key" -out "$TMP/$name.pem" -days 2 \
		-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null ||
		die "openssl req ($name) failed"
	cat "$TMP/$name.pem" "$TMP/$name.key" >"$TMP/$name-full.pem"
}
gen_cert rsa -newkey rsa:2048
gen_cert ec -newkey ec -pkeyopt ec_paramgen_curve:P-256
chmod 0644 "$TMP"/*.pem "$TMP"/*.key

# -------------------------------------------------------------------- ports

NEXT_PORT=$((20000 + ($$ % 400) * 25))
port_free() {
	if command -v ss >/dev/null 2>&1; then
		[[ -z $(ss -Hltn "sport = :$1" 2>/dev/null) ]]
	else
		! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
	fi
}
alloc_port() { # sets REPLY
	while ! port_free "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
	REPLY=$NEXT_PORT
	NEXT_PORT=$((NEXT_PORT + 1))
}
wait_listen() { # port pid seconds: 0 once something listens on port
	local port=$1 pid=$2 i n=$(($3 * 20))
	for ((i = 0; i < n; i++)); do
		running "$pid" || return 1
		port_free "$port" || return 0
		sleep 0.05
	done
	return 1
}

# Starts "$@" pinned to a CPU, output appended to a log; sets REPLY to its
# pid, and LAST_CMD to the whole command (quoted) to start it again.
start_pinned() { # cpu log cmd...
	local cpu=$1 log=$2
	shift 2
	(ulimit -n 20000 2>/dev/null; exec taskset -c "$cpu" "$@") >>"$log" 2>&1 </dev/null &
	REPLY=$!
	STARTED+=("$REPLY")
	LAST_CMD=$(printf '%q ' "$cpu" "$log" "$@")
}

# ------------------------------------------------------------------ backend

alloc_port
BACKEND_PORT=$REPLY
start_pinned "$LOAD_CPU" "$TMP/logs/backend.log" "$OUT/backend" "$BACKEND_PORT"
BACKEND_PID=$REPLY
wait_listen "$BACKEND_PORT" "$BACKEND_PID" 5 || die "the backend did not start: $(tail -n 3 "$TMP/logs/backend.log")"

# ------------------------------------------------------------------ proxies
#
# Every proxy gets an RSA listener, an ECDSA listener (same certificates),
# both leading to the backend; nginx also a mail listener with STARTTLS.

declare -A PID=() PORT_RSA=() PORT_EC=() PORT_STLS=() NA=() VERSION=() CMD=()
PROXIES=(postern)
for p in $PEERS; do PROXIES+=("$p"); done

STLS_PROBE=""
declare -A LABEL=([postern]=postern [stunnel]=stunnel [hitch]=hitch [haproxy]=HAProxy [nginx]=nginx)

start_postern() {
	local d=$TMP/postern stls=""
	mkdir -p "$d"
	VERSION[postern]=$("$POSTERN" -V 2>&1 | head -n 1)
	# STARTTLS: only if this postern accepts it (older builds did not).
	alloc_port
	local sp=$REPLY
	cat >"$d/probe.ini" <<-EOF
		[imap-starttls]
		protocol = imap
		tls = starttls
		listen = 127.0.0.1:$sp
		backend = 127.0.0.1:$BACKEND_PORT
		cert = $TMP/rsa.pem
		key = $TMP/rsa.key
	EOF
	if "$POSTERN" -t -c "$d/probe.ini" >"$d/probe.out" 2>&1; then
		stls=$(cat "$d/probe.ini")
		PORT_STLS[postern]=$sp
	else
		STLS_PROBE="postern -t rejects tls = starttls: $(grep -m1 -v '^\s*$' "$d/probe.out")"
	fi
	cat >"$d/postern.ini" <<-EOF
		[global]
		log = $d/postern.log
		log_level = warn
		max_connections = 10000

		[bench-rsa]
		protocol = raw
		listen = 127.0.0.1:${PORT_RSA[postern]}
		backend = 127.0.0.1:$BACKEND_PORT
		cert = $TMP/rsa.pem
		key = $TMP/rsa.key

		[bench-ecdsa]
		protocol = raw
		listen = 127.0.0.1:${PORT_EC[postern]}
		backend = 127.0.0.1:$BACKEND_PORT
		cert = $TMP/ec.pem
		key = $TMP/ec.key

		$stls
	EOF
	start_pinned "$PROXY_CPU" "$TMP/logs/postern.log" "$POSTERN" -c "$d/postern.ini"
}

start_stunnel() {
	local d=$TMP/stunnel bin
	bin=$(command -v stunnel4 || command -v stunnel) || { NA[stunnel]="not installed"; return 1; }
	mkdir -p "$d"
	VERSION[stunnel]=$("$bin" -version 2>&1 | grep -m1 -o 'stunnel [0-9.]*')
	# One process; stunnel's threading model (pthread in Debian's build) is a
	# thread per connection, which is how it runs.
	cat >"$d/stunnel.conf" <<-EOF
		foreground = yes
		pid =
		syslog = no
		debug = err
		output = $d/stunnel.log

		[bench-rsa]
		accept = 127.0.0.1:${PORT_RSA[stunnel]}
		connect = 127.0.0.1:$BACKEND_PORT
		cert = $TMP/rsa.pem
		key = $TMP/rsa.key

		[bench-ecdsa]
		accept = 127.0.0.1:${PORT_EC[stunnel]}
		connect = 127.0.0.1:$BACKEND_PORT
		cert = $TMP/ec.pem
		key = $TMP/ec.key
	EOF
	start_pinned "$PROXY_CPU" "$TMP/logs/stunnel.log" "$bin" "$d/stunnel.conf"
}

start_hitch() {
	local d=$TMP/hitch bin user=""
	bin=$(command -v hitch || { [[ -x /usr/sbin/hitch ]] && echo /usr/sbin/hitch; }) ||
		{ NA[hitch]="not installed"; return 1; }
	mkdir -p "$d/ocsp"
	VERSION[hitch]=$("$bin" --version 2>&1 | head -n 1)
	# As root hitch insists on a user to switch to.
	[[ $(id -u) == 0 ]] && user='user = "nobody"'
	cat >"$d/hitch.conf" <<-EOF
		frontend = {
		    host = "127.0.0.1"
		    port = "${PORT_RSA[hitch]}"
		    pem-file = "$TMP/rsa-full.pem"
		}
		frontend = {
		    host = "127.0.0.1"
		    port = "${PORT_EC[hitch]}"
		    pem-file = "$TMP/ec-full.pem"
		}
		backend = "[127.0.0.1]:$BACKEND_PORT"
		workers = 1
		daemon = off
		log-level = 1
		syslog = off
		ocsp-dir = "$d/ocsp"
		$user
	EOF
	start_pinned "$PROXY_CPU" "$TMP/logs/hitch.log" "$bin" --config="$d/hitch.conf"
}

start_haproxy() {
	local d=$TMP/haproxy bin
	bin=$(command -v haproxy || { [[ -x /usr/sbin/haproxy ]] && echo /usr/sbin/haproxy; }) ||
		{ NA[haproxy]="not installed"; return 1; }
	mkdir -p "$d"
	VERSION[haproxy]=$("$bin" -v 2>&1 | head -n 1 | grep -o 'version [^ ]*')
	VERSION[haproxy]="HAProxy ${VERSION[haproxy]#version }"
	cat >"$d/haproxy.cfg" <<-EOF
		global
		    nbthread 1
		    maxconn 9700
		    tune.ssl.default-dh-param 2048

		defaults
		    mode tcp
		    maxconn 9700
		    timeout connect 10s
		    timeout client 30m
		    timeout server 30m

		frontend bench-rsa
		    bind 127.0.0.1:${PORT_RSA[haproxy]} ssl crt $TMP/rsa-full.pem
		    default_backend bench

		frontend bench-ecdsa
		    bind 127.0.0.1:${PORT_EC[haproxy]} ssl crt $TMP/ec-full.pem
		    default_backend bench

		backend bench
		    server backend 127.0.0.1:$BACKEND_PORT
	EOF
	start_pinned "$PROXY_CPU" "$TMP/logs/haproxy.log" "$bin" -db -f "$d/haproxy.cfg"
}

start_nginx() {
	local d=$TMP/nginx bin m mods="" user=""
	bin=$(command -v nginx || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; }) ||
		{ NA[nginx]="not installed"; return 1; }
	mkdir -p "$d/logs"
	VERSION[nginx]=$("$bin" -v 2>&1 | sed 's/^nginx version: //')
	# Debian builds the stream and mail modules as dynamic modules.
	for m in stream mail; do
		local so=/usr/lib/nginx/modules/ngx_${m}_module.so
		if [[ -e $so ]]; then
			mods+="load_module $so;"$'\n'
		elif ! "$bin" -V 2>&1 | grep -q -- "--with-$m\b"; then
			NA[nginx]="nginx has no $m module (libnginx-mod-$m)"
			return 1
		fi
	done
	[[ $(id -u) == 0 ]] && user="user nobody nogroup;"
	cat >"$d/nginx.conf" <<-EOF
		$mods
		$user
		worker_processes 1;
		worker_rlimit_nofile 20000;
		daemon off;
		master_process on;
		pid $d/nginx.pid;
		error_log $d/logs/error.log error;

		events {
		    worker_connections 19500;
		}

		stream {
		    # nginx 1.22 leaves TLS 1.3 out of its default ssl_protocols.
		    ssl_protocols TLSv1.2 TLSv1.3;
		    ssl_session_tickets on;
		    server {
		        listen 127.0.0.1:${PORT_RSA[nginx]} ssl;
		        ssl_certificate $TMP/rsa.pem;
		        ssl_certificate_key $TMP/rsa.key;
		        proxy_pass 127.0.0.1:$BACKEND_PORT;
		    }
		    server {
		        listen 127.0.0.1:${PORT_EC[nginx]} ssl;
		        ssl_certificate $TMP/ec.pem;
		        ssl_certificate_key $TMP/ec.key;
		        proxy_pass 127.0.0.1:$BACKEND_PORT;
		    }
		}

		mail {
		    # Needed by the mail module, used only at login (never here).
		    auth_http 127.0.0.1:9/auth;
		    ssl_protocols TLSv1.2 TLSv1.3;
		    ssl_session_tickets on;
		    server {
		        listen 127.0.0.1:${PORT_STLS[nginx]};
		        protocol imap;
		        starttls only;
		        ssl_certificate $TMP/rsa.pem;
		        ssl_certificate_key $TMP/rsa.key;
		    }
		}
	EOF
	start_pinned "$PROXY_CPU" "$TMP/logs/nginx.log" "$bin" -p "$d/" -c "$d/nginx.conf" -e "$d/logs/error.log"
}

# The pids of a proxy: the one started and its children (nginx's and hitch's
# workers), whose CPU use and memory are what is measured.
proxy_pids() { # name -> REPLY "pid pid ..."
	local main=${PID[$1]} kids
	kids=$(pgrep -P "$main" 2>/dev/null | tr '\n' ' ')
	REPLY="$main${kids:+ $kids}"
	REPLY=${REPLY% }
}

# Pins every thread of the proxy to its core (hitch pins its worker to CPU 0
# by itself).
pin_proxy() {
	local p
	proxy_pids "$1"
	for p in $REPLY; do
		taskset -a -p "$PROXY_MASK" "$p" >/dev/null 2>&1
	done
}

# Waits until a proxy listens on all its ports, then pins it.
wait_proxy() { # name
	local port
	for port in "${PORT_RSA[$1]}" "${PORT_EC[$1]}" ${PORT_STLS[$1]:-}; do
		wait_listen "$port" "${PID[$1]}" 10 || return 1
	done
	sleep 0.2 # let workers fork
	pin_proxy "$1"
}

# Stops a proxy and starts it again with the same command line, so that
# memory is measured from a fresh process (allocators keep what they had).
restart_proxy() { # name
	local name=$1
	stop_pid "${PID[$name]}"
	# shellcheck disable=SC2086 # CMD holds a quoted command line
	eval "start_pinned ${CMD[$name]}"
	PID[$name]=$REPLY
	wait_proxy "$name"
}

rss_kib() { # pids... -> VmRSS sum in KiB
	local p sum=0 v
	for p in "$@"; do
		v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null)
		sum=$((sum + ${v:-0}))
	done
	echo "$sum"
}

alive() { running "${PID[$1]}"; }

# Stops a process started here and reaps it, so that its pid, which could
# then be reused, leaves the list the EXIT trap kills.
stop_pid() {
	local pid=$1 i k
	local -a kids
	mapfile -t kids < <(kids_of "$pid")
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 30; i++)); do
		running "$pid" || break
		sleep 0.1
	done
	running "$pid" && kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	for k in "${kids[@]}"; do # workers that outlive their parent
		for ((i = 0; i < 30; i++)); do
			kid_running "$k" || break
			sleep 0.1
		done
		kid_running "$k" && kill -KILL "${k%%:*}" 2>/dev/null
	done
	for i in "${!STARTED[@]}"; do
		[[ ${STARTED[i]} == "$pid" ]] && unset "STARTED[i]"
	done
	STARTED=("${STARTED[@]}")
}

for name in "${PROXIES[@]}"; do
	alloc_port
	PORT_RSA[$name]=$REPLY
	alloc_port
	PORT_EC[$name]=$REPLY
	[[ $name == nginx ]] && { alloc_port; PORT_STLS[nginx]=$REPLY; }
	if ! declare -F "start_$name" >/dev/null; then
		NA[$name]="unknown peer"
		continue
	fi
	"start_$name" || continue
	PID[$name]=$REPLY
	CMD[$name]=$LAST_CMD
	if ! wait_proxy "$name"; then
		reason=$(grep -v '^\s*$' "$TMP/logs/$name.log" "$TMP/$name"/*.log "$TMP/$name"/logs/*.log 2>/dev/null |
			tail -n 3 | sed 's/^[^:]*://' | tr '\n' ' ')
		alive "$name" || reason="exited: $reason"
		NA[$name]="did not start: ${reason:-no message}"
		stop_pid "${PID[$name]}"
		unset "PID[$name]"
		continue
	fi
	# Smoke test: a handshake and the greeting through both listeners.
	for port in "${PORT_RSA[$name]}" "${PORT_EC[$name]}"; do
		if ! out=$(timeout -k 1 10 taskset -c "$LOAD_CPU" "$LOADGEN" -m handshake -p "$port" -c 1 -t 0.2 -w 0 2>&1); then
			NA[$name]="smoke test failed on port $port: $(echo "$out" | tail -n 1)"
			break
		fi
	done
	if [[ -n ${NA[$name]:-} ]]; then
		stop_pid "${PID[$name]}"
		unset "PID[$name]"
		continue
	fi
	say "started ${VERSION[$name]:-$name} (pid $(proxy_pids "$name"; echo "$REPLY"), ports ${PORT_RSA[$name]} ${PORT_EC[$name]}${PORT_STLS[$name]:+ ${PORT_STLS[$name]}})"
done
for name in "${PROXIES[@]}"; do
	[[ -n ${NA[$name]:-} ]] && say "$name: n/a: ${NA[$name]}"
done

# ----------------------------------------------------------- openssl speed

say "openssl speed on CPU $PROXY_CPU (-seconds $SPEED_SECS)"
SPEED_RSA=$(taskset -c "$PROXY_CPU" openssl speed -seconds "$SPEED_SECS" rsa2048 2>/dev/null |
	awk '/^rsa 2048 bits/ {print $6; exit}')
SPEED_EC=$(taskset -c "$PROXY_CPU" openssl speed -seconds "$SPEED_SECS" ecdsap256 2>/dev/null |
	awk '/ecdsa \(nistp256\)/ {print $7; exit}')
SPEED_AES=$(taskset -c "$PROXY_CPU" openssl speed -seconds "$SPEED_SECS" -bytes 16384 -evp aes-128-gcm 2>/dev/null |
	awk '/^(AES-128-GCM|aes-128-gcm)/ {v=$NF; sub(/k$/, "", v); printf "%.0f", v * 1000 / 1e6; exit}')
say "  rsa2048 sign/s ${SPEED_RSA:-?}, ecdsap256 sign/s ${SPEED_EC:-?}, aes-128-gcm 16 KiB ${SPEED_AES:-?} MB/s"

# ------------------------------------------------------------- measurement

# Row keys, labels, and whether higher is better. lat and idle give two rows.
declare -A ROW_LABEL=(
	[hs13rsa]="full handshakes/s, TLS 1.3, RSA-2048"
	[hs12rsa]="full handshakes/s, TLS 1.2, RSA-2048"
	[hs13ec]="full handshakes/s, TLS 1.3, ECDSA P-256"
	[hs12ec]="full handshakes/s, TLS 1.2, ECDSA P-256"
	[res13]="resumed handshakes/s, TLS 1.3 tickets"
	[res12]="resumed handshakes/s, TLS 1.2 tickets"
	[stls]="IMAP STARTTLS handshakes/s"
	[bulk]="bulk MB/s server→client, AES-128-GCM"
	[lat50]="round trip p50, µs (lower is better)"
	[lat99]="round trip p99, µs (lower is better)"
)
OUT_ROWS=()
for r in $ROWS; do
	case $r in
	lat) OUT_ROWS+=(lat50 lat99) ;;
	idle)
		IFS=, read -r -a idle_counts <<<"$IDLE"
		for n in "${idle_counts[@]}"; do
			OUT_ROWS+=("idle$n")
			ROW_LABEL[idle$n]="RSS per idle TLS connection at $n, KiB (lower is better)"
		done
		;;
	*)
		[[ -n ${ROW_LABEL[$r]:-} ]] || die "unknown row $r (rows: $ALL_ROWS)"
		OUT_ROWS+=("$r")
		;;
	esac
done
lower_is_better() { [[ $1 == lat* || $1 == idle* ]]; }

kv() { # key line -> value
	local k=$1 l=" $2 "
	l=${l#* "$k"=}
	[[ $l == " $2 " ]] && return 1
	echo "${l%% *}"
}

NOTES=$TMP/notes
: >"$NOTES"

# Records one value: row name value [proxy-cpu [saturation [extra [busy]]]]
# (see load_stats); "-1" or "-" when not applicable. The repetition's
# number ends the line, for the paired ratios.
record() { echo "$3 ${4:--1} ${5:--1} ${6:--} ${7:--1} ${rep:-0}" >>"$TMP/res/$1.$2"; }

# Runs the load generator against a proxy; prints its result line.
run_loadgen() { # name logfile seconds args...
	local name=$1 log=$2 secs=$3 pids
	shift 3
	pin_proxy "$name"
	proxy_pids "$name"
	pids=${REPLY// /,}
	timeout -k 2 "$(awk -v s="$secs" -v w="$WARMUP" 'BEGIN {print int(s + w + 30)}')" \
		taskset -c "$LOAD_CPU" "$LOADGEN" -t "$secs" -w "$WARMUP" -S "$pids" -B "$BACKEND_PID" "$@" >"$log" 2>&1
	grep -m1 '^result ' "$log"
}

fmt_num() { # adaptive precision
	awk -v v="$1" 'BEGIN { if (v == "") print "?"; else if (v >= 100 || v <= -100) printf "%.0f", v; else if (v >= 10 || v <= -10) printf "%.1f", v; else printf "%.2f", v }'
}

# From a result line's CPU figures (all in % of one core over the measured
# window), sets
#   SAT   the proxy's CPU use as a share of the time its core could have given
#         it, i.e. not idle, not taken by the hypervisor (steal) nor by other
#         processes: cpu / (cpu + idle of its core). Below BENCH_CPU_OK, the
#         proxy was not the bottleneck.
#   BUSY  the most that others took of either core: the hypervisor (steal)
#         plus processes other than the proxy, the load generator and the
#         backend (and interrupt work not charged to them). From
#         BENCH_BUSY_MAX up, the figure is depressed by a shared machine.
#   LOADTXT a summary for the progress line.
load_stats() {
	local l=$1 c i0 i1 s0 s1 self be
	c=$(kv cpu "$l") self=$(kv selfcpu "$l") be=$(kv backendcpu "$l")
	i0=$(kv "idle$LOAD_CPU" "$l") i1=$(kv "idle$PROXY_CPU" "$l")
	s0=$(kv "steal$LOAD_CPU" "$l") s1=$(kv "steal$PROXY_CPU" "$l")
	read -r SAT BUSY LOADTXT < <(awk -v c="${c:--1}" -v self="${self:-0}" -v be="${be:-0}" \
		-v i0="${i0:-0}" -v i1="${i1:-0}" -v s0="${s0:-0}" -v s1="${s1:-0}" 'BEGIN {
		if (be < 0) be = 0
		sat = (c >= 0 && c + i1 > 0) ? c * 100 / (c + i1) : -1
		o1 = 100 - i1 - s1 - c; if (o1 < 0) o1 = 0
		o0 = 100 - i0 - s0 - self - be; if (o0 < 0) o0 = 0
		b1 = o1 + s1; b0 = o0 + s0
		printf "%.1f %.1f proxy %.0f%%, idle %.0f%%, others %.0f%% | load gen %.0f%% + backend %.0f%%, idle %.0f%%, others %.0f%%\n",
			sat, (b0 > b1 ? b0 : b1), c, i1, b1, self, be, i0, b0
	}')
}

measure() { # rep row name
	local rep=$1 row=$2 name=$3 line v cpu err log extra="" secs=$SECS
	log=$TMP/logs/$row.$name.$rep
	local -a args=()
	case $row in
	hs13rsa) args=(-m handshake -V 1.3 -c "$CONC" -p "${PORT_RSA[$name]}") ;;
	hs12rsa) args=(-m handshake -V 1.2 -c "$CONC" -p "${PORT_RSA[$name]}") ;;
	hs13ec) args=(-m handshake -V 1.3 -c "$CONC" -p "${PORT_EC[$name]}") ;;
	hs12ec) args=(-m handshake -V 1.2 -c "$CONC" -p "${PORT_EC[$name]}") ;;
	res13) args=(-m resume -V 1.3 -c "$CONC" -p "${PORT_RSA[$name]}") ;;
	res12) args=(-m resume -V 1.2 -c "$CONC" -p "${PORT_RSA[$name]}") ;;
	stls) args=(-m starttls-imap -c "$CONC" -p "${PORT_STLS[$name]}") ;;
	bulk) args=(-m bulk -V 1.3 -c "$BULK_CONNS" -p "${PORT_RSA[$name]}") ;;
	lat)
		args=(-m latency -V 1.3 -p "${PORT_RSA[$name]}")
		secs=$LAT_SECS
		;;
	esac
	line=$(run_loadgen "$name" "$log" "$secs" "${args[@]}")
	if [[ -z $line ]]; then
		err=$(grep -v '^result' "$log" | tail -n 1)
		echo "$name, $row, repetition $rep: no result (${err:-timed out})" >>"$NOTES"
		printf '  %-8s failed: %s\n' "$name" "${err:-timed out}" >&2
		return
	fi
	cpu=$(kv cpu "$line")
	err=$(kv errors "$line")
	if [[ ${err:-0} != 0 ]]; then
		echo "$name, $row, repetition $rep: $err errors ($(grep -m1 'first:' "$log" | sed 's/.*first: //'))" >>"$NOTES"
	fi
	load_stats "$line"
	case $row in
	lat)
		record lat50 "$name" "$(kv p50 "$line")" "$cpu" -1 - "$BUSY"
		record lat99 "$name" "$(kv p99 "$line")" "$cpu" -1 - "$BUSY"
		printf '  %-8s p50 %6s µs  p99 %6s µs   [%s]\n' "$name" "$(fmt_num "$(kv p50 "$line")")" \
			"$(fmt_num "$(kv p99 "$line")")" "$LOADTXT" >&2
		return
		;;
	res*) extra=$(kv resumed "$line") ;;
	esac
	v=$(kv rate "$line")
	record "$row" "$name" "$v" "$cpu" "$SAT" "${extra:--}" "$BUSY"
	printf '  %-8s %6s %-4s [%s]%s%s\n' "$name" "$(fmt_num "$v")" \
		"$([[ $row == bulk ]] && echo MB/s || echo /s)" "$LOADTXT" \
		"${extra:+  resumed $extra}" "$( [[ ${err:-0} != 0 ]] && echo "  errors $err")" >&2
	# the first repetition's negotiated parameters, for the notes
	if [[ $rep == 1 && $name == postern ]]; then
		echo "$row: $(echo "$line" | grep -o 'proto=.*')" >>"$TMP/negotiated"
	fi
}

measure_direct_latency() { # rep
	local log=$TMP/logs/lat.direct.$1 line
	line=$(timeout -k 2 "$(awk -v s="$LAT_SECS" 'BEGIN {print int(s + 30)}')" taskset -c "$LOAD_CPU" \
		"$LOADGEN" -m latency -P -p "$BACKEND_PORT" -t "$LAT_SECS" -w "$WARMUP" 2>&1 | tee "$log" | grep -m1 '^result ')
	[[ -n $line ]] || { echo "direct latency, repetition $1: no result" >>"$NOTES"; return; }
	record lat50 direct "$(kv p50 "$line")"
	record lat99 direct "$(kv p99 "$line")"
	printf '  %-8s p50 %6s µs  p99 %6s µs\n' direct "$(fmt_num "$(kv p50 "$line")")" "$(fmt_num "$(kv p99 "$line")")" >&2
}

measure_idle() { # rep name
	local rep=$1 name=$2
	local log=$TMP/logs/idle.$name.$rep lg before after n k=0 i line est v
	local -a counts
	local t0=$SECONDS t1=0
	IFS=, read -r -a counts <<<"$IDLE"
	if ! restart_proxy "$name"; then
		echo "$name, idle, repetition $rep: did not start again for the memory measurement" >>"$NOTES"
		printf '  %-8s did not start again\n' "$name" >&2
		return
	fi
	proxy_pids "$name"
	# shellcheck disable=SC2086
	before=$(rss_kib $REPLY)
	: >"$log"
	local -a r=()
	[[ $IDLE_RESUME == 1 ]] && r=(-r)
	(exec taskset -c "$LOAD_CPU" "$LOADGEN" -m idle "${r[@]}" -V 1.3 -p "${PORT_EC[$name]}" -n "$IDLE" -t 60 -T 60) \
		>"$log" 2>&1 </dev/null &
	lg=$!
	STARTED+=("$lg")
	local msg=""
	for n in "${counts[@]}"; do
		k=$((k + 1))
		for ((i = 0; i < 1200; i++)); do # 120 s at most
			(($(grep -c '^ready' "$log") >= k)) && break
			running "$lg" || break
			sleep 0.1
		done
		line=$(grep '^ready' "$log" | sed -n "${k}p")
		if [[ -z $line ]]; then
			echo "$name, idle, repetition $rep: the load generator did not reach $n connections ($(tail -n 1 "$log"))" >>"$NOTES"
			break
		fi
		sleep 0.3 # let the proxy settle
		proxy_pids "$name"
		# shellcheck disable=SC2086
		after=$(rss_kib $REPLY)
		est=$(echo "$line" | awk '{print $2}')
		if [[ $line == *partial* || ${est:-0} -lt $n ]]; then
			echo "$name, idle, repetition $rep: only $est of $n connections held ($line)" >>"$NOTES"
		fi
		if ((${est:-0} > 0)); then
			v=$(awk -v a="$after" -v b="$before" -v n="$est" 'BEGIN {printf "%.2f", (a - b) / n}')
			record "idle$n" "$name" "$v" -1
			msg+="  $n: $(fmt_num "$v") KiB/conn (RSS $((before / 1024)) → $((after / 1024)) MiB)"
		fi
		kill -USR1 "$lg" 2>/dev/null
	done
	t1=$SECONDS
	for ((i = 0; i < 300; i++)); do
		running "$lg" || break
		sleep 0.1
	done
	stop_pid "$lg"
	printf '  %-8s%s  (%d s + %d s to close)\n' "$name" "${msg:- failed}" $((t1 - t0)) $((SECONDS - t1)) >&2
	alive "$name" || echo "$name died during the idle measurement" >>"$NOTES"
	sleep 0.5 # let closed connections drain
}

row_applies() { # row name
	case $1 in
	stls) [[ -n ${PORT_STLS[$2]:-} ]] ;;
	*) return 0 ;;
	esac
}

declare -A ROW_TITLE=([lat]="round trip latency, TLS 1.3" [idle]="idle TLS connections, memory ($IDLE)")
n_proxies=${#PROXIES[@]}
REPS_DONE=0
rep_start=$SECONDS
for ((rep = 1; rep <= REPS; rep++)); do
	# Stay within the time budget: skip a repetition that would not fit.
	if ((rep > 1)); then
		last=$((SECONDS - rep_start))
		if ((SECONDS + last + last / 20 > BUDGET)); then
			echo "only $REPS_DONE of $REPS repetitions: another one (~${last} s) would have passed the time budget of ${BUDGET} s (BENCH_BUDGET)" >>"$NOTES"
			say "stopping after $REPS_DONE repetitions: the time budget of ${BUDGET} s (BENCH_BUDGET) would be passed"
			break
		fi
	fi
	rep_start=$SECONDS
	ri=0
	for row in $ROWS; do
		ri=$((ri + 1))
		say "[$rep/$REPS] ${ROW_TITLE[$row]:-${ROW_LABEL[$row]}} (at $(($(date +%s) - T_START)) s)"
		# rotate the order of the proxies by repetition and row
		for ((j = 0; j < n_proxies; j++)); do
			name=${PROXIES[$(((j + rep + ri) % n_proxies))]}
			[[ -n ${PID[$name]:-} ]] || continue
			if ! alive "$name"; then
				[[ -n ${NA[$name]:-} ]] || NA[$name]="died during the run (see notes)"
				echo "$name is no longer running (before $row, repetition $rep)" >>"$NOTES"
				unset "PID[$name]"
				continue
			fi
			row_applies "$row" "$name" || continue
			case $row in
			idle) measure_idle "$rep" "$name" ;;
			*) measure "$rep" "$row" "$name" ;;
			esac
		done
		[[ $row == lat ]] && measure_direct_latency "$rep"
	done
	REPS_DONE=$rep
done

for name in "${PROXIES[@]}"; do
	if [[ -n ${PID[$name]:-} ]] && ! alive "$name"; then
		echo "$name exited before the end of the run; its log: $(tail -n 2 "$TMP/logs/$name.log" | tr '\n' ' ')" >>"$NOTES"
	fi
done
# postern's own warnings and errors, most frequent first (without timestamps)
if [[ -f $TMP/postern/postern.log ]]; then
	grep -E '^[^ ]+ (error|warn) ' "$TMP/postern/postern.log" | cut -d' ' -f2- |
		sed -E 's/#[0-9a-f]+ [0-9.:]+ /#… /' | grep -v 'running as root\|descriptor limit' |
		sort | uniq -c | sort -rn | head -n 5 | sed -E 's/^ *([0-9]+) /postern log (\1×): /' >>"$NOTES"
fi

# ------------------------------------------------------------------- table

# stats file -> "median min max cpu_median saturation_median extra_median busy_median count"
stats() {
	[[ -s $1 ]] || return 1
	awk '
		{ v[NR] = $1; c[NR] = $2; sat[NR] = $3; e[NR] = $4; b[NR] = $5 }
		function med(a, n,   i, j, t, b) {
			for (i = 1; i <= n; i++) b[i] = a[i]
			for (i = 2; i <= n; i++) { t = b[i]; for (j = i - 1; j >= 1 && b[j] > t; j--) b[j + 1] = b[j]; b[j + 1] = t }
			return (n % 2) ? b[(n + 1) / 2] : (b[n / 2] + b[n / 2 + 1]) / 2
		}
		END {
			n = NR; mn = v[1]; mx = v[1]
			for (i = 2; i <= n; i++) { if (v[i] < mn) mn = v[i]; if (v[i] > mx) mx = v[i] }
			ex = (e[1] == "-") ? "-" : med(e, n)
			printf "%s %s %s %s %s %s %s %d\n", med(v, n), mn, mx, med(c, n), med(sat, n), ex, med(b, n), n
		}' "$1"
}

# postern against one peer on a row: the median, over the runs in which both
# were measured, of postern's figure divided by the peer's in the same run
# ("cpu": per second of proxy CPU). The machine's capacity drifts by tens of
# percent over minutes, much less between neighbouring measurements of one
# run, so pairing leaves far less noise in the ratio than dividing medians.
paired_ratio() { # row peer [cpu]
	local p=$TMP/res/$1.postern q=$TMP/res/$1.$2
	[[ -s $p && -s $q ]] || return 1
	awk -v percpu="${3:-}" '
		function val(v, c) { return percpu != "" ? (c > 0 ? v / c : -1) : v }
		NR == FNR { if (NF >= 6) a[$6] = val($1, $2); next }
		NF >= 6 && ($6 in a) && a[$6] > 0 { x = val($1, $2); if (x > 0) r[++n] = a[$6] / x }
		END {
			if (n == 0) exit 1
			for (i = 2; i <= n; i++) { t = r[i]; for (j = i - 1; j >= 1 && r[j] > t; j--) r[j + 1] = r[j]; r[j + 1] = t }
			printf "%.2f", (n % 2) ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
		}' "$p" "$q"
}

# The ratio against the toughest peer: the lowest paired ratio in the
# throughput rows, the highest in the rows where lower is better. Sets
# REPLY, or fails when no peer was measured with postern.
ratio_vs_best() { # row [cpu]
	local name r best=""
	for name in "${COLS[@]}"; do
		[[ $name == postern ]] && continue
		r=$(paired_ratio "$1" "$name" "${2:-}") || continue
		if [[ -z $best ]] || { lower_is_better "$1" && awk -v a="$r" -v b="$best" 'BEGIN {exit !(a > b)}'; } ||
			{ ! lower_is_better "$1" && awk -v a="$r" -v b="$best" 'BEGIN {exit !(a < b)}'; }; then
			best=$r
		fi
	done
	[[ -n $best ]] || return 1
	REPLY=$best
}

COLS=("${PROXIES[@]}")
has_direct=0
[[ " ${OUT_ROWS[*]} " == *" lat50 "* ]] && has_direct=1
MD=$TMP/results.md
CHART=$TMP/ratios.dat
: >"$CHART"
star=0 dagger=0 ddagger=0

{
	echo "### postern beside its peers"
	echo
	printf '| measurement |'
	for name in "${COLS[@]}"; do printf ' %s |' "${LABEL[$name]:-$name}"; done
	((has_direct)) && printf ' no proxy |'
	printf ' postern ÷ best peer |\n'
	printf '|---|'
	for _ in "${COLS[@]}"; do printf -- '---:|'; done
	((has_direct)) && printf -- '---:|'
	printf -- '---:|\n'
	for row in "${OUT_ROWS[@]}"; do
		printf '| %s |' "${ROW_LABEL[$row]}"
		for name in "${COLS[@]}"; do
			f=$TMP/res/$row.$name
			if s=$(stats "$f"); then
				read -r med mn mx cpu sat ex busy cnt <<<"$s"
				cell="$(fmt_num "$med") ($(fmt_num "$mn")–$(fmt_num "$mx"))"
				if [[ $row != lat* && $row != idle* ]] &&
					awk -v c="$sat" -v ok="$CPU_OK" 'BEGIN {exit !(c >= 0 && c < ok)}'; then
					cell+=" \*"
					star=1
				fi
				if [[ $ex != - ]] && awk -v e="$ex" 'BEGIN {exit !(e < 0.95)}'; then
					cell+=" † $(awk -v e="$ex" 'BEGIN {printf "%.0f", e * 100}')% resumed"
					dagger=1
				fi
				if [[ $row != idle* ]] && awk -v b="$busy" -v m="$BUSY_MAX" 'BEGIN {exit !(b >= m)}'; then
					cell+=" ‡"
					ddagger=1
				fi
				((cnt < REPS_DONE)) && cell+=" ($cnt of $REPS_DONE runs)"
				printf ' %s |' "$cell"
			elif [[ $row == stls && $name == postern && -z ${PORT_STLS[postern]:-} && -z ${NA[postern]:-} ]]; then
				printf ' n/a (not supported yet) |'
			elif [[ $row == stls && $name != postern && $name != nginx ]]; then
				printf ' — |'
			else
				printf ' n/a |'
			fi
		done
		if ((has_direct)); then
			if [[ $row == lat* ]] && s=$(stats "$TMP/res/$row.direct"); then
				read -r med mn mx _ _ _ _ <<<"$s"
				printf ' %s (%s–%s) |' "$(fmt_num "$med")" "$(fmt_num "$mn")" "$(fmt_num "$mx")"
			else
				printf ' |'
			fi
		fi
		if ratio_vs_best "$row"; then
			ratio=$REPLY
			printf ' %s |\n' "$ratio"
			# label, ratio, 1 when the ratio favours postern
			printf '"%s" %s %d\n' "${ROW_LABEL[$row]}" "$ratio" \
				"$(if lower_is_better "$row"; then awk -v r="$ratio" 'BEGIN {print (r <= 1)}'; else awk -v r="$ratio" 'BEGIN {print (r >= 1)}'; fi)" >>"$CHART"
		else
			printf ' n/a |\n'
		fi
	done
	echo
	echo "Median of $REPS_DONE runs of ${SECS} s each (round trips ${LAT_SECS} s; after ${WARMUP} s of warm-up), (min–max) across runs."
	echo "Runs interleaved: each repetition measures every row for every proxy in turn (order rotating), so that drift"
	echo "and other load on the shared machine spread over all proxies alike."
	echo "Ratios are paired: for each peer, the median over the runs of postern's figure divided by that peer's in the"
	echo "same run (neighbouring measurements, so that the machine's drift between runs cancels), and of those the one"
	echo "least favourable to postern. Above 1 is better for postern in the throughput rows, below 1 in the rows marked"
	echo "\"lower is better\"."
	((star)) && echo "\\* the proxy was not the bottleneck: its CPU use (utime+stime from /proc/PID/stat over the measured window, as a share of what the hypervisor left of its core, median of the runs) was below ${CPU_OK} %; the load generator's core was the limit, so the figure understates the proxy: compare the per-CPU-second table below."
	((dagger)) && echo "† fewer than 95 % of the handshakes were resumptions: not a resumption rate."
	((ddagger)) && echo "‡ a shared machine: in the median run, other processes and the hypervisor (steal) took ${BUSY_MAX} % or more of one of the two cores; the figure is lower than on a quiet machine (and so is every figure measured at the same time)." 
	echo
	# Proxy CPU use and per-CPU-second rates for the throughput rows.
	echo "Proxy CPU use (median, % of one core) and throughput per second of proxy CPU (median rate ÷ CPU use; ratios paired as above):"
	echo
	printf '| measurement |'
	for name in "${COLS[@]}"; do printf ' %s |' "${LABEL[$name]:-$name}"; done
	printf ' postern ÷ best peer |\n|---|'
	for _ in "${COLS[@]}"; do printf -- '---:|'; done
	printf -- '---:|\n'
	for row in "${OUT_ROWS[@]}"; do
		[[ $row == lat* || $row == idle* ]] && continue
		printf '| %s |' "${ROW_LABEL[$row]}"
		for name in "${COLS[@]}"; do
			if s=$(stats "$TMP/res/$row.$name"); then
				read -r med _ _ cpu _ _ _ <<<"$s"
				if awk -v c="$cpu" 'BEGIN {exit !(c > 0)}'; then
					pc=$(awk -v m="$med" -v c="$cpu" 'BEGIN {printf "%.1f", m / (c / 100)}')
					printf ' %s %% → %s |' "$(fmt_num "$cpu")" "$(fmt_num "$pc")"
				else
					printf ' ? |'
				fi
			else
				printf ' n/a |'
			fi
		done
		if ratio_vs_best "$row" cpu; then
			printf ' %s |\n' "$REPLY"
		else
			printf ' n/a |\n'
		fi
	done
	echo
	echo "Limits of the proxy's core in the same run (\`openssl speed -seconds $SPEED_SECS\`, one core):"
	echo "RSA-2048 sign ${SPEED_RSA:-?}/s, ECDSA P-256 sign ${SPEED_EC:-?}/s, AES-128-GCM ${SPEED_AES:-?} MB/s (16 KiB blocks)."
	echo
	echo "Setup: $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(openssl version | cut -d' ' -f1-2);"
	printf 'each proxy pinned to CPU %s with every thread (taskset -a), the load generator and the plaintext\n' "$PROXY_CPU"
	printf 'backend (tests/bench) to CPU %s; one worker process or thread per proxy (stunnel: one process,\n' "$LOAD_CPU"
	echo "a thread per connection); the same certificates; session tickets on (each proxy's default key)."
	echo "Client: TLS 1.3 TLS_AES_128_GCM_SHA256 or TLS 1.2 ECDHE-*-AES128-GCM-SHA256, X25519, no certificate"
	echo "verification, SNI localhost; $CONC connections at a time in the handshake rows, each reading the backend's greeting"
	echo "through the proxy before closing; bulk: one connection; round trips: one connection, a 33-byte request echoed at a time;"
	echo "\"no proxy\" is the load generator straight to the backend, both on CPU $LOAD_CPU: it has none of the four cross-CPU"
	echo "wake-ups per round trip that a proxy on CPU $PROXY_CPU adds, which cost this virtual machine most of the proxied figure."
	echo "IMAP STARTTLS: plaintext greeting, \`a STARTTLS\`, its OK, the handshake, \`b CAPABILITY\` and its tagged reply, then close"
	echo "(nginx's mail module answers CAPABILITY itself; postern passes it to the backend, which answers it)."
	echo "The same certificates everywhere; nginx with \`ssl_protocols TLSv1.2 TLSv1.3\` (1.22 leaves 1.3 out by default);"
	echo "HAProxy nbthread 1; hitch workers = 1; nginx worker_processes 1; postern protocol raw."
	printf 'Idle memory: VmRSS of the proxy'"'"'s processes before and after opening the connections (TLS 1.3, ECDSA certificate, %s, one round trip each), divided by their number.\n' \
		"$([[ $IDLE_RESUME == 1 ]] && echo "resumed with tickets after one full handshake" || echo "full handshakes")"
	printf 'Versions:'
	for name in "${COLS[@]}"; do printf ' %s;' "${VERSION[$name]:-$name}"; done
	echo
	if [[ -s $TMP/negotiated ]]; then
		echo
		echo "Negotiated (postern, first run):"
		sed 's/^/- /' "$TMP/negotiated"
	fi
	na_any=0
	for name in "${COLS[@]}"; do [[ -n ${NA[$name]:-} ]] && na_any=1; done
	if ((na_any)) || [[ -s $NOTES || -n $STLS_PROBE ]]; then
		echo
		echo "Notes:"
		for name in "${COLS[@]}"; do
			[[ -n ${NA[$name]:-} ]] && echo "- $name: n/a: ${NA[$name]}"
		done
		[[ -n $STLS_PROBE ]] && echo "- IMAP STARTTLS row: $STLS_PROBE"
		sed 's/^/- /' "$NOTES"
	fi
} >"$MD"

cp "$MD" "$OUT/results.md"

# ------------------------------------------------------------------- chart

SVG=$OUT/ratios.svg
if command -v gnuplot >/dev/null 2>&1 && [[ -s $CHART ]]; then
	n=$(wc -l <"$CHART")
	xmax=$(awk '$NF ~ /^[01]$/ { v = $(NF - 1); if (v > m) m = v } END { m = m * 1.18; print (m < 1.3 ? 1.3 : m) }' "$CHART")
	cat >"$TMP/ratios.gp" <<-EOF
		set terminal svg size 960,$((130 + 36 * n)) dynamic font "sans,12" background rgb "white"
		set output "$SVG"
		set title "postern ÷ best peer (paired, median of $REPS_DONE runs)"
		set label "green: postern ahead, red: behind (rows marked lower is better: below 1 is ahead)" at screen 0.01, screen 0.025 font "sans,10"
		set bmargin 5
		set style fill solid 0.85 border -1
		set yrange [-0.6:$n - 0.4]
		set ytics nomirror scale 0
		set xtics nomirror
		set grid xtics
		set xlabel "ratio (the dashed line is parity)"
		set xrange [0:$xmax]
		set lmargin 56
		set arrow from 1, graph 0 to 1, graph 1 nohead lw 2 lc rgb "black" dt 2
		set key off
		# the first row of the table at the top
		plot "$CHART" using (\$2 / 2):($n - 1 - \$0):(\$2 / 2):(0.36):(\$3 > 0.5 ? 0x3c9a5f : 0xc8553d):ytic(1) \\
		         with boxxyerror lc rgb variable, \\
		     "$CHART" using (\$2):($n - 1 - \$0):(sprintf("%.2f", \$2)) with labels left offset 0.5,0
	EOF
	gnuplot "$TMP/ratios.gp" 2>"$TMP/logs/gnuplot.log" || say "gnuplot failed: $(tail -n 2 "$TMP/logs/gnuplot.log")"
else
	say "no chart: gnuplot missing or no ratios"
fi

# ------------------------------------------------------------------ output

cat "$MD"
echo
echo "results: $OUT/results.md"
[[ -s $SVG ]] && echo "chart:   $SVG"
say "done in $(($(date +%s) - T_START)) s"
