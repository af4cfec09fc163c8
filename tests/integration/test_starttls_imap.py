"""IMAP with `tls = starttls` (issue 3): postern offers STARTTLS in front of
a plaintext Dovecot (and a scripted fake backend for what Dovecot does not
show): real clients (curl, openssl s_client, imaplib), capability rewriting
before and after TLS (P1, P2, S9), the greeting (S15), plaintext LOGIN and
AUTHENTICATE refused and not forwarded (S8), second STARTTLS (S10), parser
edge cases (S11) and pipelining (S12). Item ids: tests/security-checklist.md."""

import imaplib
import re
import secrets

from harness import PASSWORD, SLOW, USER, client_context, curl, env, run, wait_until
from starttls_util import (
    IMAP_ACTIVE,
    IMAP_ARGS,
    IMAP_BEGIN,
    IMAP_PRIVACY,
    LONG_LINE,
    Client,
    DovecotLog,
    StarttlsCase,
    complete_lines,
    direct_greeting,
    imap_cap_lists,
    imap_lines,
    imap_response,
    imap_tagged,
    read_to_close,
    sasl_plain,
    starttls_svc,
)

_DIRECT = {}


def dovecot_caps():
    """Dovecot's own (pre-login CAPABILITY, post-login list) asked directly."""
    if not _DIRECT:
        c = Client(env().imap_port)
        try:
            c.line()
            c.send("a CAPABILITY\r\n")
            _DIRECT["pre"] = imap_cap_lists(imap_response(c, "a"))[0]
            c.send("b LOGIN %s %s\r\n" % (USER, PASSWORD))
            _DIRECT["post"] = imap_cap_lists(imap_response(c, "b"))[-1]
            c.send("z LOGOUT\r\n")
            imap_response(c, "z")
        finally:
            c.close()
    return _DIRECT["pre"], _DIRECT["post"]


