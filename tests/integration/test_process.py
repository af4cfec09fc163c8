"""The process: SIGHUP (certificate swap under an established session, new
settings, a bad config refused), SIGTERM/SIGINT drain, SIGUSR1 log reopen,
pidfile, privilege drop, log levels."""

import os
import pwd
import shutil
import signal
import socket
import time

import harness
from harness import (
    SLOW,
    PosternTestCase,
    Reader,
    TcpBackend,
    cert_fingerprint,
    closed_by_peer,
    env,
    free_port,
    imap_cmd,
    imap_login,
    peer_fingerprint,
    plain_connect,
    svc,
    tls_connect,
)


def free_low_port():
    for port in range(990, 600, -7):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    return None


def replace_file(src, dst):
    tmp = dst + ".new"
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o600)
    os.rename(tmp, dst)


class Process(PosternTestCase):
    def imaplib_session(self, port):
        c = harness.IMAP4_SSL(port)
        c.login(harness.USER, harness.PASSWORD)
        typ, data = c.select("INBOX", readonly=True)
        self.assertEqual(typ, "OK")
        return c

    def served(self, port, **kw):
        s = tls_connect(port, **kw)
        fp = peer_fingerprint(s)
        imap_cmd(imap_login(s), "z", "LOGOUT")
        s.close()
        return fp

    # ---------------------------------------------------------------- SIGHUP
    def test_sighup_swaps_certificate_keeps_session(self):
        e = env()
        p = self.postern(start=False)
        cert, key = os.path.join(p.dir, "cert.pem"), os.path.join(p.dir, "key.pem")
        replace_file(e.cert, cert)
        replace_file(e.key, key)
        p.write_config([("imaps", svc("imap", cert=cert, key=key))])
        p.start()
        port = p.port()
        c = self.imaplib_session(port)
        local_port = c.sock.getsockname()[1]
        self.assertEqual(peer_fingerprint(c.sock), cert_fingerprint(e.cert))
        # swap the certificate files, then SIGHUP
        replace_file(e.cert2, cert)
        replace_file(e.key2, key)
        p.signal(signal.SIGHUP)
        p.wait_for(who="postern", contains="configuration reloaded")
        # the established session keeps working
        self.assertEqual(c.noop()[0], "OK")
        typ, data = c.select("INBOX", readonly=True)
        self.assertEqual((typ, data), ("OK", [b"4"]))
        typ, data = c.fetch("1", "(BODY.PEEK[TEXT])")
        self.assertIn(b"This is the first message.", data[0][1])
        self.assertFalse(p.session_lines(local_port, "end"), "established session ended by SIGHUP")
        # a new connection sees the new certificate
        self.assertEqual(self.served(port), cert_fingerprint(e.cert2))
        self.assertEqual(c.noop()[0], "OK")
        c.logout()
        _, end = self.assertSessionEnd(p, local_port)
        self.assertIn(end.fields["reason"], ("client-closed", "backend-closed"), end.raw)
        self.assertEqual(len(p.find(event="listening", who="postern")), 1, "listener re-created by SIGHUP?")

    def test_sighup_new_settings(self):
        """After SIGHUP new connections use the new backend and a new service
        listens; the established session stays with the old backend."""
        b = TcpBackend(greeting=b"* OK NEW BACKEND\r\n")
        self.addCleanup(b.stop)
        imaps = svc("imap")
        p = self.postern([("imaps", imaps)])
        port = p.port()
        old = tls_connect(port)
        old_port = old.getsockname()[1]
        r = imap_login(old)
        imaps2 = dict(imaps, backend=b.address)
        extra = svc("imap", tls="off")
        p.write_config([("imaps", imaps2), ("imap-plain", extra)])
        p.signal(signal.SIGHUP)
        p.wait_for(who="postern", contains="configuration reloaded")
        new = tls_connect(port)
        self.assertEqual(Reader(new).readline(), b"* OK NEW BACKEND\r\n")
        new.close()
        p.wait_for(event="listening", who="postern", regex=r"service=imap-plain ")
        s = plain_connect(p.port("imap-plain"))
        imap_cmd(imap_login(s), "z", "LOGOUT")
        s.close()
        # the old session still talks to Dovecot
        resp = imap_cmd(r, "e", "EXAMINE INBOX")
        self.assertIn(b"* 4 EXISTS", resp)
        imap_cmd(r, "z", "LOGOUT")
        old.close()
        self.assertSessionEnd(p, old_port)

    def test_sighup_bad_config_refused(self):
        e = env()
        p = self.postern(start=False)
        cert, key = os.path.join(p.dir, "cert.pem"), os.path.join(p.dir, "key.pem")
        replace_file(e.cert, cert)
        replace_file(e.key, key)
        good = [("imaps", svc("imap", cert=cert, key=key))]
        p.write_config(good)
        p.start()
        port = p.port()
        c = self.imaplib_session(port)
        # 1. a config with an error
        p.write_config(good, {"no_such_key": "1"})
        p.signal(signal.SIGHUP)
        p.wait_for(who="postern", level="error", contains="reload refused")
        p.wait_for(regex=r"%s:\d+: " % p.conf.replace(".", r"\."))
        self.assertTrue(p.running())
        self.assertEqual(self.served(port), cert_fingerprint(e.cert))
        # 2. a good config but a certificate file that is garbage
        p.write_config(good)
        with open(cert + ".new", "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        os.rename(cert + ".new", cert)
        p.signal(signal.SIGHUP)
        p.wait_for(who="postern", level="error", contains="reload refused", count=2)
        self.assertEqual(self.served(port), cert_fingerprint(e.cert))
        # 3. a certificate that does not match its key
        replace_file(e.cert2, cert)
        p.signal(signal.SIGHUP)
        p.wait_for(who="postern", level="error", contains="reload refused", count=3)
        self.assertEqual(self.served(port), cert_fingerprint(e.cert))
        self.assertFalse(p.find(who="postern", contains="configuration reloaded"))
        # the established session never noticed
        self.assertEqual(c.noop()[0], "OK")
        # 4. fixed: reloaded
        replace_file(e.key2, key)
        p.signal(signal.SIGHUP)
        p.wait_for(who="postern", contains="configuration reloaded")
        self.assertEqual(self.served(port), cert_fingerprint(e.cert2))
        self.assertEqual(c.noop()[0], "OK")
        c.logout()

    # ---------------------------------------------------------------- SIGTERM / SIGINT
    def test_sigterm_drains_sessions(self):
        p = self.postern([("imaps", svc("imap"))], {"shutdown_timeout": "20s"})
        port = p.port()
        s = tls_connect(port)
        local_port = s.getsockname()[1]
        r = imap_login(s)
        p.signal(signal.SIGTERM)
        p.wait_for(who="postern", contains="shutting down")
        # listeners closed at once
        def refused():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except ConnectionRefusedError:
                return True
            return False

        harness.wait_until(refused, 1.0, interval=0.05, msg="the listener to refuse after SIGTERM")
        # the established session keeps working for a moment: the half
        # second is the drain under test, not a wait for something
        time.sleep(0.5)
        imap_cmd(r, "n", "NOOP")
        resp = imap_cmd(r, "e", "EXAMINE INBOX")
        self.assertIn(b"* 4 EXISTS", resp)
        self.assertTrue(p.running())
        t0 = time.monotonic()
        imap_cmd(r, "z", "LOGOUT")
        s.close()
        self.assertEqual(p.wait_exit(10), 0, p.stderr())
        self.assertLess(time.monotonic() - t0, 3 * SLOW, "postern did not exit soon after the last session ended")
        _, end = self.assertSessionEnd(p, local_port)
        self.assertIn(end.fields["reason"], ("client-closed", "backend-closed"), end.raw)
        p.wait_for(who="postern", contains="stopped")

    def test_sigterm_shutdown_timeout(self):
        p = self.postern([("imaps", svc("imap")), ("imap", svc("imap", tls="off"))], {"shutdown_timeout": "2s"})
        s = tls_connect(p.port("imaps"))
        s_port = s.getsockname()[1]
        imap_login(s)
        q = plain_connect(p.port("imap"))
        q_port = q.getsockname()[1]
        imap_login(q)
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(15), 0, p.stderr())
        took = time.monotonic() - t0
        self.assertGreater(took, 1.8, "exited before shutdown_timeout with a session open")
        self.assertLess(took, 5 * SLOW, "took %.1fs for shutdown_timeout = 2s" % took)
        for sock, port, name in ((s, s_port, "imaps"), (q, q_port, "imap")):
            self.assertTrue(closed_by_peer(sock, 2))
            sock.close()
            self.assertSessionEnd(p, port, reason="shutdown", service=name)
        p.wait_for(who="postern", contains="stopped")

    def test_signal_right_after_pidfile(self):
        """The pidfile says "ready": SIGHUP or SIGUSR1 sent the moment it
        appears (logrotate, systemd reload) must not kill postern."""
        for sig in (signal.SIGHUP, signal.SIGUSR1) * 5:
            with self.subTest(signal=sig.name):
                p = self.postern(start=False)
                p.write_config([("imaps", svc("imap"))], {"user": "nobody", "group": "nogroup"})
                os.chown(p.dir, pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid)
                p.start(wait=False)
                deadline = time.monotonic() + 10 * SLOW
                while not os.path.exists(p.pidfile):  # busy-wait: react within microseconds
                    if time.monotonic() > deadline or p.proc.poll() is not None:
                        self.fail("no pidfile:\n" + p.stderr())
                p.signal(sig)
                # a reload as nobody is refused (the key is root's), which is fine here
                handled = "reload" if sig == signal.SIGHUP else "log file reopened"
                harness.wait_until(lambda: not p.running() or p.find(who="postern", contains=handled), 5,
                                   msg="postern to log %r or die" % handled)
                if not p.running():
                    p.exit_observed = True  # reported here, not again by the cleanup
                    self.fail("postern died of %s sent right after its pidfile appeared (status %s)"
                              % (sig.name, p.proc.returncode))
                self.served(p.port())
                p.stop()

    def test_sigpipe_ignored(self):
        """OpenSSL writes to sockets with write(2): a peer that is gone must
        not kill postern with SIGPIPE (ignored, or caught)."""
        p = self.postern([("imaps", svc("imap"))])
        st = p.status()
        bit = 1 << (signal.SIGPIPE - 1)
        self.assertTrue(int(st["SigIgn"], 16) & bit or int(st["SigCgt"], 16) & bit,
                        "SIGPIPE neither ignored nor caught: SigIgn=%s SigCgt=%s" % (st["SigIgn"], st["SigCgt"]))
        # a client that closes with a big response in flight; postern goes on
        s = tls_connect(p.port())
        r = imap_login(s)
        imap_cmd(r, "s", "EXAMINE INBOX")
        local_port = s.getsockname()[1]
        s.sendall(b"f FETCH %d BODY.PEEK[]\r\n" % harness.BIG_SEQ)
        r.read(100000)
        s.close()
        p.wait_session_end(local_port)  # the write to the closed socket is behind us
        self.assertTrue(p.running())
        self.served(p.port())

    def test_sigint_stops(self):
        p = self.postern([("imaps", svc("imap"))])
        self.served(p.port())
        p.signal(signal.SIGINT)
        self.assertEqual(p.wait_exit(10), 0, p.stderr())
        p.wait_for(who="postern", contains="stopped")
        self.assertFalse(os.path.exists(p.pidfile))

    # ---------------------------------------------------------------- files
    def test_pidfile(self):
        p = self.postern([("imaps", svc("imap"))])
        with open(p.pidfile) as f:
            self.assertEqual(f.read().strip(), str(p.pid))
        # postern runs as root here without user/group: a warning says so
        self.assertTrue(p.find(who="postern", level="warn", contains="root"),
                        "no warning about running as root:\n" + p.stderr())
        p.stop()
        self.assertFalse(os.path.exists(p.pidfile), "pidfile not removed at exit")

    def test_sigusr1_reopens_log(self):
        p = self.postern(start=False)
        log = os.path.join(p.dir, "postern.log")
        p.write_config([("imaps", svc("imap"))], {"log": log})
        p.start()
        p.wait_for(event="listening", who="postern")
        self.assertNotIn("listening", p.stderr(), "log = FILE still logs to stderr")
        self.served(p.port())  # (signals right at startup: test_signal_right_after_pidfile)
        os.rename(log, log + ".1")
        p.signal(signal.SIGUSR1)
        harness.wait_until(lambda: os.path.exists(log), 5, msg="a new log file after SIGUSR1")
        s = tls_connect(p.port())
        local_port = s.getsockname()[1]
        imap_cmd(imap_login(s), "z", "LOGOUT")
        s.close()
        p.wait_session_end(local_port)  # reads the new file (p.logfile)
        with open(log + ".1") as f:
            old = f.read()
        self.assertIn("listening", old)
        self.assertNotIn(":%d start" % local_port, old)

    def test_log_level_warn(self):
        p = self.postern([("imaps", svc("imap")), ("down", svc("imap", backend="127.0.0.1:%d" % free_port()))],
                         {"log_level": "warn"})
        self.served(p.port("imaps"))
        s = tls_connect(p.port("down"))
        Reader(s).readline()
        s.close()
        p.wait_for(level="warn", contains="unreachable")
        p.stop()  # every line postern would write is written, shutdown's too
        self.assertFalse([ln for ln in p.lines() if ln.level in ("info", "debug")], p.stderr())

    # ---------------------------------------------------------------- privileges
    def test_privilege_drop(self):
        nobody = pwd.getpwnam("nobody")
        if os.getuid() != 0:
            self.skipTest("needs root")
        low = free_low_port()
        if low is None:
            self.skipTest("no free port below 1024")
        p = self.postern(start=False)
        os.chown(p.dir, nobody.pw_uid, nobody.pw_gid)  # so it can remove its pidfile
        # a privileged port: binding must happen before the drop
        p.write_config([("imaps", svc("imap")), ("low", svc("imap", port=low))],
                       {"user": "nobody", "group": "nogroup"})
        # the key is readable by root only: it must be loaded before the drop
        self.assertEqual(os.stat(env().key).st_mode & 0o077, 0)
        p.start()
        # the master keeps root to read keys at reload and serves nothing;
        # its worker, which serves, drops to the user before it does
        self.assertEqual(p.status()["Uid"].split(), ["0"] * 4)
        pid = int(p.wait_for(regex=r"worker 1 started pid=\d+")[0].raw.rsplit("=", 1)[1])
        p.wait_for(contains="running as uid=%d" % nobody.pw_uid)
        with open("/proc/%d/status" % pid) as f:
            st = dict(ln.rstrip("\n").split(":\t", 1) for ln in f if ":\t" in ln)
        self.assertEqual(st["Uid"].split(), [str(nobody.pw_uid)] * 4, st["Uid"])
        self.assertEqual(st["Gid"].split(), [str(nobody.pw_gid)] * 4, st["Gid"])
        self.assertNotIn("0", st["Groups"].split(), "supplementary group root kept: " + st["Groups"])
        self.served(p.port("imaps"))
        self.served(p.port("low"))
        p.stop()
        self.assertFalse(os.path.exists(p.pidfile))

    # ---------------------------------------------------------------- syslog
    def test_log_syslog(self):
        """log = syslog: lines go to /dev/log (a datagram socket of ours,
        mounted as /dev/log in a private mount namespace), not to stderr."""
        p, rx, _ = self.postern_with_dev_log([("imaps", svc("imap"))], {"log": "syslog"})
        self.served(p.port())
        got = []
        rx.settimeout(0.2)
        deadline = time.monotonic() + 5 * SLOW
        while time.monotonic() < deadline and not any(" end " in g for g in got):
            try:
                got.append(rx.recv(65536).decode("utf-8", "replace"))
            except socket.timeout:
                pass
        text = "\n".join(got)
        self.assertIn("listening", text)
        self.assertRegex(text, r"start tls=TLSv1\.3 ")
        self.assertRegex(text, r"end in=\d+ out=\d+ ")
        self.assertRegex(text, r"^<\d+>", "not syslog datagrams: %r" % got[:2])
        self.assertNotIn("listening", p.stderr())
        self.assertNotIn(" start ", p.stderr())
