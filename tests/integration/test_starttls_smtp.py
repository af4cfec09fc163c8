"""SMTP with `tls = starttls` (issue 3): postern offers STARTTLS in front of
a plaintext aiosmtpd (and scripted fake backends that advertise AUTH,
PIPELINING, CHUNKING and their own STARTTLS): curl, openssl s_client,
smtplib; EHLO rewriting before and after TLS (P1, P2), the greeting (S15),
MAIL/RCPT/DATA/BDAT/AUTH refused and not forwarded (S8), EHLO required
again after TLS (S9), second STARTTLS (S10), parser edge cases (S11),
EHLO+STARTTLS pipelined (S12) and reply order under pipelining. Item ids: tests/security-checklist.md."""

import os
import smtplib
import subprocess
import time

from harness import SLOW, PipeWatch, client_context, curl, env, read_to_close, wait_delivery
from starttls_util import (
    LONG_LINE,
    SMTP_530,
    SMTP_ACTIVE,
    SMTP_ARGS,
    SMTP_EHLO_FIRST,
    SMTP_READY,
    SMTP_TOO_LONG,
    Client,
    StarttlsCase,
    check_smtp_multiline,
    direct_greeting,
    sasl_plain,
    smtp_keywords,
    smtp_reply,
    starttls_svc,
)

_DIRECT = {}


def aiosmtpd_ehlo():
    """aiosmtpd's own EHLO reply (lines), asked directly."""
    if "ehlo" not in _DIRECT:
        c = Client(env().smtp_port)
        try:
            smtp_reply(c)
            c.send(b"EHLO direct.test\r\n")
            _DIRECT["ehlo"] = smtp_reply(c)
            c.send(b"QUIT\r\n")
            smtp_reply(c)
        finally:
            c.close()
    return _DIRECT["ehlo"]


def delivered(marker):
    return [(m, c) for m, c in env().smtp_messages() if marker in c]