class ImapStarttls(StarttlsCase):
    @classmethod
    def make_services(cls):
        cls.fb = cls.fake("imap")
        return [
            ("imap", starttls_svc("imap")),
            ("imapnoreq", starttls_svc("imap", require_tls="no")),
            ("fimap", starttls_svc("imap", backend=cls.fb.address)),
        ]

    # ------------------------------------------------------------ helpers
    def connect(self, name="imap"):
        c = self.client(name)
        greet = c.line()
        self.assertTrue(greet.startswith(b"* OK"), greet)
        return c, greet

    def do_starttls(self, c, tag="s"):
        self.assertEqual(c.cmd("%s STARTTLS\r\n" % tag), tag.encode() + b" " + IMAP_BEGIN + b"\r\n")
        c.starttls()

    def tagged(self, c, tag, cmd):
        c.send("%s %s\r\n" % (tag, cmd))
        resp = imap_response(c, tag)
        return resp, imap_tagged(resp, tag)

    def assertPreTlsCaps(self, lists, backend=None):
        self.assertTrue(lists, "no capability list")
        for caps in lists:
            upper = [x.upper() for x in caps]
            self.assertEqual(upper.count("STARTTLS"), 1, caps)
            self.assertEqual(upper.count("LOGINDISABLED"), 1, caps)
            self.assertFalse([x for x in upper if x.startswith("AUTH=")], caps)
            self.assertIn("IMAP4REV1", upper, caps)
            if backend is not None:
                want = {x for x in backend if not x.upper().startswith("AUTH=")} | {"STARTTLS", "LOGINDISABLED"}
                self.assertEqual(set(caps), want, "pre-TLS list %r vs backend %r" % (caps, backend))

    def assertPostTlsCaps(self, lists, backend):
        self.assertTrue(lists, "no capability list")
        want = {x for x in backend if x.upper() not in ("STARTTLS", "LOGINDISABLED")}
        for caps in lists:
            upper = [x.upper() for x in caps]
            self.assertNotIn("STARTTLS", upper, caps)
            self.assertNotIn("LOGINDISABLED", upper, caps)
            self.assertEqual(set(caps), want, "post-TLS list %r vs backend %r" % (caps, backend))

    # ------------------------------------------------------------ real clients
    def test_curl_list_and_fetch(self):
        port = self.port("imap")
        base = ["--ssl-reqd", "--resolve", "localhost:%d:127.0.0.1" % port, "--user", "%s:%s" % (USER, PASSWORD)]

        def ups():
            return [ln for ln in complete_lines(self.p) if ln.event == "starttls" and ln.service == "imap"]

        n0 = len(ups())
        r = curl(base + ["imap://localhost:%d/" % port])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"INBOX", r.stdout)
        r = curl(base + ["imap://localhost:%d/INBOX;MAILINDEX=1" % port])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"Subject: Hello 1", r.stdout)
        self.assertIn(b"This is the first message.", r.stdout)
        got = wait_until(lambda: len(ups()) >= n0 + 2 and ups(), msg="two starttls log lines")
        for up in got[n0:]:
            self.assertRegex(up.fields.get("tls", ""), r"^TLSv1\.3$", up.raw)

    def test_openssl_s_client(self):
        port = self.port("imap")
        cmds = "a LOGIN %s %s\nb SELECT INBOX\nc FETCH 1 BODY[]\nd LOGOUT\n" % (USER, PASSWORD)
        r = run(
            ["openssl", "s_client", "-starttls", "imap", "-connect", "127.0.0.1:%d" % port,
             "-servername", "localhost", "-CAfile", env().ca, "-verify_return_error",
             "-verify_hostname", "localhost", "-crlf", "-ign_eof", "-nocommands"],
            input=cmds.encode(), timeout=20,
        )
        out = r.stdout.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, out + r.stderr.decode())
        self.assertIn("Verify return code: 0 (ok)", out)
        self.assertRegex(out, r"Protocol\s*:\s*TLSv1\.3")
        self.assertRegex(out, r"(?m)^a OK")
        self.assertRegex(out, r"(?m)^b OK \[READ-WRITE\]")
        self.assertIn("This is the first message.", out)
        self.assertRegex(out, r"(?m)^d OK")

    def test_imaplib(self):
        c = imaplib.IMAP4("127.0.0.1", self.port("imap"), timeout=10 * SLOW)
        try:
            self.assertIn("STARTTLS", c.capabilities)
            self.assertIn("LOGINDISABLED", c.capabilities)
            self.assertFalse([x for x in c.capabilities if x.startswith("AUTH=")], c.capabilities)
            local_port = c.sock.getsockname()[1]
            typ, _ = c.starttls(ssl_context=client_context())
            self.assertEqual(typ, "OK")
            # imaplib re-reads the capabilities inside TLS
            self.assertNotIn("STARTTLS", c.capabilities)
            self.assertNotIn("LOGINDISABLED", c.capabilities)
            self.assertIn("AUTH=PLAIN", c.capabilities)
            typ, _ = c.login(USER, PASSWORD)
            self.assertEqual(typ, "OK")
            typ, data = c.select("INBOX", readonly=True)
            self.assertEqual((typ, data), ("OK", [b"4"]))
            typ, data = c.fetch("2", "(BODY.PEEK[])")
            self.assertEqual(typ, "OK")
            self.assertIn("Grüße aus Köln".encode(), data[0][1])
            c.logout()
        finally:
            try:
                c.shutdown()
            except Exception:
                pass
        self.assertStarttlsLogged(local_port)
        self.assertSessionEnd(self.p, local_port)

    # ------------------------------------------------------------ capabilities
    def test_S15_P2_greeting_is_backends_with_rewritten_capabilities(self):
        """The greeting is Dovecot's own, byte for byte, except inside its
        [CAPABILITY …] code: no postern banner added (S15), capabilities
        rewritten in place (P2)."""
        direct = direct_greeting(env().imap_port)
        c, greet = self.connect()
        m_direct = re.match(rb"^(\* OK \[CAPABILITY )([^\]]*)(\].*\r\n)$", direct)
        self.assertTrue(m_direct, direct)
        m = re.match(rb"^(\* OK \[CAPABILITY )([^\]]*)(\].*\r\n)$", greet)
        self.assertTrue(m, greet)
        self.assertEqual(m.group(1), m_direct.group(1))
        self.assertEqual(m.group(3), m_direct.group(3), "greeting text changed")
        self.assertNotIn(b"postern", greet.lower())
        self.assertPreTlsCaps([m.group(2).decode().split()], m_direct.group(2).decode().split())
        self.assertEqual(m.group(2).split()[0], b"IMAP4rev1", greet)

    def test_P1_S9_capabilities_before_and_after_tls(self):
        pre, post = dovecot_caps()
        c, greet = self.connect()
        resp, tagged = self.tagged(c, "a", "CAPABILITY")
        self.assertTrue(tagged.startswith(b"a OK"), resp)
        lists = imap_cap_lists(greet + resp)
        self.assertGreaterEqual(len(lists), 2, greet + resp)
        self.assertPreTlsCaps(lists, pre)
        self.do_starttls(c, "b")
        resp, tagged = self.tagged(c, "c", "CAPABILITY")
        self.assertTrue(tagged.startswith(b"c OK"), resp)
        lists = imap_cap_lists(resp)
        self.assertPostTlsCaps(lists, pre)
        self.assertIn("AUTH=PLAIN", lists[0])
        resp, tagged = self.tagged(c, "d", "LOGIN %s %s" % (USER, PASSWORD))
        self.assertTrue(tagged.startswith(b"d OK"), resp)
        lists = imap_cap_lists(resp)
        if lists:
            self.assertPostTlsCaps(lists, post)
        resp, tagged = self.tagged(c, "e", "CAPABILITY")
        self.assertPostTlsCaps(imap_cap_lists(resp), post)
        resp, tagged = self.tagged(c, "z", "LOGOUT")
        self.assertTrue(tagged.startswith(b"z OK"), resp)
        self.assertStarttlsLogged(c.local_port)
        c.close()
        self.assertSessionEnd(self.p, c.local_port)

    def test_P1_backend_own_starttls_and_logindisabled(self):
        """A backend that itself advertises STARTTLS and LOGINDISABLED: before
        TLS each list has them exactly once; after TLS neither, in the
        greeting, untagged CAPABILITY and tagged OK [CAPABILITY] codes."""
        fb = self.fb
        backend_caps = fb.caps.split()
        c, greet = self.connect("fimap")
        resp, tagged = self.tagged(c, "a", "CAPABILITY")
        self.assertIn(b"[CAPABILITY ", tagged)
        lists = imap_cap_lists(greet + resp)
        self.assertEqual(len(lists), 3, greet + resp)  # greeting, untagged, tagged code
        self.assertPreTlsCaps(lists, backend_caps)
        self.do_starttls(c)
        resp, tagged = self.tagged(c, "c", "CAPABILITY")
        lists = imap_cap_lists(resp)
        self.assertEqual(len(lists), 2, resp)
        self.assertPostTlsCaps(lists, backend_caps)
        resp, tagged = self.tagged(c, "d", "LOGIN u p")
        self.assertTrue(tagged.startswith(b"d OK [CAPABILITY "), resp)
        self.assertPostTlsCaps(imap_cap_lists(resp), fb.postlogin.split())

    # ------------------------------------------------------------ S8
    def test_S8_plaintext_login_refused_dovecot_never_sees_it(self):
        log = DovecotLog()
        user = "s8u%s" % secrets.token_hex(4)
        pw = "pw%s" % secrets.token_hex(6)
        c, greet = self.connect()
        for tag, cmd in (
            ("a", "LOGIN %s %s" % (user, pw)),
            ("b", "AUTHENTICATE PLAIN %s" % sasl_plain(user, pw)),
            ("c", "AUTHENTICATE PLAIN"),
            ("d", "login %s %s" % (user, pw)),
            ("e.1-x_y", 'LOGIN "%s" "%s"' % (user, pw)),
        ):
            with self.subTest(cmd=cmd):
                line = c.cmd("%s %s\r\n" % (tag, cmd))
                self.assertEqual(line, tag.encode() + b" " + IMAP_PRIVACY + b"\r\n")
        # the session is still usable and in sync
        resp, tagged = self.tagged(c, "f", "NOOP")
        self.assertTrue(tagged.startswith(b"f OK"), resp)
        self.assertEqual(imap_lines(resp), [tagged], resp)
        resp, tagged = self.tagged(c, "z", "LOGOUT")
        self.assertTrue(tagged.startswith(b"z OK"), resp)
        c.close()
        self.assertSessionEnd(self.p, c.local_port)
        log.wait_contains("no auth attempts", timeout=2.0)
        self.assertNotIn(user, log.text(), "the refused credentials reached Dovecot")
        self.assertNotIn(pw, self.p.log_text(), "a password in postern's log")

    def test_S8_plaintext_auth_never_forwarded(self):
        """Recorded by a fake backend: pre-TLS LOGIN/AUTHENTICATE (any case,
        quoted, literal, SASL-IR or not) never reach it; after TLS LOGIN does."""
        n = self.fb.count()
        c, greet = self.connect("fimap")
        for tag, cmd in (
            ("a", "LOGIN alice secret"),
            ("b", "AUTHENTICATE PLAIN %s" % sasl_plain("alice", "secret")),
            ("c", "AUTHENTICATE PLAIN"),
            ("d", "Login alice secret"),
            ("e", "authenticate login"),
            ("f", 'LOGIN "alice" "secret"'),
        ):
            with self.subTest(cmd=cmd):
                self.assertEqual(c.cmd("%s %s\r\n" % (tag, cmd)), tag.encode() + b" " + IMAP_PRIVACY + b"\r\n")
        # LOGIN with a synchronizing literal: refused at once, no "+" continuation
        line = c.cmd("g LOGIN {5}\r\n")
        self.assertEqual(line, b"g " + IMAP_PRIVACY + b"\r\n")
        resp, tagged = self.tagged(c, "h", "NOOP")
        self.assertEqual(tagged, b"h OK NOOP done")
        rec = self.fb.conn(n).data()
        self.assertEqual(rec, b"h NOOP\r\n", "the backend received %r" % rec)
        self.do_starttls(c)
        resp, tagged = self.tagged(c, "i", "LOGIN alice secret")
        self.assertTrue(tagged.startswith(b"i OK"), resp)
        self.assertEqual(self.fb.conn(n).data(), b"h NOOP\r\ni LOGIN alice secret\r\n")

    def test_S8_require_tls_no_forwards_login(self):
        c, greet = self.connect("imapnoreq")
        resp, tagged = self.tagged(c, "a", "CAPABILITY")
        for caps in imap_cap_lists(greet + resp):
            self.assertIn("STARTTLS", caps)
            self.assertNotIn("LOGINDISABLED", caps)
        resp, tagged = self.tagged(c, "b", "LOGIN %s %s" % (USER, PASSWORD))
        self.assertTrue(tagged.startswith(b"b OK"), resp)
        resp, tagged = self.tagged(c, "c", "EXAMINE INBOX")
        self.assertIn(b"* 4 EXISTS", resp)
        self.tagged(c, "z", "LOGOUT")

    # ------------------------------------------------------------ S10, S11, S12
    def test_S10_second_starttls_rejected(self):
        c, greet = self.connect()
        self.do_starttls(c)
        self.assertEqual(c.cmd("x STARTTLS\r\n"), b"x " + IMAP_ACTIVE + b"\r\n")
        self.assertEqual(c.cmd("y starttls\r\n"), b"y " + IMAP_ACTIVE + b"\r\n")
        resp, tagged = self.tagged(c, "z", "NOOP")
        self.assertTrue(tagged.startswith(b"z OK"), resp)

    def test_S11_case_trailing_spaces_odd_tags(self):
        for tag, cmd in (("a", "starttls"), ("b", "StartTLS   "), ("A1.b-c_2", "STARTTLS "),
                         ("d", "STARTTLS\t")):
            with self.subTest(cmd=cmd):
                c, greet = self.connect()
                if cmd.endswith("\t"):
                    # a tab is not a space: either accepted or refused, but a clean reply
                    line = c.cmd("%s %s\r\n" % (tag, cmd))
                    self.assertRegex(line, rb"^d (OK Begin TLS negotiation now|BAD .*)\r\n$")
                    if b"Begin" in line:
                        c.starttls()
                    continue
                line = c.cmd("%s %s\r\n" % (tag, cmd))
                self.assertEqual(line, tag.encode() + b" " + IMAP_BEGIN + b"\r\n")
                c.starttls()
                resp, tagged = self.tagged(c, "n", "NOOP")
                self.assertTrue(tagged.startswith(b"n OK"), resp)

    def test_S11_starttls_with_argument(self):
        c, greet = self.connect()
        self.assertEqual(c.cmd("a STARTTLS foo\r\n"), b"a " + IMAP_ARGS + b"\r\n")
        self.assertEqual(c.cmd("b starttls  x y\r\n"), b"b " + IMAP_ARGS + b"\r\n")
        # still plaintext and in sync: the real STARTTLS works
        resp, tagged = self.tagged(c, "c", "NOOP")
        self.assertTrue(tagged.startswith(b"c OK"), resp)
        self.do_starttls(c, "d")
        resp, tagged = self.tagged(c, "e", "NOOP")
        self.assertTrue(tagged.startswith(b"e OK"), resp)

    def test_S11_bare_lf(self):
        """LF-only line ends (Dovecot accepts them): a bare-LF LOGIN must
        not slip through to the backend, and every command gets a reply."""
        c, greet = self.connect()
        line = c.cmd("a LOGIN %s %s\n" % (USER, PASSWORD))
        self.assertRegex(line, rb"^a (NO|BAD)[ \r]", "bare-LF LOGIN before TLS: %r" % line)
        resp = c.cmd("b NOOP\r\n")
        self.assertTrue(resp.startswith(b"b OK"), resp)
        line = c.cmd("c STARTTLS\n")
        self.assertRegex(line, rb"^c (OK Begin TLS negotiation now|BAD .*|NO .*)\r\n$")
        if line.startswith(b"c OK"):
            c.starttls()
        else:
            self.do_starttls(c, "d")
        resp, tagged = self.tagged(c, "e", "NOOP")
        self.assertTrue(tagged.startswith(b"e OK"), resp)

    def test_S11_nul_bytes(self):
        c, greet = self.connect()
        for tag, raw in (("a", b"a NO\x00OP\r\n"), ("b", b"b STARTTLS\x00\r\n"), ("c", b"c STARTTLS\x00x\r\n"),
                         ("d", b"d LOGIN alice\x00 secret\r\n")):
            with self.subTest(raw=raw):
                c.send(raw)
                line = c.line()
                # RFC 3501 7.1.3: the tagged form when the command's tag is
                # known; a client waits for its tag and hangs on `* BAD`
                self.assertRegex(line, ("^%s (BAD|NO)[ \r]" % tag).encode(),
                                 "no tagged reply to a command with a NUL byte: %r" % line)
        resp, tagged = self.tagged(c, "f", "NOOP")
        self.assertTrue(tagged.startswith(b"f OK"), resp)
        self.do_starttls(c, "g")
        resp, tagged = self.tagged(c, "h", "NOOP")
        self.assertTrue(tagged.startswith(b"h OK"), resp)

    def test_S11_overlong_line(self):
        c, greet = self.connect()
        try:
            c.send(b"a NOOP " + b"x" * LONG_LINE)
        except OSError:
            pass
        data = read_to_close(c.sock, 5 * SLOW)
        self.assertIsNotNone(data, "connection not closed after a > 64 KiB line")
        c.close()
        self.assertTrue(data.startswith(b"* BYE "), data[:200])
        self.assertTrue(data.endswith(b"\r\n"), data[:200])
        self.assertEqual(data.count(b"\r\n"), 1, data[:300])
        self.assertSessionEnd(self.p, c.local_port)

    def test_S11_starttls_inside_literal(self):
        """`x STARTTLS` (and `y LOGIN ...`) as literal data is data, not a
        command. Before TLS a command with a literal is refused locally
        (issue 11): a {n} one before the client sends it (no +
        continuation), a {n+} one by ending the session, since servers
        disagree on whether a refused command's literal is read."""
        c, greet = self.connect()
        lit = b"x STARTTLS\r\n"
        # synchronizing literal: refused at once, no continuation
        self.assertEqual(c.cmd(b'b ID ("name" {%d}\r\n' % len(lit))[:5], b"b BAD")
        self.do_starttls(c, "d")
        resp, tagged = self.tagged(c, "e", "NOOP")
        self.assertTrue(tagged.startswith(b"e OK"), resp)
        for lit in (b"x STARTTLS\r\n", b"y LOGIN alice secret\r\n"):
            with self.subTest(lit=lit):
                c, greet = self.connect()
                c.send(b'a ID ("name" {%d+}\r\n%s)\r\n' % (len(lit), lit))
                data = c.quiet(0.5)
                self.assertEqual(data, b"* BYE Literals are not permitted before STARTTLS; "
                                 b"the literal of a refused command cannot be skipped\r\n")
                # as a client does after BYE: postern's closing read of the
                # client (up to 5 s, so that the BYE is not lost to a reset)
                # ends at its EOF
                c.close()
                self.assertSessionEnd(self.p, c.local_port)

    def test_S12_capability_and_starttls_pipelined(self):
        """CAPABILITY and STARTTLS in one segment: the CAPABILITY response
        (with STARTTLS), then the OK, then TLS; nothing is discarded."""
        c, greet = self.connect()
        c.send("a CAPABILITY\r\nb STARTTLS\r\n")
        resp = imap_response(c, "a")
        self.assertPreTlsCaps(imap_cap_lists(resp))
        self.assertEqual(c.line(), b"b " + IMAP_BEGIN + b"\r\n")
        c.starttls()
        resp, tagged = self.tagged(c, "c", "CAPABILITY")
        self.assertPostTlsCaps(imap_cap_lists(resp), dovecot_caps()[0])
        discards = [ln for ln in self.session_lines(c.local_port) if "discarded" in ln.msg]
        for ln in discards:
            self.assertRegex(ln.msg, r"(?<![0-9])0(?![0-9])", "bytes discarded though none followed: " + ln.raw)
