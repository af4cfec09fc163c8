"""IMAP framing (issue 11): postern and a real Dovecot must agree on where
every command and literal begins, before and after TLS, and the command log
must hold no secret however a client frames its lines.

- a line that merely ends in {N} (after "x", an unterminated quoted string,
  "(x", inside ID, after CAPABILITY or an unknown verb) is no literal: the
  bytes after it are commands, judged by postern, never a plaintext LOGIN
  hidden from it; a literal after a command that takes none (NOOP) ends
  the session, since Dovecot past login skips such a line, and so does a
  LITERAL+ one after an extension's command (GETACL) the server does not
  name in its capabilities;
- odd white space (HTAB, double or leading SP) before TLS is refused
  locally, the password never forwarded;
- ID forwarding keys written with escapes, or in a line over 64 KiB, never
  reach the backend;
- a pipelined AUTHENTICATE that shares its tag with an earlier command, and
  an AUTHENTICATE with a tab, keep the SASL response out of the log;
- a server line over 64 KiB that ends in a literal (a many-part message's
  BODYSTRUCTURE then BODY[]) still has its literal followed: the body passes
  untouched and stays out of the log;
- a 64-byte tag on AUTHENTICATE does not hide later commands, and a client
  line over 64 KiB is logged as a placeholder."""

import base64
import re
import secrets

from harness import PASSWORD, USER
from starttls_util import (
    IMAP_BEGIN,
    IMAP_PRIVACY,
    Client,
    DovecotLog,
    StarttlsCase,
    dovecot_direct,
    imap_response,
    imap_tagged,
    starttls_svc,
)
from harness import svc

PLAIN_B64 = base64.b64encode(("\0%s\0%s" % (USER, PASSWORD)).encode()).decode()


