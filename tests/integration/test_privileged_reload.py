"""Keys that only root may read renew: started as root with `user` set, a
master keeps root, reads configuration, certificates and keys at start and
on SIGHUP, and forks workers that drop to the user before they serve (also
for workers = 1). `postern -s reload` reports a refused reload with its
reason. `-t` checks that user and group exist and that the files are
readable by the process that reads them at reload."""

import os
import pwd
import re
import shutil
import signal

import harness
from harness import (
    POSTERN,
    PosternTestCase,
    cert_fingerprint,
    env,
    peer_fingerprint,
    run,
    svc,
    tls_connect,
)

STARTED_RE = re.compile(r"\bworker (\d+) started pid=(\d+)\b")


def install_root_only(src, dst):
    """Copy src to dst as root:root 0600, whole (rename), as certbot does."""
    tmp = dst + ".new"
    shutil.copyfile(src, tmp)
    os.chown(tmp, 0, 0)
    os.chmod(tmp, 0o600)
    os.rename(tmp, dst)


def uid_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return [int(x) for x in line.split()[1:]]
    raise AssertionError("no Uid line for pid %d" % pid)


class PrivilegedReload(PosternTestCase):
    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest("needs root: keys readable by root only")
        self.nobody = pwd.getpwnam("nobody")

    def start(self, workers):
        """A postern as root with user = nobody serving certificate A from a
        0700 directory of root's; (postern, cert path, key path)."""
        e = env()
        p = self.postern(start=False)
        keys = os.path.join(p.dir, "keys")
        os.mkdir(keys, 0o700)
        cert, key = os.path.join(keys, "cert.pem"), os.path.join(keys, "key.pem")
        install_root_only(e.cert, cert)
        install_root_only(e.key, key)
        p.write_config([("imaps", svc("imap", cert=cert, key=key))],
                       {"workers": workers, "user": "nobody", "group": "nogroup"})
        p.start()
        return p, cert, key

    def served(self, p):
        s = tls_connect(p.port())
        try:
            return peer_fingerprint(s)
        finally:
            s.close()

    def current_workers(self, p, n):
        """{index: pid} of the latest started workers, once n of them run
        as nobody."""
        def ready():
            latest = {}
            for ln in p.lines():
                m = STARTED_RE.search(ln.raw)
                if m:
                    latest[int(m.group(1))] = int(m.group(2))
            if sorted(latest) != list(range(1, n + 1)):
                return None
            try:
                if all(uid_of(pid) == [self.nobody.pw_uid] * 4 for pid in latest.values()):
                    return latest
            except OSError:
                return None
            return None

        return harness.wait_until(ready, 10, msg="%d workers running as nobody" % n,
                                  detail=lambda: p.log_text()[-3000:])

    def reload_ctl(self, p):
        return run([POSTERN, "-c", p.conf, "-s", "reload"], timeout=60, text=True)

    def check_renewal(self, workers):
        e = env()
        p, cert, key = self.start(workers)
        self.assertEqual(self.served(p), cert_fingerprint(e.cert))
        # renewal: new certificate and key, root-only as before, then SIGHUP
        install_root_only(e.cert2, cert)
        install_root_only(e.key2, key)
        p.signal(signal.SIGHUP)
        p.wait_for(who="postern", regex=r"configuration reloaded|reload refused", timeout=10)
        self.assertFalse(p.find(contains="reload refused"), p.log_text()[-3000:])
        # the old workers finish; only the new ones accept
        p.wait_for(contains="of the previous configuration finished", count=workers, timeout=10)
        for _ in range(3 * workers):
            self.assertEqual(self.served(p), cert_fingerprint(e.cert2))
        # the master stays root (it reads keys again at reload), the
        # workers, which serve, run as nobody
        self.assertEqual(uid_of(p.pid), [0] * 4)
        self.current_workers(p, workers)

    def test_root_only_key_renews_on_sighup_single_worker(self):
        self.check_renewal(1)

    def test_root_only_key_renews_on_sighup_two_workers(self):
        self.check_renewal(2)

    def test_reload_command_reports_refusal_and_old_certificate_stays(self):
        e = env()
        for workers in (1, 2):
            with self.subTest(workers=workers):
                p, cert, key = self.start(workers)
                r = self.reload_ctl(p)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn("configuration reloaded", r.stdout)
                with open(key + ".new", "w") as f:
                    f.write("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
                os.chmod(key + ".new", 0o600)
                os.rename(key + ".new", key)
                r = self.reload_ctl(p)
                self.assertNotEqual(r.returncode, 0, r.stdout)
                self.assertRegex(r.stderr, r"reload refused: configuration has errors: %s:\d+: "
                                 % re.escape(p.conf))
                self.assertIn("key", r.stderr)
                self.assertEqual(self.served(p), cert_fingerprint(e.cert))
                p.stop()

    def test_reload_command_without_daemon_fails(self):
        p = self.postern([("imaps", svc("imap"))], start=False)
        r = self.reload_ctl(p)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(p.pidfile, r.stderr)


class CheckUserAndFiles(PosternTestCase):
    """postern -t: the user and group exist; the files are readable by the
    process that reads them at reload."""

    NEEDS_SERVERS = False

    def check(self, global_, services=None, as_user=None):
        p = self.postern(services or [("imaps", svc("imap"))], global_, start=False)
        argv = [POSTERN, "-t", "-c", p.conf]
        if as_user:
            argv = ["setpriv", "--reuid", as_user, "--regid", as_user, "--clear-groups"] + argv
        return p, run(argv, text=True)

    def line_of(self, p, key):
        with open(p.conf) as f:
            for n, line in enumerate(f, 1):
                if line.startswith(key + " ="):
                    return n
        raise AssertionError(key)

    def test_unknown_user_and_group_are_errors_with_lines(self):
        p, r = self.check({"user": "no-such-user-x", "group": "no-such-group-x"})
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("%s:%d: user: no user 'no-such-user-x'" % (p.conf, self.line_of(p, "user")), r.stderr)
        self.assertIn("%s:%d: group: no group 'no-such-group-x'" % (p.conf, self.line_of(p, "group")), r.stderr)

    def test_root_only_key_passes_for_root_with_user(self):
        if os.geteuid() != 0:
            self.skipTest("needs root")
        self.assertEqual(os.stat(env().key).st_mode & 0o077, 0)
        p, r = self.check({"user": "nobody", "group": "nogroup"})
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_key_unreadable_by_the_user_that_reads_it(self):
        """Started as nobody (systemd's User=), nobody reads the key at
        reload: -t run as nobody names the key's line."""
        if os.geteuid() != 0:
            self.skipTest("needs root to run as nobody")
        e = env()
        p = self.postern(start=False)
        os.chmod(p.dir, 0o755)
        cert, key = os.path.join(p.dir, "cert.pem"), os.path.join(p.dir, "key.pem")
        install_root_only(e.cert, cert)
        os.chmod(cert, 0o644)
        install_root_only(e.key, key)
        p.write_config([("imaps", svc("imap", cert=cert, key=key))], {"user": "nobody"})
        r = run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                 POSTERN, "-t", "-c", p.conf], text=True)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertRegex(r.stderr, r"%s:%d: .*%s" % (re.escape(p.conf), self.line_of(p, "key"), re.escape(key)))
        # readable by its group, as Debian's ssl-cert group gives: accepted
        os.chown(key, 0, pwd.getpwnam("nobody").pw_gid)
        os.chmod(key, 0o640)
        r = run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                 POSTERN, "-t", "-c", p.conf], text=True)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_non_root_cannot_become_another_user(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to run as nobody")
        p = self.postern(start=False)
        os.chmod(p.dir, 0o755)
        p.write_config([("imaps", svc("imap", tls="off"))], {"user": "root"})
        r = run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                 POSTERN, "-t", "-c", p.conf], text=True)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("%s:%d: user: postern runs as uid %d and cannot become 'root'"
                      % (p.conf, self.line_of(p, "user"), pwd.getpwnam("nobody").pw_uid), r.stderr)
