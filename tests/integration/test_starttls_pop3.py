"""POP3 with `tls = starttls` (issue 3): postern offers STLS in front of a
plaintext Dovecot (and a scripted fake backend): curl, openssl s_client,
poplib; CAPA rewriting before and after TLS (P1, S9), the greeting (S15),
USER/PASS/APOP/AUTH refused and not forwarded (S8), second STLS (S10),
parser edge cases (S11), pipelined commands keep their order (S12). Item ids: tests/security-checklist.md."""

import poplib
import secrets

from harness import PASSWORD, SLOW, USER, client_context, curl, env, read_to_close, run
from starttls_util import (
    LONG_LINE,
    POP3_ACTIVE,
    POP3_ARGS,
    POP3_BEGIN,
    POP3_REFUSED,
    Client,
    DovecotLog,
    StarttlsCase,
    direct_greeting,
    pop3_capa,
    pop3_capa_names,
    pop3_multiline,
    sasl_plain,
    starttls_svc,
)

_DIRECT = {}


def dovecot_capa():
    """Dovecot's own CAPA lines, asked directly."""
    if "capa" not in _DIRECT:
        c = Client(env().pop3_port)
        try:
            c.line()
            _DIRECT["capa"] = pop3_capa(c)
            c.cmd(b"QUIT\r\n")
        finally:
            c.close()
    return _DIRECT["capa"]


