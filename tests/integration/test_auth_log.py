"""The auth line: every login attempt relayed to a server logs one `info`
line with the client's address, the user name and the server's verdict,
without `log_commands`, and counts it in `postern_auth_total`:

    2026-11-21T22:40:01.140Z info imaps#a3f9 198.51.100.7:51234 auth user=alice result=failed

Real clients (imaplib, poplib, smtplib) through postern to the run's real
Dovecot (IMAP LOGIN and AUTHENTICATE, POP3 USER/PASS and AUTH) and to a real
Postfix checking SMTP AUTH with a real Dovecot's auth service. The user
name comes from the command or from the SASL response (PLAIN's
authentication identity, LOGIN's first response), escaped so that no name
can add a field; the password is never written.
"""

import base64
import imaplib
import poplib
import smtplib
import tempfile

from harness import IMAP4_SSL, PASSWORD, POP3_SSL, SMTP_SSL, USER, env, free_port, svc, wait_until
from postfix_util import Postfix, SaslDovecot
from starttls_util import StarttlsCase
from test_observability import scrape

BAD_PW = "Wr0ng-uniq-PW-9132"  # no account has it: every login with it fails


def b64(data):
    return base64.b64encode(data).decode()


class AuthLog(StarttlsCase):
    @classmethod
    def make_services(cls):
        cls.mport = free_port()
        cls.GLOBAL = {"metrics": "127.0.0.1:%d" % cls.mport}
        cls.sasl = SaslDovecot.shared()
        cls.pf = Postfix(tempfile.mkdtemp(prefix="postfix-sasl-", dir=env().tmp), main=cls.sasl.main())
        cls._fakes.append(cls.pf)
        cls.pf.start()
        return [
            ("imaps", svc("imap")),
            ("pop3s", svc("pop3")),
            ("smtps", svc("smtp", backend=cls.pf.address)),
            ("counted", svc("imap")),
        ]

    def auth_lines(self, port, service, n):
        """The first n auth lines of the session from client port PORT."""

        def got():
            lines = self.p.session_lines(port, event="auth", service=service)
            return len(lines) >= n and lines

        lines = wait_until(got, timeout=10.0, msg="%d auth lines" % n, detail=lambda: "\n" + self.p.log_text()[-3000:])
        self.assertEqual(len(lines), n, lines)
        return lines

    def assertVerdicts(self, port, service, want):
        """The session from PORT logged one auth line per (user, result)
        of WANT, in order, and no secret anywhere."""
        lines = self.auth_lines(port, service, len(want))
        for line, (user, result) in zip(lines, want):
            self.assertAuth(line, port, user, result)
        self.assertNoSecret()

    def assertAuth(self, line, port, user, result):
        self.assertEqual(line.level, "info", line)
        self.assertEqual(line.addr, "127.0.0.1:%d" % port, line)
        self.assertEqual(line.msg, "auth user=%s result=%s" % (user, result), line)

    def assertNoSecret(self):
        text = self.p.log_text()
        for secret in (BAD_PW, PASSWORD, b64(b"\0alice\0" + BAD_PW.encode()), b64(BAD_PW.encode())):
            self.assertNotIn(secret, text)

    # ------------------------------------------------------------ IMAP

    def test_imap_login_failed_then_ok(self):
        with IMAP4_SSL(self.port("imaps")) as c:
            port = c.sock.getsockname()[1]
            with self.assertRaises(imaplib.IMAP4.error):
                c.login(USER, BAD_PW)
            c.login(USER, PASSWORD)
            c.logout()
        self.assertVerdicts(port, "imaps", [("alice", "failed"), ("alice", "ok")])

    def test_imap_authenticate_plain_names_the_user(self):
        with IMAP4_SSL(self.port("imaps")) as c:
            port = c.sock.getsockname()[1]
            with self.assertRaises(imaplib.IMAP4.error):
                c.authenticate("PLAIN", lambda _: b"\0alice\0" + BAD_PW.encode())
            with self.assertRaises(imaplib.IMAP4.error):  # Dovecot knows no such mechanism
                c.authenticate("X-NONE", lambda _: b"whatever")
            c.authenticate("PLAIN", lambda _: b"\0alice\0" + PASSWORD.encode())
        # X-NONE: no user name to be had
        self.assertVerdicts(port, "imaps", [("alice", "failed"), ("-", "failed"), ("alice", "ok")])

    def test_user_name_cannot_forge_a_field(self):
        with IMAP4_SSL(self.port("imaps")) as c:
            port = c.sock.getsockname()[1]
            typ, _ = c._simple_command("LOGIN", c._quote("x result=ok\tz"), c._quote(BAD_PW))
            self.assertEqual(typ, "NO")
        (line,) = self.auth_lines(port, "imaps", 1)
        self.assertAuth(line, port, r"x\x20result=ok\x09z", "failed")
        self.assertEqual(line.fields["result"], "failed")

    # ------------------------------------------------------------ POP3

    def test_pop3_user_pass_and_auth(self):
        c = POP3_SSL(self.port("pop3s"))
        self.addCleanup(c.close)
        port = c.sock.getsockname()[1]
        c.user(USER)
        with self.assertRaises(poplib.error_proto):
            c.pass_(BAD_PW)
        with self.assertRaises(poplib.error_proto):
            c._shortcmd("AUTH PLAIN " + b64(b"\0alice\0" + BAD_PW.encode()))
        c.user(USER)
        c.pass_(PASSWORD)
        c.quit()
        self.assertVerdicts(port, "pop3s", [("alice", "failed"), ("alice", "failed"), ("alice", "ok")])

    # ------------------------------------------------------------ SMTP

    def test_smtp_auth_plain_and_login(self):
        with SMTP_SSL(self.port("smtps")) as c:
            port = c.sock.getsockname()[1]
            c.ehlo()
            c.user, c.password = USER, BAD_PW
            with self.assertRaises(smtplib.SMTPAuthenticationError):
                c.auth("PLAIN", c.auth_plain)
            with self.assertRaises(smtplib.SMTPAuthenticationError):
                c.auth("LOGIN", c.auth_login, initial_response_ok=False)
            c.password = PASSWORD
            c.auth("PLAIN", c.auth_plain)
        self.assertVerdicts(port, "smtps", [("alice", "failed"), ("alice", "failed"), ("alice", "ok")])

    # ------------------------------------------------------------ metric

    def test_metric_counts_each_verdict(self):
        with IMAP4_SSL(self.port("counted")) as c:
            for _ in range(2):
                with self.assertRaises(imaplib.IMAP4.error):
                    c.login(USER, BAD_PW)
            c.login(USER, PASSWORD)

        def counts():
            s = scrape(self.mport)
            return (s.get("postern_auth_total", None, service="counted", result="failed"),
                    s.get("postern_auth_total", None, service="counted", result="ok"))

        wait_until(lambda: counts() == (2.0, 1.0), timeout=5.0, msg="postern_auth_total", detail=counts)
        self.assertEqual(scrape(self.mport).type.get("postern_auth_total"), "counter")
