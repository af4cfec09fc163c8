#!/usr/bin/env bash
# packaging/deps.sh: install what postern needs to build, test and run the
# demo, and only what is missing.
#
# Runs before every `make check` and `make run`, so when everything is present
# it prints nothing and exits 0 at once (one dpkg-query call).
#
#   Debian/Ubuntu, as root: apt-get update && apt-get install (missing only);
#                           the system Dovecot and Postfix services are not
#                           started (the tests run private instances).
#   Debian/Ubuntu, not root: prints the exact command to run, exits 1.
#   Other systems:          checks for the tools and libraries, prints the
#                           command for the package manager found, exits 1.
#
# Needs only bash and coreutils: no sudo, which, lsb_release or python.
#
#   --bench   also the peers and tools of `make bench`: stunnel4, hitch,
#             haproxy, nginx with its stream and mail modules, gnuplot,
#             taskset (util-linux) and procps; their system services are not
#             started either.
set -u

me=${0##*/}
say() { printf '%s: %s\n' "$me" "$*" >&2; }

bench=""
for arg in "$@"; do
	case $arg in
	--bench) bench=1 ;;
	*) say "unknown argument: $arg (usage: $me [--bench])"; exit 2 ;;
	esac
done

os_id="" os_like="" os_codename=""
if [[ -r /etc/os-release ]]; then
	{ read -r os_id; read -r os_like; read -r os_codename; } < <(
		# shellcheck disable=SC1091
		. /etc/os-release
		printf '%s\n%s\n%s\n' "${ID:-}" "${ID_LIKE:-}" "${VERSION_CODENAME:-}"
	)
fi

# ---------------------------------------------------------------- Debian/Ubuntu

# The clang runtime package (libFuzzer, ASan, UBSan) carries clang's major
# version in its name (libclang-rt-14-dev on Debian 12). Before LLVM 14 the
# runtimes came with libclang-common-N-dev, which clang itself depends on.
clang_major() {
	local p
	if p=$(command -v clang 2>/dev/null) && p=$(readlink -f "$p") &&
		[[ $p =~ /llvm-([0-9]+)/ ]]; then
		printf '%s' "${BASH_REMATCH[1]}"
		return 0
	fi
	case $os_codename in
	bookworm) printf '14' ;;
	*) # Version the distribution's "clang" package would bring.
		command -v apt-cache >/dev/null 2>&1 || return 0
		apt-cache depends clang 2>/dev/null |
			sed -n 's/^ *Depends: clang-\([0-9][0-9]*\)$/\1/p' | head -n 1 ;;
	esac
}

clang_rt_pkg() {
	local m
	m=$(clang_major)
	[[ -n $m && $m -ge 14 ]] && printf 'libclang-rt-%s-dev' "$m"
}

# Package names wanted on Debian/Ubuntu.
deb_wanted() {
	local rt
	if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
		echo gcc
	fi
	echo make pkg-config libc6-dev libssl-dev libev-dev libinih-dev libcurl4-openssl-dev libcmocka-dev
	echo clang
	rt=$(clang_rt_pkg) && [[ -n $rt ]] && echo "$rt"
	echo openssl curl ca-certificates python3 python3-aiosmtpd
	echo dovecot-imapd dovecot-pop3d postfix procps iproute2 valgrind tshark
	# make deb and make check-deb (.ci/run): the Debian package's build
	# (dpkg-buildpackage, dh, build-essential) and its checks (lintian, hardening-check).
	echo build-essential dpkg-dev debhelper lintian devscripts
	# tests/integration/test_metrics_format.py: `promtool check metrics`
	# validates the metrics text; the policy-rc.d of deb_install keeps the
	# Prometheus server it brings from starting.
	echo prometheus
	# tests/integration/test_backend_dns.py: a throwaway DNS server for
	# backend names (the binary only: no system service).
	echo dnsmasq-base
	# tests/integration/test_fail2ban.py: fail2ban-regex checks the filter of
	# packaging/fail2ban against postern's own log (the policy-rc.d of
	# deb_install keeps the fail2ban service from starting).
	echo fail2ban
	# tests/integration/test_sni_hosting.py: 2 000 certificates in seconds.
	echo python3-cryptography
	[[ -n $bench ]] && deb_bench_wanted
	return 0
}

# With --bench: the peers and tools of `make bench`. Any gnuplot will do;
# gnuplot-nox (no X11) is the one installed when there is none.
deb_bench_wanted() {
	echo stunnel4 hitch haproxy nginx libnginx-mod-stream libnginx-mod-mail
	echo util-linux procps
	command -v gnuplot >/dev/null 2>&1 || echo gnuplot-nox
}

