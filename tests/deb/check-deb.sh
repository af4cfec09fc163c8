#!/bin/bash
# make check-deb: the Debian package as an admin gets it. Builds it (make deb,
# tests skipped: make check ran them), runs lintian (any E: or W: fails) and
# hardening-check, then installs it with dpkg into a throwaway copy of this
# system (an overlay over / in a private mount namespace, so the machine
# itself is never touched), checks where everything landed, runs postern -t
# on the shipped configuration as the service's user, purges the package
# and checks that nothing of it is left. Root only. Ends with one line
# "check-deb: N passed, M failed".
set -u
cd "$(dirname "$0")/../.."
repo=$PWD
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "PASS  $*"; }
bad() { fail=$((fail + 1)); echo "FAIL  $*"; }
check() { # NAME COMMAND...
	local name=$1; shift
	if "$@"; then ok "$name"; else bad "$name"; fi
}
finish() { echo "check-deb: $pass passed, $fail failed"; ((fail == 0)); exit; }

if [[ $(id -u) != 0 ]]; then
	echo "check-deb: needs root (dpkg into a throwaway root, namespaces)" >&2
	bad "running as root"; finish
fi
for tool in lintian hardening-check dpkg-buildpackage dh unshare; do
	command -v $tool >/dev/null || { echo "check-deb: $tool missing: run packaging/deps.sh (as root)" >&2; bad "$tool installed"; }
done
((fail == 0)) || finish

if DEB_BUILD_OPTIONS="nocheck ${DEB_BUILD_OPTIONS:-}" make -s deb >/dev/null; then
	ok "make deb builds the package"
else
	bad "make deb builds the package"; finish
fi
deb=$(ls build/deb/postern_*_*.deb)
changes=$(ls build/deb/postern_*.changes)

lint=$(lintian -E --pedantic "$changes" 2>&1 | grep -v '^running with root privileges')
if grep -qE '^[EW]: ' <<<"$lint"; then
	bad "lintian -E --pedantic: no error, no warning"; sed 's/^/    /' <<<"$lint"
else
	ok "lintian -E --pedantic: no error, no warning"
	[[ -z $lint ]] || sed 's/^/    /' <<<"$lint"
fi
# Debian 12's own C start files carry no IBT/SHSTK note, so the linked
# binary cannot either (its objects are built with -fcf-protection).
hc=$(hardening-check --nocfprotection build/deb/postern-*/debian/postern/usr/sbin/postern 2>&1)
check "hardening-check: PIE, stack protector, fortify, relro, bindnow" [ $? = 0 ]
grep -q "Fortify Source functions: yes" <<<"$hc" || echo "$hc" | sed 's/^/    /'

