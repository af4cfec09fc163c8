"""The fail2ban filter of packaging/fail2ban matches postern's own log:
Debian's real `fail2ban-regex` reads what postern wrote while real clients
(imaplib, a raw POP3 socket) failed to log in to the run's real Dovecot.

postern reads the protocol (and logs logins) where TLS is involved; the
services here terminate implicit TLS. The failing client comes from 127.0.0.9, a loopback address of its own;
successful logins come from it and from 127.0.0.1. The filter must find
127.0.0.9 exactly once per refused login and nothing else, in the text log
file (`log = FILE`) and in the syslog form: the datagrams postern sent to
/dev/log (ours, in a private mount namespace), written out as a syslog
daemon (rsyslog's traditional file format) writes them to mail.log.
"""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import unittest

from harness import PASSWORD, USER, PosternTestCase, Reader, imap_cmd, svc, tls_connect, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILTER = os.path.join(ROOT, "packaging", "fail2ban", "filter.d", "postern.conf")
COMMON = "/etc/fail2ban/filter.d/common.conf"
BAD_PW = "Wr0ng-f2b-PW-5521"
SOURCE = "127.0.0.9"
# glibc's syslog(3) datagram: "<PRI>Mmm dd hh:mm:ss postern[PID]: MSG"
DGRAM_RE = re.compile(r"^<\d+>([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) (postern\[\d+\]: .*)$", re.S)


def pop3_pass(port, source, password):
    """USER alice, PASS password over POP3 from SOURCE: PASS's reply."""
    s = tls_connect(port, source=source, timeout=20.0)
    try:
        r = Reader(s)
        r.readline()  # greeting
        r.send("USER %s\r\nPASS %s\r\n" % (USER, password))
        r.readline()
        return r.readline()
    finally:
        s.close()


def imap_login(port, source, password):
    """LOGIN alice password over IMAP from SOURCE: the tagged reply."""
    s = tls_connect(port, source=source, timeout=20.0)
    try:
        r = Reader(s)
        r.readline()  # greeting
        return imap_cmd(r, "a", "LOGIN %s %s" % (USER, password), ok=False).split(b"\r\n")[-2]
    finally:
        s.close()


class Fail2banFilter(PosternTestCase):
    FAILS = 3  # refused logins from SOURCE: 2 IMAP, 1 POP3

    def setUp(self):
        super().setUp()
        if not shutil.which("fail2ban-regex") or not os.path.exists(COMMON):
            self.fail("fail2ban is not installed (packaging/deps.sh installs it)")
        # the filter as installed: beside fail2ban's common.conf
        self.confdir = tempfile.mkdtemp(prefix="f2b-", dir=self.env.tmp)
        os.makedirs(os.path.join(self.confdir, "filter.d"))
        shutil.copy(FILTER, os.path.join(self.confdir, "filter.d"))
        os.symlink(COMMON, os.path.join(self.confdir, "filter.d", "common.conf"))

    def services(self):
        return [("imap", svc("imap")), ("pop3", svc("pop3"))]

    def logins(self, p):
        """FAILS refused logins from SOURCE, one accepted from SOURCE and
        two from 127.0.0.1; returns once postern has logged all six."""
        for _ in range(2):
            self.assertTrue(imap_login(p.port("imap"), SOURCE, BAD_PW).startswith(b"a NO"))
        self.assertTrue(pop3_pass(p.port("pop3"), SOURCE, BAD_PW).startswith(b"-ERR"))
        self.assertTrue(imap_login(p.port("imap"), SOURCE, PASSWORD).startswith(b"a OK"))
        self.assertTrue(imap_login(p.port("imap"), "127.0.0.1", PASSWORD).startswith(b"a OK"))
        self.assertTrue(pop3_pass(p.port("pop3"), "127.0.0.1", PASSWORD).startswith(b"+OK"))

    def fail2ban_regex(self, log):
        """The address of every line the filter matched in LOG."""
        filt = os.path.join(self.confdir, "filter.d", "postern.conf")
        r = subprocess.run(["fail2ban-regex", "-r", "-o", "ip", log, filt], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout.decode(errors="replace"))
        return r.stdout.decode().split()

    def assertMatchesFailuresOnly(self, text, log):
        oks = re.findall(r" auth user=alice result=ok$", text, re.M)
        self.assertEqual(len(oks), 3, "the accepted logins must be in the log:\n" + text[-3000:])
        self.assertEqual(self.fail2ban_regex(log), [SOURCE] * self.FAILS, text[-3000:])

    def test_text_log_file(self):
        log = os.path.join(tempfile.mkdtemp(prefix="f2b-log-", dir=self.env.tmp), "postern.log")
        p = self.postern(self.services(), {"log": log})
        self.logins(p)
        wait_until(lambda: len(p.find(event="auth")) >= 6, timeout=10.0, msg="6 auth lines")
        self.assertMatchesFailuresOnly(p.log_text(), log)

    def test_syslog_form(self):
        p, rx, _ = self.postern_with_dev_log(self.services(), {"log": "syslog"})
        # read while the clients run: a datagram socket queues only a few
        # (net.unix.max_dgram_qlen), and postern drops what cannot go at once
        lines, done = [], threading.Event()

        def read():
            rx.settimeout(0.1)
            while not done.is_set():
                try:
                    d = rx.recv(65536).decode("utf-8", "replace")
                except socket.timeout:
                    continue
                m = DGRAM_RE.match(d)
                lines.append("%s mail %s" % m.groups() if m else "not a syslog(3) datagram: %r" % d)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            self.logins(p)
            wait_until(lambda: sum(" auth " in ln for ln in lines) >= 6, timeout=10.0, msg="6 auth datagrams",
                       detail=lambda: lines[-10:])
        finally:
            done.set()
            reader.join()
        log = os.path.join(p.dir, "mail.log")  # as rsyslog writes mail.log
        with open(log, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.assertMatchesFailuresOnly("\n".join(lines), log)

if __name__ == "__main__":
    unittest.main()
