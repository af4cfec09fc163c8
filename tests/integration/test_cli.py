"""Command line: -V, -h, -t (OK and FILE:LINE errors), exit statuses."""

import os
import re
import socket

import harness
from harness import POSTERN, PosternTestCase, env, free_port, run


class CommandLine(PosternTestCase):
    NEEDS_SERVERS = False

    def test_version(self):
        r = run([POSTERN, "-V"], timeout=10)
        out = (r.stdout + r.stderr).decode()
        self.assertEqual(r.returncode, 0, out)
        self.assertIn(harness.version(), out)
        self.assertIn("postern", out)

    def test_help(self):
        r = run([POSTERN, "-h"], timeout=10)
        out = (r.stdout + r.stderr).decode()
        self.assertEqual(r.returncode, 0, out)
        self.assertRegex(out.lower(), "usage")
        for opt in ("-c", "-t", "-V", "-h"):
            self.assertIn(opt, out)

    def test_bad_option(self):
        r = run([POSTERN, "-Z"], timeout=10)
        self.assertNotEqual(r.returncode, 0)
        self.assertRegex(r.stderr.decode().lower(), "usage|option")

    def good_config(self, d):
        e = env()
        return (
            "[global]\n"
            "log_level = info\n"
            "shutdown_timeout = 5m\n"
            "\n"
            "[imaps]\n"
            "protocol = imap\n"
            "listen = 127.0.0.1:%d [::1]:%d\n"
            "cert = %s\n"
            "key = %s\n"
            "backend = 127.0.0.1:%d\n"
            "idle_timeout = 2h\n"
            "connect_timeout = 7\n"
            "\n"
            "[pop3s]\n"
            "protocol = pop3\n"
            "listen = 127.0.0.1:%d\n"
            "listen = 127.0.0.2:%d\n"
            "cert = %s\n"
            "key = %s\n"
            "backend = unix:%s\n"
            "\n"
            "[plain]\n"
            "protocol = raw\n"
            "tls = off\n"
            "listen = 127.0.0.1:%d\n"
            "backend = 127.0.0.1:%d\n"
            % (free_port(), free_port("::1") if harness.have_ipv6() else 1993, e.cert, e.key, e.imap_port,
               free_port(), free_port(), e.cert, e.key, e.imap_socket, free_port(), e.smtp_port)
        )

    def test_check_ok(self):
        p = self.postern(config_text=self.good_config(None), start=False)
        r = run([POSTERN, "-t", "-c", p.conf], timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        self.assertIn("postern: configuration OK", r.stdout.decode().splitlines())
        self.assertEqual(r.stderr.decode().strip(), "")

    def test_check_errors_file_line(self):
        """Every error reported as FILE:LINE: message, FILE as given to -c,
        missing required key at the section header, cert/key mismatch at key."""
        e = env()
        text = (
            "[global]\n"                                   # 1
            "log_level = chatty\n"                         # 2  bad value
            "bogus_global = 1\n"                           # 3  unknown key
            "\n"                                           # 4
            "[imaps]\n"                                    # 5  <- backend missing
            "protocol = imap\n"                            # 6
            "listen = 127.0.0.1:%d\n"                      # 7
            "cert = %s\n"                                  # 8
            "key = %s\n"                                   # 9  does not match cert
            "idle_timeout = 5x\n"                          # 10 bad duration
            "\n"                                           # 11
            "[pop3s]\n"                                    # 12
            "protocol = pop4\n"                            # 13 bad protocol
            "listen = 127.0.0.1:%d\n"                      # 14
            "cert = %s\n"                                  # 15
            "key = %s\n"                                   # 16
            "backend = 127.0.0.1:110\n"                    # 17
            "frobnicate = yes\n"                           # 18 unknown key
            "\n"                                           # 19
            "[dup]\n"                                      # 20
            "protocol = raw\n"                             # 21
            "tls = off\n"                                  # 22
            "listen = 127.0.0.1:%d\n"                      # 23 duplicate of line 7
            "backend = 127.0.0.1:1\n"                      # 24
            "\n"                                           # 25
            "[missingcert]\n"                              # 26
            "protocol = imap\n"                            # 27
            "listen = 127.0.0.1:%d\n"                      # 28
            "cert = %s/does-not-exist.pem\n"               # 29 unreadable
            "key = %s\n"                                   # 30
            "backend = 127.0.0.1:143\n"                    # 31
        )
        port = free_port()
        text = text % (port, e.cert, e.key2, free_port(), e.cert, e.key, port, free_port(), e.tmp, e.key)
        p = self.postern(config_text=text, start=False)
        r = run([POSTERN, "-t", "-c", "postern.ini"], timeout=10, cwd=p.dir)
        err = r.stderr.decode()
        self.assertEqual(r.returncode, 1, err)
        self.assertNotIn("configuration OK", r.stdout.decode())
        lines = err.strip().splitlines()
        for ln in lines:
            self.assertRegex(ln, r"^postern\.ini:\d+: \S", "every error line is FILE:LINE: message")
        got = {int(re.match(r"^postern\.ini:(\d+):", ln).group(1)) for ln in lines if re.match(r"^postern\.ini:\d+:", ln)}
        for line, what in [
            (2, "bad log_level value"),
            (3, "unknown key in [global]"),
            (5, "missing backend (section header)"),
            (9, "key that does not match the cert"),
            (10, "bad duration"),
            (13, "bad protocol"),
            (18, "unknown key in a service"),
        ]:
            self.assertIn(line, got, "no error reported at line %d (%s); stderr:\n%s" % (line, what, err))
        self.assertTrue(got & {7, 23}, "no error for the duplicate listen address (line 23); stderr:\n" + err)
        self.assertTrue(got & {29, 30}, "no error for the missing certificate file (line 29); stderr:\n" + err)
        # and no error for good lines
        for good in (1, 6, 14, 15, 16, 17, 21, 22, 24):
            self.assertNotIn(good, got, "error reported at good line %d:\n%s" % (good, err))

    def test_check_reports_every_error(self):
        e = env()
        text = (
            "[global]\n"
            "workers = 0\n"                      # 2: out of range
            "ticket_keys = /nonexistent/k1\n"    # 3: cannot be read
            "\n"
            "[imap]\n"                           # 5
            "protocol = imap\n"
            "listen = 127.0.0.1:%d\n"
            "tls = implicit\n"                   # 8
            "cert = %s\n"
            "key = %s\n"
            "backend = 127.0.0.1:%d\n"
            "log_commands = yes\n"               # 12: supported
            "capture_dir = /tmp\n"               # 13: supported
        ) % (free_port(), e.cert, e.key, e.imap_port)
        p = self.postern(config_text=text, start=False)
        r = run([POSTERN, "-t", "-c", p.conf], timeout=10)
        err = r.stderr.decode()
        self.assertEqual(r.returncode, 1, err)
        for line in (12, 13):
            self.assertNotRegex(err, r"(?m)^%s:%d: " % (re.escape(p.conf), line), err)
        self.assertRegex(err, r"(?m)^%s:3: ticket_keys: cannot read /nonexistent/k1" % re.escape(p.conf), err)
        self.assertRegex(err, r"(?m)^%s:2: workers = 0: invalid value" % re.escape(p.conf), err)
        self.assertNotIn("not supported yet", err)

    def test_check_long_line(self):
        """inih cuts lines at ~200 bytes: a long line must be an error at its
        own line, never silently truncated and parsed as a new line."""
        e = env()
        longpath = "/tmp/" + "x" * 150 + "/backend_tls = implicit"
        text = (
            "[imaps]\n"
            "protocol = imap\n"
            "listen = 127.0.0.1:%d\n"
            "cert = %s\n"
            "key = %s\n"
            "capture_file_that_is_long = %s\n"    # 6: > 200 bytes
            "backend = 127.0.0.1:%d\n"            # 7
        ) % (free_port(), e.cert, e.key, longpath + "y" * 60, e.imap_port)
        p = self.postern(config_text=text, start=False)
        r = run([POSTERN, "-t", "-c", p.conf], timeout=10)
        err = r.stderr.decode()
        self.assertEqual(r.returncode, 1, err)
        self.assertRegex(err, r"(?m)^%s:6: " % re.escape(p.conf))
        self.assertNotRegex(err, r"(?m)^%s:7: " % re.escape(p.conf))

    def test_smtp_to_loopback_without_proxy_warns_of_an_open_relay(self):
        """An smtp service whose backend is on this host and that sends no
        PROXY header makes every client look local to it: `-t` and the start
        log say so; with proxy_protocol, or for IMAP, nothing is said."""
        e = env()
        base = dict(cert=e.cert, key=e.key, backend="127.0.0.1:%d" % free_port())
        risky = {"protocol": "smtp", "listen": "127.0.0.1:%d" % free_port(), **base}
        safe = dict(risky, listen="127.0.0.1:%d" % free_port(), proxy_protocol="v2")
        imap = dict(risky, protocol="imap", listen="127.0.0.1:%d" % free_port())
        p = self.postern([("smtps", risky), ("smtps_proxy", safe), ("imaps", imap)], start=False)
        r = run([POSTERN, "-t", "-c", p.conf], timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        warnings = r.stderr.decode().splitlines()
        self.assertEqual(len(warnings), 1, warnings)
        self.assertRegex(warnings[0], r"^postern: WARNING: service smtps passes SMTP to 127\.0\.0\.1:\d+ on this "
                                      r"host without proxy_protocol: every client looks local to the backend.*open relay")
        p.start()
        got = p.wait_for(level="warn", contains="without proxy_protocol")
        self.assertIn("service smtps passes SMTP", got[0].raw)
        self.assertEqual(p.find(contains="smtps_proxy passes"), [])

    def test_missing_config_file(self):
        r = run([POSTERN, "-t", "-c", "/nonexistent/postern.ini"], timeout=10)
        self.assertEqual(r.returncode, 1)
        self.assertIn("/nonexistent/postern.ini", r.stderr.decode())

    def test_bad_config_without_t_exits_1(self):
        p = self.postern(config_text="[imaps]\nprotocol = imap\n", start=False)
        p.start(wait=False)
        self.assertEqual(p.wait_exit(10), 1, p.stderr())
        self.assertRegex(p.stderr(), r"(?m)^%s:1: " % re.escape(p.conf))

    def test_cannot_bind_exits_2(self):
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        try:
            port = blocker.getsockname()[1]
            p = self.postern([("imaps", harness.svc("imap", port=port))], start=False)
            p.start(wait=False)
            self.assertEqual(p.wait_exit(10), 2, p.stderr())
            self.assertRegex(p.stderr(), r"127\.0\.0\.1:%d" % port)
            self.assertFalse(os.path.exists(p.pidfile), "pidfile left behind after a failed start")
        finally:
            blocker.close()

    def test_failed_start_keeps_the_running_instance_pidfile(self):
        """A second start on the same configuration cannot bind: it exits 2
        and leaves the pidfile of the instance that runs alone, so that
        postern -s reload and systemd still find that instance."""
        first = self.postern([("imaps", harness.svc("imap"))])
        second = self.postern([("imaps", harness.svc("imap", port=first.port()))],
                              {"pidfile": first.pidfile}, start=False)
        second.start(wait=False)
        self.assertEqual(second.wait_exit(10), 2, second.stderr())
        with open(first.pidfile) as f:
            self.assertEqual(f.read().strip(), str(first.pid), "the running instance lost its pidfile")


class Install(PosternTestCase):
    NEEDS_SERVERS = False

    def test_make_install(self):
        """`make install PREFIX= DESTDIR=` puts the binary, both man pages and
        the example configuration where SPEC.md says, and the installed binary
        runs and accepts the example once its certificate paths exist."""
        import stat
        import tempfile
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        with tempfile.TemporaryDirectory() as dest:
            r = run(["make", "-s", "-C", repo, "install", "PREFIX=/opt/pst", "DESTDIR=" + dest],
                    timeout=300)
            self.assertEqual(r.returncode, 0, r.stderr.decode())
            root = dest + "/opt/pst"
            binary = root + "/sbin/postern"
            self.assertTrue(os.access(binary, os.X_OK), binary)
            self.assertEqual(stat.S_IMODE(os.stat(binary).st_mode), 0o755)
            for f in ("/share/man/man8/postern.8", "/share/man/man5/postern.ini.5",
                      "/share/doc/postern/examples/postern.ini",
                      "/share/doc/postern/examples/postern-client.ini"):
                self.assertTrue(os.path.getsize(root + f) > 0, f)
            # The systemd --user unit, where systemd --user looks
            # ($XDG_DATA_DIRS/systemd/user), starting the installed binary.
            with open(root + "/share/systemd/user/postern.service") as f:
                unit = f.read()
            self.assertIn("\nExecStart=/opt/pst/sbin/postern -c %E/postern/postern.ini\n", unit)
            self.assertIn("\nType=notify\n", unit)
            v = run([binary, "-V"], timeout=10)
            self.assertEqual(v.returncode, 0)
            self.assertRegex(v.stdout.decode(), r"^postern \d+\.\d+\.\d+")
            # The example, with its certificate paths pointed at the test's.
            text = open(root + "/share/doc/postern/examples/postern.ini").read()
            text = text.replace("/etc/postern/cert.pem", env().cert).replace("/etc/postern/key.pem", env().key)
            conf = os.path.join(dest, "example.ini")
            with open(conf, "w") as f:
                f.write(text)
            t = run([binary, "-t", "-c", conf], timeout=10)
            self.assertEqual(t.returncode, 0, t.stderr.decode())
            self.assertIn(b"configuration OK", t.stdout)


class BuildFlags(PosternTestCase):
    """The build honours the flags a package build sets, for every object,
    unit test and link; -Werror only when asked (WERROR=1, as CI builds)."""

    NEEDS_SERVERS = False

    def dry_run(self, *args):
        """The compile and link commands `make -n` would run for postern and
        one unit test, with ARGS, in an environment without WERROR."""
        import subprocess
        import tempfile
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {k: v for k, v in os.environ.items() if k not in ("WERROR", "MAKEFLAGS", "MFLAGS")}
        with tempfile.TemporaryDirectory() as d:
            r = subprocess.run(["make", "-n", "-B", "-C", repo, "BUILD=" + d, "CC=cc", *args,
                                "all", d + "/unit/test_buf"], env=env, capture_output=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr.decode())
            return [ln for ln in r.stdout.decode().splitlines() if ln.startswith("cc ")]

    def test_cppflags_and_ldflags_reach_objects_unit_tests_and_link(self):
        lines = self.dry_run("CPPFLAGS=-DPKG_CPP_MARK", "LDFLAGS=-Wl,-z,pkgldmark")
        objects = [ln for ln in lines if " -c " in ln]
        links = [ln for ln in lines if " -c " not in ln]
        self.assertTrue(objects and links, lines)
        for ln in objects:
            self.assertIn("-DPKG_CPP_MARK", ln)
        for ln in links:  # build/postern and the unit test
            self.assertIn("-Wl,-z,pkgldmark", ln)
        self.assertTrue(any("/unit/test_buf" in ln and "-DPKG_CPP_MARK" in ln for ln in links), links)

    def test_werror_only_with_werror_1(self):
        self.assertFalse([ln for ln in self.dry_run() if "-Werror " in ln + " "])
        strict = self.dry_run("WERROR=1")
        self.assertTrue(strict and all("-Werror" in ln for ln in strict if " -c " in ln), strict)