class SmtpStarttls(StarttlsCase):
    @classmethod
    def make_services(cls):
        cls.fb = cls.fake("smtp")
        cls.fb_last_starttls = cls.fake("smtp", ehlo=["8BITMIME", "AUTH PLAIN", "STARTTLS"])
        cls.fb_bare = cls.fake("smtp", ehlo=[])
        return [
            ("smtp", starttls_svc("smtp")),
            ("smtpnoreq", starttls_svc("smtp", require_tls="no")),
            ("fsmtp", starttls_svc("smtp", backend=cls.fb.address)),
            ("fsmtp2", starttls_svc("smtp", backend=cls.fb_last_starttls.address)),
            ("fsmtp3", starttls_svc("smtp", backend=cls.fb_bare.address)),
        ]

    def connect(self, name="smtp"):
        c = self.client(name)
        greet = smtp_reply(c)
        self.assertTrue(greet[0].startswith(b"220"), greet)
        return c, greet

    def ehlo(self, c, name="client.test"):
        c.send("EHLO %s\r\n" % name)
        lines = smtp_reply(c)
        if len(lines) > 1:
            check_smtp_multiline(self, lines)
        else:
            self.assertTrue(lines[0].startswith(b"250 "), lines)
        return lines

    def do_starttls(self, c, cmd=b"STARTTLS\r\n"):
        self.assertEqual(c.cmd(cmd), SMTP_READY + b"\r\n")
        c.starttls()

    def assertPreTlsEhlo(self, lines, backend):
        """backend: the backend's EHLO reply lines."""
        check_smtp_multiline(self, lines)
        self.assertEqual(lines[0][4:], backend[0][4:])
        kws = smtp_keywords(lines)
        self.assertEqual(kws.count("STARTTLS"), 1, lines)
        self.assertFalse([k for k in kws if k.startswith("AUTH")], lines)
        want = {ln[4:] for ln in backend[1:] if not ln[4:].upper().startswith((b"AUTH", b"STARTTLS"))} | {b"STARTTLS"}
        self.assertEqual({ln[4:] for ln in lines[1:]}, want, "pre-TLS EHLO %r vs backend %r" % (lines, backend))

    def assertPostTlsEhlo(self, lines, backend):
        if len(lines) > 1:
            check_smtp_multiline(self, lines)
        self.assertNotIn("STARTTLS", smtp_keywords(lines), lines)
        want = {ln[4:] for ln in backend[1:] if ln[4:].upper() != b"STARTTLS"}
        self.assertEqual({ln[4:] for ln in lines[1:]}, want, "post-TLS EHLO %r vs backend %r" % (lines, backend))

    def fake_ehlo(self, fb):
        ext = ["fake.test"] + list(fb.ehlo)
        return [("250%s%s" % ("-" if i < len(ext) - 1 else " ", x)).encode() for i, x in enumerate(ext)]

    # ------------------------------------------------------------ real clients
    def test_curl_send(self):
        port = self.port("smtp")
        marker = b"curl-starttls-%d" % time.monotonic_ns()
        msg = os.path.join(self.p.dir, "mail-%d.txt" % time.monotonic_ns())
        with open(msg, "wb") as f:
            f.write(b"From: a@example.test\r\nTo: b@example.test\r\nSubject: via curl starttls\r\n\r\n" + marker + b"\r\n")
        r = curl(["--ssl-reqd", "--resolve", "localhost:%d:127.0.0.1" % port, "smtp://localhost:%d" % port,
                  "--mail-from", "a@example.test", "--mail-rcpt", "b@example.test", "-T", msg])
        self.assertEqual(r.returncode, 0, r.stderr)
        meta, content = wait_delivery(marker)
        self.assertEqual(meta["mail_from"], "a@example.test")
        self.assertEqual(meta["rcpt_tos"], ["b@example.test"])
        self.assertIn(b"Subject: via curl starttls", content)

    def test_openssl_s_client(self):
        port = self.port("smtp")
        marker = "s-client-starttls-%d" % time.monotonic_ns()
        # each command with the reply to wait for: aiosmtpd offers no PIPELINING
        lines = [("EHLO client.test", rb"^250 "), ("MAIL FROM:<sc@example.test>", rb"^250 "),
                 ("RCPT TO:<rc@example.test>", rb"^250 "), ("DATA", rb"^354 "),
                 ("Subject: s_client\n\n%s\n." % marker, rb"^250 "), ("QUIT", rb"^221 ")]
        proc = subprocess.Popen(
            ["openssl", "s_client", "-starttls", "smtp", "-connect", "127.0.0.1:%d" % port,
             "-servername", "localhost", "-CAfile", env().ca, "-verify_return_error",
             "-verify_hostname", "localhost", "-crlf", "-ign_eof", "-nocommands"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            watch = PipeWatch(proc.stdout)
            since = 0  # s_client reads its input only once TLS is up
            for ln, reply in lines:
                proc.stdin.write(ln.encode() + b"\n")
                proc.stdin.flush()
                since = watch.wait(reply, since).end()
            out, err = proc.communicate(timeout=20 * SLOW)
            out = bytes(watch.data) + out
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out = out.decode("utf-8", "replace")
        self.assertEqual(proc.returncode, 0, out + err.decode())
        self.assertIn("Verify return code: 0 (ok)", out)
        self.assertRegex(out, r"Protocol\s*:\s*TLSv1\.3")
        self.assertRegex(out, r"(?m)^250 2\.0\.0 Ok: queued")
        self.assertRegex(out, r"(?m)^221 ")
        meta, content = wait_delivery(marker.encode())
        self.assertEqual(meta["rcpt_tos"], ["rc@example.test"])

    def test_smtplib(self):
        marker = b"smtplib-starttls-%d" % time.monotonic_ns()
        msg = b"From: s@example.test\r\nTo: r@example.test\r\nSubject: smtplib starttls\r\n\r\n" + marker + b"\r\n"
        s = smtplib.SMTP("127.0.0.1", self.port("smtp"), timeout=10 * SLOW)
        try:
            code, _ = s.ehlo("client.test")
            self.assertEqual(code, 250)
            self.assertTrue(s.has_extn("starttls"))
            self.assertFalse(s.has_extn("auth"))
            local_port = s.sock.getsockname()[1]
            code, resp = s.starttls(context=client_context())
            self.assertEqual((code, resp), (220, b"2.0.0 Ready to start TLS"))
            code, _ = s.ehlo("client.test")
            self.assertEqual(code, 250)
            self.assertFalse(s.has_extn("starttls"))
            self.assertTrue(s.has_extn("8bitmime"))
            self.assertEqual(s.sendmail("s@example.test", ["r@example.test"], msg), {})
            s.quit()
        finally:
            s.close()
        meta, content = wait_delivery(marker)
        self.assertEqual(content, msg)
        self.assertStarttlsLogged(local_port)
        self.assertSessionEnd(self.p, local_port)

    # ------------------------------------------------------------ capabilities
    def test_S15_greeting_unchanged(self):
        direct = direct_greeting(env().smtp_port)
        c, greet = self.connect()
        self.assertEqual(greet, [direct.rstrip(b"\r\n")])
        c, greet = self.connect("fsmtp")
        self.assertEqual(greet, [b"220 fake.test ESMTP fake"])

    def test_P1_P2_ehlo_before_and_after_tls(self):
        backend = aiosmtpd_ehlo()
        c, greet = self.connect()
        self.assertPreTlsEhlo(self.ehlo(c), backend)
        self.do_starttls(c)
        lines = self.ehlo(c)
        self.assertPostTlsEhlo(lines, backend)
        self.assertEqual(lines[0][4:], b"smtp.test")
        self.assertEqual(c.cmd(b"QUIT\r\n")[:3], b"221")
        self.assertStarttlsLogged(c.local_port)
        c.close()
        self.assertSessionEnd(self.p, c.local_port)

    def test_P1_backend_auth_pipelining_chunking_own_starttls(self):
        """AUTH lines (both spellings) hidden before TLS and back after;
        the backend's own STARTTLS never twice and gone after TLS;
        PIPELINING, CHUNKING, 8BITMIME, SIZE unchanged."""
        backend = self.fake_ehlo(self.fb)
        c, greet = self.connect("fsmtp")
        lines = self.ehlo(c, "fake.test")
        self.assertPreTlsEhlo(lines, backend)
        for kw in (b"PIPELINING", b"CHUNKING", b"8BITMIME", b"SIZE 1000000"):
            self.assertIn(kw, [ln[4:] for ln in lines])
        self.do_starttls(c)
        lines = self.ehlo(c, "fake.test")
        self.assertPostTlsEhlo(lines, backend)
        for kw in (b"AUTH PLAIN LOGIN", b"AUTH=PLAIN LOGIN", b"PIPELINING", b"CHUNKING", b"8BITMIME"):
            self.assertIn(kw, [ln[4:] for ln in lines])

    def test_P1_P2_ehlo_edges_well_formed(self):
        """The backend's STARTTLS (or AUTH) on the last line, and a backend
        whose EHLO reply is one line: every rewritten reply stays a
        well-formed 250-…/250 … reply."""
        for fb, name in ((self.fb_last_starttls, "fsmtp2"), (self.fb_bare, "fsmtp3")):
            with self.subTest(service=name):
                backend = self.fake_ehlo(fb)
                c, greet = self.connect(name)
                self.assertPreTlsEhlo(self.ehlo(c, "fake.test"), backend)
                self.do_starttls(c)
                self.assertPostTlsEhlo(self.ehlo(c, "fake.test"), backend)

    # ------------------------------------------------------------ S8
    def test_S8_commands_refused_not_delivered(self):
        marker = b"s8-%d" % time.monotonic_ns()
        c, greet = self.connect()
        self.ehlo(c)
        for cmd in (b"MAIL FROM:<s8@example.test>", b"RCPT TO:<r8@example.test>", b"DATA", b"BDAT 0 LAST",
                    b"AUTH PLAIN " + sasl_plain("alice", "secret").encode(), b"AUTH LOGIN", b"mail from:<x@y>",
                    b"Rcpt To:<x@y>"):
            with self.subTest(cmd=cmd):
                self.assertEqual(c.cmd(cmd + b"\r\n"), SMTP_530 + b"\r\n")
        # had MAIL/RCPT/DATA gone through, this would be a message body and
        # be delivered; as it is, aiosmtpd sees two unknown commands
        c.send(b"Subject: " + marker + b"\r\n.\r\n")
        for _ in range(2):
            self.assertEqual(smtp_reply(c)[-1][:1], b"5", "body line not treated as a command")
        self.assertEqual(c.cmd(b"NOOP\r\n")[:3], b"250")
        self.assertEqual(c.cmd(b"QUIT\r\n")[:3], b"221")
        c.close()
        self.assertSessionEnd(self.p, c.local_port)
        time.sleep(0.2 * SLOW)  # a delivery that must not happen has no event: time for one to show
        self.assertEqual(delivered(marker), [])

    def test_S8_never_forwarded(self):
        n = self.fb.count()
        c, greet = self.connect("fsmtp")
        self.ehlo(c, "x")
        for cmd in (b"MAIL FROM:<a@b>", b"RCPT TO:<c@d>", b"DATA", b"BDAT 0 LAST", b"AUTH PLAIN AGFsaWNlAHNlY3JldA==",
                    b"AUTH LOGIN", b"auth xoauth2 dXNlcj1h"):
            with self.subTest(cmd=cmd):
                self.assertEqual(c.cmd(cmd + b"\r\n"), SMTP_530 + b"\r\n")
        self.assertEqual(c.cmd(b"NOOP\r\n"), b"250 2.0.0 NOOP ok\r\n")
        self.assertEqual(self.fb.conn(n).data(), b"EHLO x\r\nNOOP\r\n")

    def test_S8_require_tls_no_forwards_mail(self):
        c, greet = self.connect("smtpnoreq")
        lines = self.ehlo(c)
        self.assertIn("STARTTLS", smtp_keywords(lines))
        self.assertEqual(c.cmd(b"MAIL FROM:<n@example.test>\r\n"), b"250 OK\r\n")
        self.assertEqual(c.cmd(b"RSET\r\n")[:3], b"250")

    # ------------------------------------------------------------ S9, S10, S11, S12
    def test_S9_ehlo_required_after_tls(self):
        n = self.fb.count()
        c, greet = self.connect("fsmtp")
        self.ehlo(c, "before.test")
        self.do_starttls(c)
        for cmd in (b"MAIL FROM:<a@b>", b"RCPT TO:<c@d>", b"DATA", b"AUTH PLAIN AGFsaWNlAHNlY3JldA==", b"mail from:<a@b>"):
            with self.subTest(cmd=cmd):
                self.assertEqual(c.cmd(cmd + b"\r\n"), SMTP_EHLO_FIRST + b"\r\n")
        rec = self.fb.conn(n).data()
        self.assertEqual(rec, b"EHLO before.test\r\n", "forwarded after TLS before EHLO: %r" % rec)
        lines = self.ehlo(c, "after.test")
        self.assertIn("AUTH", smtp_keywords(lines))
        self.assertEqual(c.cmd(b"MAIL FROM:<a@b>\r\n"), b"250 2.0.0 MAIL ok\r\n")
        self.assertEqual(self.fb.conn(n).data(), b"EHLO before.test\r\nEHLO after.test\r\nMAIL FROM:<a@b>\r\n")

    def test_S9_helo_also_resets(self):
        c, greet = self.connect()
        self.ehlo(c)
        self.do_starttls(c)
        self.assertEqual(c.cmd(b"MAIL FROM:<a@example.test>\r\n"), SMTP_EHLO_FIRST + b"\r\n")
        self.assertEqual(c.cmd(b"HELO client.test\r\n")[:4], b"250 ")
        self.assertEqual(c.cmd(b"MAIL FROM:<a@example.test>\r\n"), b"250 OK\r\n")

    def test_S10_second_starttls_rejected(self):
        c, greet = self.connect()
        self.ehlo(c)
        self.do_starttls(c)
        self.assertEqual(c.cmd(b"STARTTLS\r\n"), SMTP_ACTIVE + b"\r\n")
        self.ehlo(c)
        self.assertEqual(c.cmd(b"starttls\r\n"), SMTP_ACTIVE + b"\r\n")
        self.assertEqual(c.cmd(b"NOOP\r\n")[:3], b"250")

    def test_S11_case_spaces_arguments(self):
        for cmd in (b"starttls\r\n", b"StartTLS   \r\n", b"STARTTLS \r\n"):
            with self.subTest(cmd=cmd):
                c, greet = self.connect()
                self.ehlo(c)
                self.do_starttls(c, cmd)
                self.assertPostTlsEhlo(self.ehlo(c, "direct.test"), aiosmtpd_ehlo())
        c, greet = self.connect()
        self.ehlo(c)
        self.assertEqual(c.cmd(b"STARTTLS foo\r\n"), SMTP_ARGS + b"\r\n")
        self.assertEqual(c.cmd(b"starttls a b\r\n"), SMTP_ARGS + b"\r\n")
        self.do_starttls(c)
        self.ehlo(c)

    def test_S11_bare_lf_and_nul(self):
        marker = b"s11-%d" % time.monotonic_ns()
        c, greet = self.connect()
        self.ehlo(c)
        line = c.cmd(b"MAIL FROM:<" + marker + b"@example.test>\n")
        self.assertEqual(line[:1], b"5", "bare-LF MAIL before TLS: %r" % line)
        line = c.cmd(b"RCPT TO:<r@example.test>\n")
        self.assertEqual(line[:1], b"5", "bare-LF RCPT before TLS: %r" % line)
        for raw in (b"NO\x00OP\r\n", b"STARTTLS\x00\r\n", b"MAIL FROM:<a\x00@b>\r\n"):
            with self.subTest(raw=raw):
                line = c.cmd(raw)
                self.assertEqual(line[:1], b"5", line)
        line = c.cmd(b"STARTTLS\n")
        self.assertTrue(line == SMTP_READY + b"\r\n" or line[:1] == b"5", line)
        if line[:3] == b"220":
            c.starttls()
        else:
            self.do_starttls(c)
        self.ehlo(c)
        self.assertEqual(c.cmd(b"QUIT\r\n")[:3], b"221")
        self.assertEqual(delivered(marker), [])

    def test_S11_overlong_line(self):
        c, greet = self.connect()
        try:
            c.send(b"NOOP " + b"x" * LONG_LINE)
        except OSError:
            pass
        data = read_to_close(c.sock, 5 * SLOW)
        self.assertIsNotNone(data, "connection not closed after a > 64 KiB line")
        c.close()
        self.assertEqual(data, SMTP_TOO_LONG + b"\r\n")
        self.assertSessionEnd(self.p, c.local_port)

    def test_S12_ehlo_starttls_pipelined(self):
        c, greet = self.connect()
        c.send(b"EHLO client.test\r\nSTARTTLS\r\n")
        lines = smtp_reply(c)
        self.assertPreTlsEhlo(lines, aiosmtpd_ehlo())
        self.assertEqual(c.line(), SMTP_READY + b"\r\n")
        c.starttls()
        self.assertPostTlsEhlo(self.ehlo(c, "direct.test"), aiosmtpd_ehlo())
        self.assertEqual(c.cmd(b"NOOP\r\n")[:3], b"250")

    def test_pipelined_replies_keep_order(self):
        """Pre-TLS pipelined group mixing forwarded and refused commands:
        the replies come in command order."""
        c, greet = self.connect()
        c.send(b"EHLO client.test\r\nMAIL FROM:<a@example.test>\r\nNOOP\r\nRCPT TO:<b@example.test>\r\nNOOP\r\n")
        self.assertPreTlsEhlo(smtp_reply(c), aiosmtpd_ehlo())
        self.assertEqual(c.line(), SMTP_530 + b"\r\n")
        self.assertEqual(c.line(), b"250 OK\r\n")
        self.assertEqual(c.line(), SMTP_530 + b"\r\n")
        self.assertEqual(c.line(), b"250 OK\r\n")
        self.assertEqual(c.quiet(0.2), b"")