class ImapFraming(StarttlsCase):
    GLOBAL = {"log_level": "debug"}

    @classmethod
    def make_services(cls):
        return [
            ("st", starttls_svc("imap", log_commands="yes")),
            # tls = off: the post-TLS rules on a plaintext socket
            ("logged", svc("imap", tls="off", log_commands="yes")),
        ]

    def connect(self, name):
        c = self.client(name, timeout=10.0)
        greet = c.line()
        self.assertTrue(greet.startswith(b"* OK"), greet)
        return c

    def log_for(self, c):
        """The command-log lines (C:/S:) of one client's session."""
        port = ":%d " % c.local_port
        return [ln for ln in self.p.log_text().splitlines() if port in ln]

    def wait_logged(self, c, needle):
        for _ in range(100):
            if any(needle in ln for ln in self.log_for(c)):
                return
            c.quiet(0.05)
        self.fail("%r never logged:\n%s" % (needle, "\n".join(self.log_for(c))))

    # ------------------------------------------------------------ finding 1
    def test_pretls_brace_after_non_argument_hides_no_plaintext_login(self):
        hidden = ("b LOGIN %s %s\r\n" % (USER, PASSWORD)).encode()
        for prefix in (b"a NOOP x", b'a NOOP "x', b"a NOOP (x", b'a ID ("a" x', b"a CAPABILITY x",
                       b"a XYZZY x"):
            with self.subTest(prefix=prefix):
                dl = DovecotLog()
                c = self.connect("st")
                c.send(prefix + b"{%d+}\r\n" % len(hidden) + hidden)
                a = imap_tagged(imap_response(c, "a"), "a")
                self.assertTrue(a.startswith(b"a BAD "), a)
                # the hidden line is a command to postern too: refused locally
                self.assertEqual(imap_tagged(imap_response(c, "b"), "b"), b"b " + IMAP_PRIVACY)
                self.assertEqual(c.cmd(b"s STARTTLS\r\n"), b"s " + IMAP_BEGIN + b"\r\n")
                c.starttls()
                # not logged in: the backend session is nobody's yet
                c.send(b"c SELECT INBOX\r\n")
                sel = imap_tagged(imap_response(c, "c"), "c")
                self.assertFalse(sel.startswith(b"c OK"), sel)
                self.assertFalse(dl.wait_contains("Login: user=<%s>" % USER, timeout=0.3),
                                 "Dovecot saw a plaintext login:\n" + dl.text())
                c.close()

    def test_pretls_literal_never_reaches_the_backend(self):
        """A real literal before TLS is refused and ends the session: the
        APPEND that would store the victim's LOGIN never reaches Dovecot,
        and no byte of the literal is judged as a command."""
        c = self.connect("st")
        append = b"c APPEND INBOX {40+}\r\n"
        c.send(b"a ID ({%d+}\r\n" % len(append) + append + b")\r\nd NOOP\r\n")
        self.assertEqual(c.line(), b"* BYE Literals are not permitted before STARTTLS; "
                         b"the literal of a refused command cannot be skipped\r\n")
        self.assertEqual(c.quiet(0.3), b"")

    def test_literal_after_command_without_one_ends_session(self):
        """Past login Dovecot skips the rest of a NOOP line, literal marker
        included, and would run the "literal" (COMPRESS, which blinds the
        command log) as a command: postern ends the session instead."""
        c = self.connect("logged")
        c.send(("a LOGIN %s %s\r\n" % (USER, PASSWORD)).encode())
        self.assertTrue(imap_tagged(imap_response(c, "a"), "a").startswith(b"a OK"))
        compress = b"c COMPRESS DEFLATE\r\n"
        c.send(b"b NOOP {%d+}\r\n" % len(compress) + compress)
        self.assertEqual(c.line(), b"* BYE This command takes no literal\r\n")
        self.assertEqual(c.quiet(0.3), b"")
        self.assertFalse(any("COMPRESS" in ln for ln in self.log_for(c)), self.log_for(c))

    def test_literal_plus_login_after_login_ends_session(self):
        """Past login Dovecot knows no LOGIN: it skips the line and would run
        the LITERAL+ "password" (COMPRESS, which blinds the command log) as a
        command that the log shows as "***": postern ends the session."""
        c = self.connect("logged")
        c.send(("a LOGIN %s %s\r\n" % (USER, PASSWORD)).encode())
        self.assertTrue(imap_tagged(imap_response(c, "a"), "a").startswith(b"a OK"))
        compress = b"c COMPRESS DEFLATE\r\n"
        c.send(b"b LOGIN %s {%d+}\r\n" % (USER.encode(), len(compress)) + compress)
        self.assertTrue(c.line().startswith(b"* BYE Already logged in"))
        self.assertEqual(c.quiet(0.3), b"")
        self.assertFalse(any("COMPRESS" in ln for ln in self.log_for(c)), self.log_for(c))

    def test_extension_literal_plus_without_capability_ends_session(self):
        """The test Dovecot has no ACL plugin: past login GETACL is unknown
        to it, so it skips the line and would run the LITERAL+ literal
        (COMPRESS, which blinds the command log) as a command. The server
        names no ACL capability: postern ends the session instead."""
        c = self.connect("logged")
        c.send(("a LOGIN %s %s\r\n" % (USER, PASSWORD)).encode())
        ok = imap_tagged(imap_response(c, "a"), "a")
        self.assertTrue(ok.startswith(b"a OK"), ok)
        self.assertNotIn(b" ACL", ok)  # the premise: no ACL extension
        compress = b"y COMPRESS DEFLATE\r\n"
        c.send(b"x GETACL {%d+}\r\n" % len(compress) + compress)
        self.assertTrue(c.line().startswith(b"* BYE The server does not offer this command"))
        self.assertEqual(c.quiet(0.3), b"")  # no answer to x or y
        self.assertFalse(any("COMPRESS" in ln for ln in self.log_for(c)), self.log_for(c))

    # ------------------------------------------------------------ finding 3
    def test_pretls_odd_white_space_refused_locally(self):
        for line in (b"a LOGIN\t%s %s\r\n", b"a  LOGIN %s %s\r\n", b"a LOGIN %s\t%s\r\n",
                     b" a LOGIN %s %s\r\n"):
            line = line % (USER.encode(), PASSWORD.encode())
            with self.subTest(line=line):
                dl = DovecotLog()
                c = self.connect("st")
                reply = c.cmd(line)
                # postern's own words, not Dovecot's "Error in IMAP command"
                self.assertRegex(reply, rb"^(a|\*) BAD (Syntax error|Invalid tag)", reply)
                self.assertEqual(c.cmd(b"z NOOP\r\n")[:4], b"z OK")
                self.assertNotIn("Login: user=<%s>" % USER, dl.text())
                c.close()

    # ------------------------------------------------------------ finding 4
    def test_id_forwarding_key_with_escape_refused(self):
        c = self.connect("logged")
        c.send(b'a ID ("x-originat\\ing-ip" "6.6.6.6")\r\n')
        a = imap_tagged(imap_response(c, "a"), "a")
        self.assertTrue(a.startswith(b"a BAD "), a)
        self.assertNotIn(b"ID completed", a)

    def test_overlong_id_refused(self):
        c = self.connect("logged")
        c.send(b'a ID ("name" "' + b"v" * (70 * 1024) + b'" "x-originating-ip" "6.6.6.6")\r\n')
        self.assertEqual(imap_tagged(imap_response(c, "a"), "a"), b"a BAD Line too long")
        self.assertEqual(c.cmd(b"b NOOP\r\n")[:4], b"b OK")

    # ------------------------------------------------------------ finding 5
    def test_same_tag_pipelined_authenticate_keeps_response_out_of_log(self):
        c = self.connect("logged")
        c.send(b"A1 NOOP\r\nA1 AUTHENTICATE PLAIN\r\n")
        self.assertTrue(c.line().startswith(b"A1 OK"))
        self.assertEqual(c.line()[:1], b"+")
        c.send(PLAIN_B64.encode() + b"\r\n")
        resp = imap_response(c, "A1")
        self.assertTrue(imap_tagged(resp, "A1").startswith(b"A1 OK"), resp)
        c.send(b"z NOOP\r\n")
        imap_response(c, "z")
        self.wait_logged(c, "C: z NOOP")
        log = "\n".join(self.log_for(c))
        self.assertNotIn(PLAIN_B64[:12], log)
        self.assertIn("C: ***", log)

    def test_authenticate_with_tab_refused_and_not_logged(self):
        c = self.connect("logged")
        c.send(b"c1 AUTHENTICATE PLAIN\t" + PLAIN_B64.encode() + b"\r\n")
        resp = imap_response(c, "c1")
        self.assertTrue(imap_tagged(resp, "c1").startswith(b"c1 BAD Syntax error"), resp)
        c.send(b"z NOOP\r\n")
        imap_response(c, "z")
        self.wait_logged(c, "C: z NOOP")
        log = "\n".join(self.log_for(c))
        self.assertNotIn(PLAIN_B64[:12], log)
        self.assertIn("C: c1 AUTHENTICATE ***", log)

    # ------------------------------------------------------------ finding 7
    def test_overlong_server_line_ending_in_literal_keeps_framing(self):
        box = "framing-" + secrets.token_hex(4)
        marker = "Body-" + secrets.token_hex(6)
        parts = 1200
        body = ["MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="b"', "Subject: many", ""]
        for i in range(parts):
            body += ["--b", "Content-Type: text/plain", "", "p%d" % i]
        # a body line that looks like a capability response, then another
        body += ["--b", "Content-Type: text/plain", "", "* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED",
                 "a1 OK [CAPABILITY IMAP4rev1 STARTTLS] %s" % marker, "--b--", ""]
        msg = "\r\n".join(body).encode()
        d = dovecot_direct(USER, PASSWORD)
        try:
            d.send("c CREATE %s\r\n" % box)
            imap_response(d, "c")
            d.send("p APPEND %s {%d+}\r\n" % (box, len(msg)))
            d.send(msg + b"\r\n")
            self.assertTrue(imap_tagged(imap_response(d, "p"), "p").startswith(b"p OK"))
        finally:
            d.close()
        try:
            c = self.connect("logged")
            c.send("l LOGIN %s %s\r\n" % (USER, PASSWORD))
            self.assertTrue(imap_tagged(imap_response(c, "l"), "l").startswith(b"l OK"))
            c.send("s EXAMINE %s\r\n" % box)
            imap_response(c, "s")
            c.send(b"f FETCH 1 (BODYSTRUCTURE BODY.PEEK[])\r\n")
            first = c.line()
            self.assertGreater(len(first), 65536, "the FETCH line should be over 64 KiB")
            m = re.search(rb"\{(\d+)\}\r\n$", first)
            self.assertIsNotNone(m, first[-100:])
            got = c.r.read(int(m.group(1)))
            self.assertEqual(got, msg, "the body changed in transit")
            rest = imap_response(c, "f")
            self.assertTrue(imap_tagged(rest, "f").startswith(b"f OK"), rest[-200:])
            c.send(b"z NOOP\r\n")
            imap_response(c, "z")
            self.wait_logged(c, "C: z NOOP")
            log = "\n".join(self.log_for(c))
            self.assertNotIn(marker, log)
            self.assertIn("{line too long:", log)
        finally:
            d = dovecot_direct(USER, PASSWORD)
            d.send("x DELETE %s\r\n" % box)
            imap_response(d, "x")
            d.close()

    # ------------------------------------------------------------ finding 8
    def test_long_tag_authenticate_hides_no_later_command(self):
        c = self.connect("logged")
        tag = "t" * 70
        c.send("%s AUTHENTICATE PLAIN\r\n" % tag)
        first = c.line()
        if first.startswith(b"+"):
            c.send(b"*\r\n")
            imap_response(c, tag)
        c.send(b"b NOOP\r\n")
        imap_response(c, "b")
        self.wait_logged(c, "C: b NOOP")

    def test_overlong_client_line_logged_as_placeholder(self):
        c = self.connect("logged")
        filler = "q" * (70 * 1024)
        c.send('a SEARCH TEXT "%s"\r\n' % filler)
        c.quiet(0.5)
        self.wait_logged(c, "C: a SEARCH ... {line too long: ")
        self.assertNotIn(filler[:100], self.p.log_text())