tmp=$(mktemp -d "${TMPDIR:-/tmp}/postern-deb.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp "$deb" "$tmp/postern.deb"
"$repo/tests/servers/gen-certs.sh" test "$tmp/certs" >/dev/null 2>&1 || { bad "test certificate"; finish; }

# Inside a private mount namespace: an overlay over /, written to a tmpfs.
# Each check prints PASS/FAIL itself.
unshare --mount --propagation private bash -s "$tmp" <<'INNER' >"$tmp/inner.out" 2>&1
set -u
tmp=$1
ok() { echo "PASS  $*"; }
bad() { echo "FAIL  $*"; }
check() { local n=$1; shift; if "$@" >"$tmp/check.out" 2>&1; then ok "$n"; else bad "$n"; sed 's/^/    /' "$tmp/check.out"; fi; }
mkdir -p "$tmp/ovl" && mount -t tmpfs tmpfs "$tmp/ovl" &&
	mkdir -p "$tmp/ovl/upper" "$tmp/ovl/work" "$tmp/ovl/root" &&
	mount -t overlay overlay -o "lowerdir=/,upperdir=$tmp/ovl/upper,workdir=$tmp/ovl/work" "$tmp/ovl/root" ||
	{ bad "an overlay root to install into"; exit 0; }
r=$tmp/ovl/root
u=$tmp/ovl/upper
mount -t proc proc "$r/proc"
mount -t tmpfs tmpfs "$r/run"   # no systemd running in there
mount -t tmpfs tmpfs "$r/tmp"
cp "$tmp/postern.deb" "$r/tmp/"
in_root() { chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d" && chmod 0755 "$r/usr/sbin/policy-rc.d"

if in_root dpkg -i /tmp/postern.deb >"$tmp/install.log" 2>&1; then ok "dpkg -i installs it"; else bad "dpkg -i installs it"; sed 's/^/    /' "$tmp/install.log"; exit 0; fi
check "binary /usr/sbin/postern runs" in_root /usr/sbin/postern -V
unit=""
for d in /lib/systemd/system /usr/lib/systemd/system; do [[ -f $r$d/postern.service ]] && unit=$d/postern.service; done
check "system unit in /lib/systemd/system, ExecStart=/usr/sbin/postern, Type=notify" \
	grep -q '^ExecStart=/usr/sbin/postern -c /etc/postern/postern.ini$' "$r$unit"
grep -q '^Type=notify$' "$r$unit" || bad "unit is Type=notify"
check "user unit /usr/lib/systemd/user/postern.service with /usr/sbin/postern" \
	grep -q '^ExecStart=/usr/sbin/postern ' "$r/usr/lib/systemd/user/postern.service"
check "man pages postern(8), postern.ini(5)" \
	test -s "$r/usr/share/man/man8/postern.8.gz" -a -s "$r/usr/share/man/man5/postern.ini.5.gz"
check "example configurations in /usr/share/doc/postern/examples" \
	test -s "$r/usr/share/doc/postern/examples/postern.ini" -a -s "$r/usr/share/doc/postern/examples/postern-client.ini"
check "/etc/postern/postern.ini is a conffile" \
	bash -c "chroot '$r' dpkg-query -W -f='\${Conffiles}' postern | grep -q '^ /etc/postern/postern.ini '"
check "/etc/logrotate.d/postern" test -s "$r/etc/logrotate.d/postern"
pw=$(in_root getent passwd postern)
check "system user postern, no login shell, home /var/lib/postern" \
	bash -c "[[ '$pw' =~ ^postern:x:([0-9]+):[0-9]+:[^:]*:/var/lib/postern:/usr/sbin/nologin$ ]] && (( \${BASH_REMATCH[1]} < 1000 ))"
check "system group postern" in_root getent group postern
check "/etc/postern is root:postern 0750" bash -c "[[ \$(chroot '$r' stat -c '%U:%G %a' /etc/postern) == 'root:postern 750' ]]"
check "the unit verifies (systemd-analyze verify)" in_root systemd-analyze verify "$unit"
in_root systemd-analyze verify "$unit" 2>&1 | sed 's/^/    verify: /'
mkdir -p -m 0700 "$r/run/user-check"
check "the user unit verifies (systemd-analyze verify --user)" \
	in_root env XDG_RUNTIME_DIR=/run/user-check HOME=/root systemd-analyze verify --user /usr/lib/systemd/user/postern.service
score=$(in_root systemd-analyze security --offline=true "$unit" 2>&1 | sed -n 's/.*Overall exposure level for postern.service: \([0-9.]*\).*/\1/p')
check "systemd-analyze security: exposure ${score:-?} <= 2.0" awk -v s="${score:-99}" 'BEGIN { exit !(s <= 2.0) }'

# An admin's first steps: a certificate and key readable by group postern.
install -m 0644 "$tmp/certs/server.pem" "$r/etc/postern/cert.pem"
install -m 0640 "$tmp/certs/server.key" "$r/etc/postern/key.pem"
in_root chgrp postern /etc/postern/key.pem
check "postern -t passes on the shipped configuration, as the user postern" \
	in_root setpriv --reuid=postern --regid=postern --init-groups /usr/sbin/postern -t -c /etc/postern/postern.ini
rm -f "$r/etc/postern/cert.pem" "$r/etc/postern/key.pem"
# What systemd would have made at the first start (StateDirectory, LogsDirectory).
in_root install -d -o postern -g postern /var/lib/postern /var/log/postern
in_root install -o postern -g postern -m 0640 /dev/null /var/log/postern/postern.log

if in_root dpkg --purge postern >"$tmp/purge.log" 2>&1; then ok "dpkg --purge removes it"; else bad "dpkg --purge removes it"; sed 's/^/    /' "$tmp/purge.log"; fi
umount "$r/tmp" "$r/run" "$r/proc"
# dpkg's own records and man-db's cache of formatted pages are not the
# package's files.
left=$(cd "$u" && find . -name '*postern*' ! -path './var/lib/dpkg/*' ! -path './var/cache/man/*' | sort)
check "purge leaves no file of it${left:+: }$(echo $left)" test -z "$left"
check "purge removes the user and group postern" \
	bash -c "! grep -qs '^postern:' '$r/etc/passwd' '$r/etc/group' '$r/etc/shadow' '$r/etc/gshadow'"
check "purge removes the statoverride" bash -c "! grep -qs ' /etc/postern$' '$r/var/lib/dpkg/statoverride'"
INNER
cat "$tmp/inner.out"
pass=$((pass + $(grep -c '^PASS' "$tmp/inner.out")))
fail=$((fail + $(grep -c '^FAIL' "$tmp/inner.out")))
grep -q '^PASS  dpkg -i installs it' "$tmp/inner.out" || { bad "the install step ran"; cat "$tmp/inner.out"; }
finish