class Pop3Starttls(StarttlsCase):
    @classmethod
    def make_services(cls):
        cls.fb = cls.fake("pop3")
        return [
            ("pop3", starttls_svc("pop3")),
            ("pop3noreq", starttls_svc("pop3", require_tls="no")),
            ("fpop3", starttls_svc("pop3", backend=cls.fb.address)),
        ]

    def connect(self, name="pop3"):
        c = self.client(name)
        greet = c.line()
        self.assertTrue(greet.startswith(b"+OK"), greet)
        return c, greet

    def do_stls(self, c, cmd=b"STLS\r\n"):
        self.assertEqual(c.cmd(cmd), POP3_BEGIN + b"\r\n")
        c.starttls()

    def assertPreTlsCapa(self, lines, backend):
        names = pop3_capa_names(lines)
        self.assertEqual(names.count("STLS"), 1, lines)
        self.assertNotIn("USER", names, lines)
        self.assertNotIn("SASL", names, lines)
        want = {x for x in backend if x.split(b" ")[0].upper() not in (b"USER", b"SASL", b"STLS")} | {b"STLS"}
        self.assertEqual(set(lines), want, "pre-TLS CAPA %r vs backend %r" % (lines, backend))

    def assertPostTlsCapa(self, lines, backend):
        self.assertNotIn("STLS", pop3_capa_names(lines), lines)
        want = {x for x in backend if x.upper() != b"STLS"}
        self.assertEqual(set(lines), want, "post-TLS CAPA %r vs backend %r" % (lines, backend))

    # ------------------------------------------------------------ real clients
    def test_curl_list_and_retr(self):
        port = self.port("pop3")
        base = ["--ssl-reqd", "--resolve", "localhost:%d:127.0.0.1" % port, "--user", "%s:%s" % (USER, PASSWORD)]
        r = curl(base + ["pop3://localhost:%d/" % port])
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.decode().splitlines()
        self.assertEqual([ln.split()[0] for ln in lines], ["1", "2", "3", "4"], r.stdout)
        r = curl(base + ["pop3://localhost:%d/1" % port])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"This is the first message.", r.stdout)

    def test_openssl_s_client(self):
        port = self.port("pop3")
        cmds = "CAPA\nUSER %s\nPASS %s\nRETR 1\nQUIT\n" % (USER, PASSWORD)
        r = run(
            ["openssl", "s_client", "-starttls", "pop3", "-connect", "127.0.0.1:%d" % port,
             "-servername", "localhost", "-CAfile", env().ca, "-verify_return_error",
             "-verify_hostname", "localhost", "-crlf", "-ign_eof", "-nocommands"],
            input=cmds.encode(), timeout=20,
        )
        out = r.stdout.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, out + r.stderr.decode())
        self.assertIn("Verify return code: 0 (ok)", out)
        self.assertRegex(out, r"Protocol\s*:\s*TLSv1\.3")
        self.assertRegex(out, r"(?m)^USER\r?$")  # inside TLS CAPA shows USER again
        self.assertNotRegex(out, r"(?m)^STLS\r?$")
        self.assertIn("+OK Logged in.", out)
        self.assertIn("This is the first message.", out)

    def test_poplib(self):
        c = poplib.POP3("127.0.0.1", self.port("pop3"), timeout=10 * SLOW)
        try:
            self.assertTrue(c.getwelcome().startswith(b"+OK"))
            caps = c.capa()
            self.assertIn("STLS", caps)
            self.assertNotIn("USER", caps)
            self.assertNotIn("SASL", caps)
            local_port = c.sock.getsockname()[1]
            resp = c.stls(context=client_context())
            self.assertEqual(resp, POP3_BEGIN)
            caps = c.capa()
            self.assertNotIn("STLS", caps)
            self.assertIn("USER", caps)
            self.assertEqual(caps.get("SASL"), ["PLAIN", "LOGIN"])
            c.user(USER)
            c.pass_(PASSWORD)
            count, size = c.stat()
            self.assertEqual(count, 4)
            resp, lines, _ = c.retr(2)
            self.assertIn("Grüße aus Köln".encode(), b"\n".join(lines))
            c.quit()
        finally:
            c.close()
        self.assertStarttlsLogged(local_port)
        self.assertSessionEnd(self.p, local_port)

    # ------------------------------------------------------------ capabilities
    def test_S15_greeting_unchanged(self):
        direct = direct_greeting(env().pop3_port)
        c, greet = self.connect()
        self.assertEqual(greet, direct)
        c, greet = self.connect("fpop3")
        self.assertEqual(greet, self.fb.greeting)

    def test_P1_S9_capa_before_and_after_tls(self):
        backend = dovecot_capa()
        c, greet = self.connect()
        self.assertPreTlsCapa(pop3_capa(c), backend)
        self.do_stls(c)
        self.assertPostTlsCapa(pop3_capa(c), backend)
        self.assertEqual(c.cmd("USER %s\r\n" % USER)[:3], b"+OK")
        self.assertEqual(c.cmd("PASS %s\r\n" % PASSWORD)[:3], b"+OK")
        self.assertEqual(c.cmd(b"QUIT\r\n")[:3], b"+OK")
        self.assertStarttlsLogged(c.local_port)
        c.close()
        self.assertSessionEnd(self.p, c.local_port)

    def test_P1_backend_own_stls(self):
        """A backend that itself lists STLS: exactly one STLS before TLS
        (and no USER/SASL), none after (USER and SASL back)."""
        backend = [x.encode() for x in self.fb.capa]
        c, greet = self.connect("fpop3")
        self.assertPreTlsCapa(pop3_capa(c), backend)
        self.do_stls(c)
        lines = pop3_capa(c)
        self.assertPostTlsCapa(lines, backend)
        self.assertIn(b"SASL PLAIN LOGIN", lines)

    # ------------------------------------------------------------ S8
    def test_S8_credentials_refused_never_forwarded(self):
        n = self.fb.count()
        c, greet = self.connect("fpop3")
        for cmd in (
            "USER alice",
            "PASS secret",
            "APOP alice c4c9334bac560ecc979e58001b3e22fb",
            "AUTH PLAIN %s" % sasl_plain("alice", "secret"),
            "AUTH PLAIN",
            "AUTH",
            "user alice",
            "Pass secret",
        ):
            with self.subTest(cmd=cmd):
                self.assertEqual(c.cmd(cmd + "\r\n"), POP3_REFUSED + b"\r\n")
        # before TLS only CAPA, QUIT and STLS are relayed (fail closed)
        self.assertEqual(c.cmd(b"NOOP\r\n"), POP3_REFUSED + b"\r\n")
        self.assertEqual(self.fb.conn(n).data(), b"")
        self.do_stls(c)
        self.assertEqual(c.cmd(b"USER alice\r\n"), b"+OK USER done\r\n")
        self.assertEqual(self.fb.conn(n).data(), b"USER alice\r\n")

    def test_S8_dovecot_never_sees_plaintext_user(self):
        log = DovecotLog()
        user = "s8p%s" % secrets.token_hex(4)
        pw = "pw%s" % secrets.token_hex(6)
        c, greet = self.connect()
        self.assertEqual(c.cmd("USER %s\r\n" % user), POP3_REFUSED + b"\r\n")
        self.assertEqual(c.cmd("PASS %s\r\n" % pw), POP3_REFUSED + b"\r\n")
        self.assertEqual(c.cmd("AUTH PLAIN %s\r\n" % sasl_plain(user, pw)), POP3_REFUSED + b"\r\n")
        self.assertEqual(c.cmd(b"QUIT\r\n")[:3], b"+OK")
        c.close()
        self.assertSessionEnd(self.p, c.local_port)
        log.wait_contains("pop3-login", timeout=2.0)
        self.assertNotIn(user, log.text(), "the refused USER reached Dovecot")
        self.assertNotIn(pw, self.p.log_text())

    def test_S8_require_tls_no(self):
        c, greet = self.connect("pop3noreq")
        names = pop3_capa_names(pop3_capa(c))
        self.assertIn("STLS", names)
        self.assertIn("USER", names)
        self.assertEqual(c.cmd("USER %s\r\n" % USER), b"+OK\r\n")
        self.assertEqual(c.cmd("PASS %s\r\n" % PASSWORD)[:3], b"+OK")
        self.assertEqual(c.cmd(b"QUIT\r\n")[:3], b"+OK")

    # ------------------------------------------------------------ S10, S11, S12
    def test_S10_second_stls_rejected(self):
        c, greet = self.connect()
        self.do_stls(c)
        self.assertEqual(c.cmd(b"STLS\r\n"), POP3_ACTIVE + b"\r\n")
        self.assertEqual(c.cmd(b"stls\r\n"), POP3_ACTIVE + b"\r\n")
        self.assertEqual(c.cmd("USER %s\r\n" % USER), b"+OK\r\n")

    def test_S11_case_trailing_spaces_argument(self):
        for cmd in (b"stls\r\n", b"Stls  \r\n", b"STLS \r\n"):
            with self.subTest(cmd=cmd):
                c, greet = self.connect()
                self.do_stls(c, cmd)
                self.assertEqual(c.cmd("USER %s\r\n" % USER), b"+OK\r\n")
        c, greet = self.connect()
        self.assertEqual(c.cmd(b"STLS foo\r\n"), POP3_ARGS + b"\r\n")
        self.assertEqual(c.cmd(b"stls a b\r\n"), POP3_ARGS + b"\r\n")
        self.do_stls(c)
        self.assertEqual(c.cmd("USER %s\r\n" % USER), b"+OK\r\n")

    def test_S11_bare_lf_and_nul(self):
        c, greet = self.connect()
        line = c.cmd("USER %s\n" % USER)
        self.assertTrue(line.startswith(b"-ERR"), "bare-LF USER before TLS: %r" % line)
        line = c.cmd("PASS %s\n" % PASSWORD)
        self.assertTrue(line.startswith(b"-ERR"), "bare-LF PASS before TLS: %r" % line)
        for raw in (b"NO\x00OP\r\n", b"STLS\x00\r\n", b"USER al\x00ice\r\n"):
            with self.subTest(raw=raw):
                line = c.cmd(raw)
                self.assertTrue(line.startswith(b"-ERR"), line)
        line = c.cmd(b"STLS\n")
        self.assertTrue(line in (POP3_BEGIN + b"\r\n",) or line.startswith(b"-ERR"), line)
        if line.startswith(b"+OK"):
            c.starttls()
        else:
            self.do_stls(c)
        self.assertEqual(c.cmd("USER %s\r\n" % USER), b"+OK\r\n")

    def test_S11_overlong_line(self):
        c, greet = self.connect()
        try:
            c.send(b"NOOP " + b"x" * LONG_LINE)
        except OSError:
            pass
        data = read_to_close(c.sock, 5 * SLOW)
        self.assertIsNotNone(data, "connection not closed after a > 64 KiB line")
        c.close()
        self.assertTrue(data.startswith(b"-ERR "), data[:200])
        self.assertEqual(data.count(b"\r\n"), 1, data[:300])
        self.assertTrue(data.endswith(b"\r\n"), data[:200])
        self.assertSessionEnd(self.p, c.local_port)

    def test_S12_pipelined_replies_keep_order(self):
        """POP3 has no tags: pipelined commands (RFC 2449 PIPELINING), some
        answered by postern, some by Dovecot, get their replies in order;
        STLS last in the group works."""
        backend = dovecot_capa()
        c, greet = self.connect()
        c.send(b"CAPA\r\nUSER x\r\nNOOP\r\nCAPA\r\nAPOP a b\r\nSTLS\r\n")
        self.assertTrue(c.line().startswith(b"+OK"))
        self.assertPreTlsCapa(pop3_multiline(c), backend)
        self.assertEqual(c.line(), POP3_REFUSED + b"\r\n")
        self.assertTrue(c.line().startswith(b"-ERR"))  # Dovecot: NOOP before login
        self.assertTrue(c.line().startswith(b"+OK"))
        self.assertPreTlsCapa(pop3_multiline(c), backend)
        self.assertEqual(c.line(), POP3_REFUSED + b"\r\n")
        self.assertEqual(c.line(), POP3_BEGIN + b"\r\n")
        c.starttls()
        self.assertPostTlsCapa(pop3_capa(c), backend)