# Prints those of "$@" that dpkg does not list as installed.
deb_missing() {
	local -A have=()
	local name status p
	while IFS=$'\t' read -r name status; do
		[[ $status == installed ]] && have[$name]=1
	done < <(dpkg-query -W -f='${Package}\t${db:Status-Status}\n' "$@" 2>/dev/null)
	for p in "$@"; do
		[[ -n ${have[$p]:-} ]] || printf '%s\n' "$p"
	done
}

log="" our_policy=""
# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
	[[ -n $our_policy ]] && rm -f "$our_policy"
	[[ -n $log ]] && rm -f "$log"
	return 0
}

deb_install() {
	local -a wanted missing
	# shellcheck disable=SC2207
	wanted=($(deb_wanted))
	mapfile -t missing < <(deb_missing "${wanted[@]}")
	((${#missing[@]})) || exit 0

	local apt_opts="-y --no-install-recommends"
	if [[ $(id -u) != 0 ]]; then
		say "missing packages: ${missing[*]}"
		say "install them with:"
		if command -v sudo >/dev/null 2>&1; then
			printf '  sudo apt-get update && sudo apt-get install %s %s\n' \
				"$apt_opts" "${missing[*]}" >&2
		else
			printf '  su -c "apt-get update && apt-get install %s %s"\n' \
				"$apt_opts" "${missing[*]}" >&2
		fi
		if [[ " ${missing[*]} " =~ \ (dovecot-[a-z0-9]*|postfix)\  ]]; then
			say "(this starts the system Dovecot or Postfix service; the demo and the"
			say " tests run their own, so they may be stopped:"
			say " systemctl disable --now dovecot postfix)"
		fi
		if [[ " ${missing[*]} " =~ \ (stunnel4|hitch|haproxy|nginx)\  ]]; then
			say "(this may start the system's stunnel, hitch, HAProxy or nginx; the"
			say " benchmark runs its own, so they may be stopped and disabled)"
		fi
		exit 1
	fi

	log=$(mktemp "${TMPDIR:-/tmp}/postern-deps.XXXXXX") || exit 1

	# Keep the packages' maintainer scripts from starting the system Dovecot
	# (it would bind 110, 143, 993, 995) and Postfix (25), and with --bench
	# nginx, HAProxy, hitch and stunnel (80, ...): a policy-rc.d that
	# refuses every service action, for the duration of the install. An existing one is left alone.
	local policy=/usr/sbin/policy-rc.d
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	if [[ ! -e $policy && ! -L $policy ]]; then
		printf '#!/bin/sh\n# postern packaging/deps.sh: no service starts during install\nexit 101\n' >"$policy" &&
			chmod 0755 "$policy" && our_policy=$policy
	fi

	export DEBIAN_FRONTEND=noninteractive
	local -a apt=(apt-get -q -o DPkg::Lock::Timeout=300)
	if ! "${apt[@]}" update >"$log" 2>&1; then
		say "apt-get update failed (trying the install with the current lists):"
		tail -n 5 "$log" | sed 's/^/  /' >&2
	fi

	# The runtime package name may only be known now that the lists are fresh.
	# shellcheck disable=SC2207
	wanted=($(deb_wanted))
	mapfile -t missing < <(deb_missing "${wanted[@]}")
	local -a install=()
	local p
	for p in "${missing[@]}"; do
		if [[ $p == libclang-rt-*-dev ]] &&
			! apt-cache show "$p" >/dev/null 2>&1; then
			say "note: $p is not available here; using plain clang"
			continue
		fi
		install+=("$p")
	done
	((${#install[@]})) || exit 0

	say "installing: ${install[*]}"
	# shellcheck disable=SC2086
	if ! "${apt[@]}" install $apt_opts "${install[@]}" >>"$log" 2>&1; then
		say "apt-get install failed:"
		tail -n 20 "$log" | sed 's/^/  /' >&2
		exit 1
	fi
	mapfile -t missing < <(deb_missing "${install[@]}")
	if ((${#missing[@]})); then
		say "still missing after install: ${missing[*]}"
		exit 1
	fi
	exit 0
}

if command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
	deb_install
fi

# ---------------------------------------------------------------- other systems
# No dpkg: look for the things themselves, and if any is missing print the
# command for the package manager found (names are best effort).

lacking=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_hdr() {
	local d
	for d in /usr/include /usr/local/include /opt/homebrew/include; do
		[[ -e $d/$1 ]] && return 0
	done
	return 1
}
have_cmd cc || have_cmd gcc || lacking+=("C compiler (gcc or cc)")
have_cmd make || lacking+=("make")
have_cmd pkg-config || have_cmd pkgconf || lacking+=("pkg-config")
have_hdr openssl/ssl.h || lacking+=("OpenSSL 3 headers")
have_hdr ev.h || lacking+=("libev headers")
have_hdr ini.h || lacking+=("inih headers")
have_hdr curl/curl.h || lacking+=("libcurl headers (OpenSSL flavour)")
have_hdr cmocka.h || lacking+=("cmocka headers")
have_cmd clang || lacking+=("clang with the libFuzzer and sanitizer runtimes")
have_cmd openssl || lacking+=("openssl")
have_cmd curl || lacking+=("curl")
if have_cmd python3; then
	python3 -c 'import aiosmtpd' 2>/dev/null || lacking+=("python3 aiosmtpd")
else
	lacking+=("python3" "python3 aiosmtpd")
fi
have_cmd dovecot || [[ -x /usr/sbin/dovecot ]] || lacking+=("Dovecot (IMAP and POP3)")
have_cmd postfix || [[ -x /usr/sbin/postfix ]] || lacking+=("Postfix")
have_cmd pgrep || lacking+=("procps")
have_cmd ss || [[ -x /usr/sbin/ss ]] || lacking+=("iproute2 (ss)")
have_cmd valgrind || lacking+=("valgrind")
if [[ -n $bench ]]; then
	have_sbin() { have_cmd "$1" || [[ -x /usr/sbin/$1 || -x /usr/bin/$1 ]]; }
	have_sbin stunnel || have_sbin stunnel4 || lacking+=("stunnel")
	have_sbin hitch || lacking+=("hitch")
	have_sbin haproxy || lacking+=("HAProxy")
	have_sbin nginx || lacking+=("nginx with the stream and mail modules")
	have_cmd gnuplot || lacking+=("gnuplot")
	have_cmd taskset || lacking+=("taskset (util-linux)")
fi

((${#lacking[@]})) || exit 0

say "missing:"
printf '  - %s\n' "${lacking[@]}" >&2

sudo=""
[[ $(id -u) != 0 ]] && { have_cmd sudo && sudo="sudo " || sudo="(as root) "; }
cmd="" pm=""
if have_cmd dnf || have_cmd yum; then
	pm=dnf; have_cmd dnf || pm=yum
	cmd="$pm install -y gcc make pkgconf-pkg-config openssl-devel libev-devel inih-devel libcurl-devel libcmocka-devel clang compiler-rt openssl curl ca-certificates python3 python3-aiosmtpd python3-cryptography dovecot postfix procps-ng iproute valgrind"
elif have_cmd zypper; then
	pm=zypper
	cmd="zypper install -y gcc make pkgconf-pkg-config libopenssl-devel libev-devel libinih-devel libcurl-devel cmocka-devel clang compiler-rt openssl curl ca-certificates python3 python3-aiosmtpd python3-cryptography dovecot postfix procps iproute2 valgrind"
elif have_cmd apk; then
	pm=apk
	cmd="apk add build-base pkgconf openssl-dev libev-dev inih-dev curl-dev cmocka-dev clang compiler-rt openssl curl ca-certificates python3 py3-aiosmtpd dovecot dovecot-pop3d postfix procps iproute2 valgrind"
elif have_cmd pacman; then
	pm=pacman
	cmd="pacman -S --needed gcc make pkgconf openssl libev libinih curl cmocka clang compiler-rt curl ca-certificates python python-aiosmtpd dovecot postfix procps-ng iproute2 valgrind"
fi
if [[ -n $cmd && -n $bench ]]; then
	case $pm in
	apk) cmd+=" stunnel hitch haproxy nginx nginx-mod-stream nginx-mod-mail gnuplot util-linux" ;;
	zypper) cmd+=" stunnel hitch haproxy nginx gnuplot util-linux" ;;
	*) cmd+=" stunnel hitch haproxy nginx nginx-mod-stream nginx-mod-mail gnuplot util-linux" ;;
	esac
fi
if [[ -n $cmd ]]; then
	say "install them with (package names may differ on ${os_id:-this system}${os_like:+, like $os_like}):"
	printf '  %s%s\n' "$sudo" "$cmd" >&2
else
	say "no known package manager found; install the above by hand"
fi
exit 1
