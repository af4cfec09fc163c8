"""Client mode with `backend_tls = starttls` (tests/security-checklist.md, C1-C13).

postern reads the backend's greeting, asks for its capabilities, sends
STARTTLS/STLS, discards whatever the server sent after its OK, completes TLS
and verification, re-reads the capabilities, and only then greets the
client. It fails closed (protocol error line, reason=backend-tls-failed,
nothing the client sent forwarded) on every misbehaviour.

- DovecotStarttls: real Dovecot with STARTTLS on its plain ports, imaplib
  and poplib in plaintext to postern; behind Dovecot's haproxy listener with
  proxy_protocol; tls = starttls on the client side too.
- ImapBackendStarttls, Pop3BackendStarttls, SmtpBackendStarttls: scripted
  servers (Python ssl) that record every byte: happy paths, capability
  rewriting, and C1-C13.
"""

import base64
import hashlib
import imaplib
import poplib
import smtplib
import time

import harness
from harness import SLOW, Reader, SourceIMAP4, literal_of, read_to_close, shut_down_after, svc
from clientmode_util import (
    PASSWORD,
    USER,
    ClientModeCase,
    credential_bytes,
    imap_direct_fetch,
    pki,
    pop3_direct_retr,
    split_lines,
    starttls_script,
    tls_dovecot,
)
from starttls_util import Client, imap_cap_lists

INJECTED = (b"XINJECTED", b"evil.test", b"REFERRAL", b"XPRETLS")
ERROR_LINE = {
    "imap": rb"\* BYE [^\r\n]*\r\n",
    "pop3": rb"-ERR[^\r\n]*\r\n",
    "smtp": rb"421[ -][^\r\n]*\r\n",
}
C12_LINE = {
    "imap": rb"\* BYE [^\r\n]*\r\n",
    "pop3": rb"-ERR[^\r\n]*\r\n",
    "smtp": rb"(421|554)[ -][^\r\n]*\r\n",
}
EARLY_CREDENTIALS = {
    "imap": b"a LOGIN alice secret\r\n",
    "pop3": b"USER alice\r\nPASS secret\r\n",
    "smtp": b"EHLO client.test\r\nAUTH PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n",
}


def starttls_keys(**kw):
    d = {"backend_tls": "starttls", "backend_ca": pki().ca, "backend_sni": "localhost"}
    d.update(kw)
    return d


# ---------------------------------------------------------------- real Dovecot


class DovecotStarttls(ClientModeCase):
    @classmethod
    def make_services(cls):
        d = tls_dovecot()
        return [
            ("dv_imap", svc("imap", tls="off", backend="127.0.0.1:%d" % d.ports["imap"], **starttls_keys())),
            ("dv_pop3", svc("pop3", tls="off", backend="127.0.0.1:%d" % d.ports["pop3"], **starttls_keys())),
            ("dv_imap_proxy", svc("imap", tls="off", backend="127.0.0.1:%d" % d.ports["imap_hap"],
                                  proxy_protocol="v2", **starttls_keys())),
            ("dv_imap_both", svc("imap", tls="starttls", backend="127.0.0.1:%d" % d.ports["imap"],
                                 **starttls_keys())),
        ]

    def imap_session(self, c):
        caps = [x.upper() for x in c.capabilities]
        self.assertNotIn("STARTTLS", caps, caps)
        self.assertNotIn("LOGINDISABLED", caps, caps)
        self.assertEqual(c.login(USER, PASSWORD)[0], "OK")
        typ, data = c.select("INBOX", readonly=True)
        self.assertEqual((typ, data), ("OK", [b"3"]))
        for seq in (1, 3):
            typ, data = c.fetch(str(seq), "(BODY.PEEK[])")
            self.assertEqual(typ, "OK")
            want = literal_of(imap_direct_fetch(seq))
            self.assertEqual(hashlib.sha256(data[0][1]).hexdigest(), hashlib.sha256(want).hexdigest(),
                             "message %d differs from the direct fetch" % seq)
        c.logout()

    def test_imaplib_through_starttls(self):
        d = tls_dovecot()
        off = d.log_size()
        with shut_down_after(imaplib.IMAP4("127.0.0.1", self.port("dv_imap"), timeout=10 * SLOW)) as c:
            cport = c.sock.getsockname()[1]
            self.assertRegex(c.welcome, rb"^\* OK \[CAPABILITY [^\]]*\]")
            self.assertNotRegex(c.welcome, rb"(?i)STARTTLS|LOGINDISABLED")
            self.imap_session(c)
        m = d.wait_log(off, r"imap-login: Info: Login: user=<alice>, method=PLAIN, rip=127\.0\.0\.1, [^\n]*")
        self.assertRegex(m.group(0), r", TLS(, |$)", "Dovecot did not see TLS: " + m.group(0))
        start, end, _ = self.session(cport)
        self.assertEqual(start.fields.get("tls"), "off", start.raw)
        self.assertIn(end.fields["reason"], ("client-closed", "backend-closed"), end.raw)

    def test_poplib_through_stls(self):
        d = tls_dovecot()
        off = d.log_size()
        c = poplib.POP3("127.0.0.1", self.port("dv_pop3"), timeout=10 * SLOW)
        cport = c.sock.getsockname()[1]
        try:
            self.assertTrue(c.getwelcome().startswith(b"+OK"), c.getwelcome())
            capa = c.capa()
            self.assertNotIn("STLS", capa, capa)
            c.user(USER)
            c.pass_(PASSWORD)
            self.assertEqual(c.stat()[0], 3)
            resp, lines, _ = c.retr(3)
            want = pop3_direct_retr(3).split(b"\r\n")[1:-2]
            want = [ln[1:] if ln.startswith(b"..") else ln for ln in want]
            self.assertEqual(hashlib.sha256(b"\n".join(lines)).hexdigest(), hashlib.sha256(b"\n".join(want)).hexdigest())
            c.quit()
        finally:
            c.close()
        m = d.wait_log(off, r"pop3-login: Info: Login: user=<alice>, method=PLAIN, rip=127\.0\.0\.1, [^\n]*")
        self.assertRegex(m.group(0), r", TLS(, |$)", "Dovecot did not see TLS: " + m.group(0))
        self.session(cport)

    def test_proxy_header_then_starttls(self):
        """proxy_protocol = v2 + STARTTLS to Dovecot's haproxy listener: the
        client (127.0.0.9) logs in over TLS, Dovecot logs rip=127.0.0.9."""
        d = tls_dovecot()
        off = d.log_size()
        with shut_down_after(SourceIMAP4("127.0.0.1", self.port("dv_imap_proxy"), timeout=10 * SLOW)) as c:
            self.imap_session(c)
        m = d.wait_log(off, r"imap-login: Info: Login: user=<alice>, method=PLAIN, rip=127\.0\.0\.9, [^\n]*")
        self.assertRegex(m.group(0), r", TLS(, |$)", m.group(0))

    def test_starttls_on_both_sides(self):
        c = Client(self.port("dv_imap_both"))
        self.addCleanup(c.close)
        greet = c.line()
        self.assertTrue(greet.startswith(b"* OK"), greet)
        c.send(b"s STARTTLS\r\n")
        self.assertTrue(c.line().startswith(b"s OK"))
        c.starttls()
        r = c.r
        resp = harness.imap_cmd(r, "l", "LOGIN %s %s" % (USER, PASSWORD))
        self.assertIn(b"l OK", resp)
        resp = harness.imap_cmd(r, "e", "EXAMINE INBOX")
        self.assertIn(b"* 3 EXISTS", resp)
        harness.imap_cmd(r, "z", "LOGOUT")


# ---------------------------------------------------------------- scripted servers


class BackendStarttlsCase(ClientModeCase):
    """Subclasses set PROTO and CASES: name -> (script options, certificate
    name, extra service keys)."""

    PROTO = None
    CASES = {}

    @classmethod
    def make_services(cls):
        k = pki()
        cls.fakes = {}
        out = []
        for name, (opts, cert, extra) in cls.CASES.items():
            cp = k.pair(cert)
            f = cls.server(starttls_script(cls.PROTO, **opts), cert=cp[0], key=cp[1], name=name)
            cls.fakes[name] = f
            out.append((name, svc(cls.PROTO, tls="off", backend=f.address, **starttls_keys(**extra))))
        return out

    def fake_conn(self, name, before):
        f = self.fakes[name]
        self.assertEqual(f.count(), before + 1, "one backend connection (no retry)")
        c = f.last()
        self.assertTrue(c.done.wait(5 * SLOW), c.log)
        return c

    def assertNoInjected(self, data):
        for m in INJECTED:
            self.assertNotIn(m, data, "pre-TLS server text reached the client")

    def check_fails(self, name, c12=False, warn=True):
        """Credentials sent at once; the client gets exactly the error line
        and is closed; reason=backend-tls-failed; the backend got no
        credentials and no second connection."""
        proto = self.PROTO
        f = self.fakes[name]
        before = f.count()
        s = self.connect(name)
        cport = s.getsockname()[1]
        s.sendall(EARLY_CREDENTIALS[proto])
        data = read_to_close(s, 6 * SLOW)
        self.assertIsNotNone(data, "postern did not close the client connection")
        s.close()
        self.assertRegex(data, b"^" + (C12_LINE if c12 else ERROR_LINE)[proto] + b"$",
                         "the client must get exactly one error line")
        self.assertNoInjected(data)
        start, end, lines = self.session(cport)
        if not c12:
            self.assertEqual(end.fields.get("reason"), "backend-tls-failed", end.raw)
        if warn:
            self.assertTrue([ln for ln in lines if ln.level in ("warn", "error")],
                            "no warn line for the session:\n%s" % "\n".join(ln.raw for ln in lines))
        time.sleep(0.2 * SLOW)  # a retry leaves no trace until it comes: time for one to show
        c = self.fake_conn(name, before)
        self.assertEqual(credential_bytes(c.raw), [], "credentials reached the backend: %r" % bytes(c.raw[-300:]))
        self.assertNotEqual(c.handshake, "ok", c.log)
        self.assertEqual(bytes(c.app), b"", "bytes inside TLS")
        return c, data, lines


# ---------------------------------------------------------------- IMAP

IMAP_INJECT = (b"* CAPABILITY IMAP4rev1 AUTH=PLAIN XINJECTED\r\n* OK [ALERT] XINJECTED\r\n"
               b"* 1 FETCH (BODY[] {9}\r\nXINJECTED)\r\n* BYE XINJECTED\r\n")


class ImapBackendStarttls(BackendStarttlsCase):
    PROTO = "imap"
    CASES = {
        "ok": ({}, "good", {}),
        "greeting_caps": ({"greeting": b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED XPRETLS] fake ready\r\n"},
                          "good", {}),
        "post_caps_starttls": ({"caps_post": "IMAP4rev1 STARTTLS LOGINDISABLED AUTH=PLAIN XPOSTTLS"}, "good", {}),
        "c1_no_starttls": ({"caps_pre": "IMAP4rev1 AUTH=PLAIN LOGIN-REFERRALS"}, "good", {}),
        "c1_greeting_no_starttls": ({"greeting": b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] fake ready\r\n",
                                     "caps_pre": "IMAP4rev1 AUTH=PLAIN"}, "good", {}),
        "c2_bad": ({"tls_reply": lambda t: t + b" BAD STARTTLS not available\r\n", "after_ok": "plain"}, "good", {}),
        "c2_no": ({"tls_reply": lambda t: t + b" NO STARTTLS disabled\r\n", "after_ok": "plain"}, "good", {}),
        "c2_continuation": ({"tls_reply": lambda t: b"+ go ahead\r\n", "after_ok": "plain"}, "good", {}),
        "c3_preauth": ({"greeting": b"* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] Logged in as alice\r\n"},
                       "good", {}),
        "c4_inject": ({"inject": IMAP_INJECT}, "good", {}),
        "c4_junk": ({"inject": b"\x00\xffXINJECTED\x16\x03\x03\x00\x05junk\r\n"}, "good", {}),
        "c5_untagged": ({"pre": b"* 3 EXISTS\r\n* 0 RECENT\r\n* FLAGS (\\XINJECTED)\r\n"
                                b"* LIST () \"/\" XINJECTEDBOX\r\n",
                         "cap_extra": b"* STATUS INBOX (MESSAGES 99) XINJECTED\r\n* SEARCH 1 2 3\r\n"
                                      b"* 1 EXPUNGE\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN XINJECTED\r\n"},
                        "good", {}),
        "c6_referral": ({"greeting": b"* OK [REFERRAL imap://XINJECTED@evil.test/] fake ready\r\n",
                         "caps_pre": "IMAP4rev1 STARTTLS LOGIN-REFERRALS"}, "good", {}),
        "c7_alert": ({"greeting": b"* OK [ALERT] XINJECTED: your password expired, see evil.test\r\n",
                      "tls_reply": lambda t: t + b" OK [ALERT] XINJECTED begin TLS\r\n"}, "good", {}),
        "c7_badcharset": ({"pre": b"* NO [BADCHARSET (XINJECTED)] XINJECTED parse error at evil.test\r\n"},
                          "good", {}),
        "c11_split": ({"greeting_parts": [b"* OK fake ", b"imap ready\r\n"], "cap_split": split_lines},
                      "good", {}),
        "c12_bye": ({"greeting": b"* BYE server shutting down\r\n", "close_after_greeting": True}, "good", {}),
        "c13_close": ({"after_ok": "close"}, "good", {}),
        "c13_alert": ({"after_ok": "alert"}, "good", {}),
        "c9_selfsigned": ({}, "selfsigned", {}),
        "c9_wrongname": ({}, "wrongname", {}),
        "c9_expired": ({}, "expired", {}),
        "c10_silent_after_starttls": ({"tls_reply": lambda t: b"", "after_ok": "plain"}, "good",
                                      {"handshake_timeout": "2s"}),
        "c10_no_greeting": ({"greeting": b""}, "good", {"handshake_timeout": "2s"}),
        "c9_untrusted": ({}, "untrusted", {}),
    }

    def check_ok(self, name, early_login=False):
        f = self.fakes[name]
        before = f.count()
        s = self.connect(name)
        cport = s.getsockname()[1]
        login = ("a LOGIN %s %s\r\n" % (USER, PASSWORD)).encode()
        if early_login:
            s.sendall(login)
        r = Reader(s)
        greet = r.readline()
        self.assertRegex(greet, rb"^\* OK \[CAPABILITY [^\]]*\][^\r\n]*\r\n$")
        caps = imap_cap_lists(greet)[0]
        self.assertIn("XPOSTTLS", caps, "capabilities not re-read after TLS: %r" % greet)
        for bad in ("STARTTLS", "LOGINDISABLED", "XPRETLS"):
            self.assertNotIn(bad, [x.upper() for x in caps], greet)
        received = greet
        if early_login:
            resp = harness.imap_response(r, "a")
        else:
            resp = harness.imap_cmd(r, "c", "CAPABILITY")
            received += resp
            for lst in imap_cap_lists(resp):
                self.assertNotIn("STARTTLS", lst, resp)
                self.assertNotIn("LOGINDISABLED", lst, resp)
            self.assertIn(b"XPOSTTLS", resp)
            r.send(login)
            resp = harness.imap_response(r, "a")
        received += resp
        self.assertRegex(resp, rb"(?m)^a OK")
        r.send(b"z LOGOUT\r\n")
        rest = read_to_close(s, 5 * SLOW)
        self.assertIsNotNone(rest)
        s.close()
        received += rest
        self.assertNoInjected(received)
        c = self.fake_conn(name, before)
        self.assertEqual(c.handshake, "ok", c.log)
        self.assertEqual(c.sni, "localhost")
        self.assertEqual(credential_bytes(c.plain), [], "credentials before TLS: %r" % bytes(c.plain))
        cmds = [ln.split()[1].upper() for ln in c.pre_cmds]
        self.assertEqual(cmds[-1], b"STARTTLS", c.pre_cmds)
        self.assertTrue(set(cmds) <= {b"CAPABILITY", b"STARTTLS"}, c.pre_cmds)
        self.assertIn(login, bytes(c.app))
        self.assertRegex(bytes(c.app), rb"(?m)^\S+ CAPABILITY\r\n", "capabilities not re-read after TLS")
        start, end, lines = self.session(cport)
        self.assertEqual(start.fields.get("tls"), "off", start.raw)
        self.assertIn(end.fields["reason"], ("client-closed", "backend-closed"), end.raw)
        return c, received

    def test_happy_path(self):
        self.check_ok("ok")

    def test_greeting_with_capabilities(self):
        self.check_ok("greeting_caps")

    def test_post_tls_starttls_removed(self):
        """The backend's STARTTLS/LOGINDISABLED after TLS are removed."""
        self.check_ok("post_caps_starttls")

    def test_c8_early_login_held_until_tls(self):
        c, _ = self.check_ok("ok", early_login=True)

    def test_c1_starttls_not_offered(self):
        self.check_fails("c1_no_starttls")

    def test_c1_greeting_caps_without_starttls(self):
        self.check_fails("c1_greeting_no_starttls")

    def test_c2_refused_bad(self):
        self.check_fails("c2_bad")

    def test_c2_refused_no(self):
        self.check_fails("c2_no")

    def test_c2_continuation(self):
        self.check_fails("c2_continuation")

    def test_c3_preauth(self):
        self.check_fails("c3_preauth")

    def test_c4_injection_after_ok(self):
        self.check_ok("c4_inject")

    def test_c4_junk_after_ok(self):
        self.check_ok("c4_junk")

    def test_c5_untagged_not_relayed(self):
        self.check_ok("c5_untagged")

    def test_c6_referral_not_relayed(self):
        self.check_ok("c6_referral")

    def test_c7_alert_not_relayed(self):
        self.check_ok("c7_alert")

    def test_c7_badcharset_not_relayed(self):
        self.check_ok("c7_badcharset")

    def test_c11_split_segments(self):
        c, _ = self.check_ok("c11_split")
        self.assertEqual(c.premature, [], "postern sent before the response was complete")

    def test_c12_greeting_bye(self):
        self.check_fails("c12_bye", c12=True, warn=False)

    def test_c13_close_after_ok(self):
        self.check_fails("c13_close")

    def test_c13_alert_after_ok(self):
        self.check_fails("c13_alert")

    def test_c9_self_signed(self):
        self.check_fails("c9_selfsigned")

    def test_c9_wrong_name(self):
        _, _, lines = self.check_fails("c9_wrongname")
        self.assertTrue([ln for ln in lines if "hostname mismatch" in ln.msg], lines)

    def test_c9_expired(self):
        _, _, lines = self.check_fails("c9_expired")
        self.assertTrue([ln for ln in lines if "certificate has expired" in ln.msg], lines)

    def test_c9_untrusted(self):
        self.check_fails("c9_untrusted")

    def test_c10_silent_after_starttls(self):
        """The server never answers STARTTLS: handshake_timeout (2s) ends
        it with an error, no plaintext continuation."""
        t0 = time.monotonic()
        self.check_fails("c10_silent_after_starttls")
        self.assertGreater(time.monotonic() - t0, 1.5)

    def test_c10_no_greeting(self):
        t0 = time.monotonic()
        self.check_fails("c10_no_greeting")
        self.assertGreater(time.monotonic() - t0, 1.5)


# ---------------------------------------------------------------- POP3


class Pop3BackendStarttls(BackendStarttlsCase):
    PROTO = "pop3"
    CASES = {
        "ok": ({}, "good", {}),
        "no_timestamp": ({"greeting": b"+OK fake pop3 ready\r\n"}, "good", {}),
        "c1_no_stls": ({"caps_pre": ("USER", "SASL PLAIN", "TOP")}, "good", {}),
        "c2_err": ({"tls_reply": b"-ERR STLS not now\r\n", "after_ok": "plain"}, "good", {}),
        "c4_inject": ({"inject": b"+OK XINJECTED\r\n-ERR XINJECTED\r\n"}, "good", {}),
        "c11_split": ({"cap_split": split_lines}, "good", {}),
        "c12_err": ({"greeting": b"-ERR [SYS/TEMP] too busy\r\n", "close_after_greeting": True}, "good", {}),
        "c13_close": ({"after_ok": "close"}, "good", {}),
        "c9_wrongname": ({}, "wrongname", {}),
    }

    def check_ok(self, name):
        f = self.fakes[name]
        before = f.count()
        c = poplib.POP3("127.0.0.1", self.port(name), timeout=5 * SLOW)
        cport = c.sock.getsockname()[1]
        try:
            welcome = c.getwelcome()
            # postern's own greeting: nothing of the plaintext one (its APOP
            # stamp, which a man in the middle could choose) reaches the client
            self.assertEqual(welcome, b"+OK ready")
            self.assertNoInjected(welcome)
            capa = c.capa()
            self.assertNotIn("STLS", capa, capa)
            self.assertNotIn("XPRETLS", capa, capa)
            self.assertIn("XPOSTTLS", capa, capa)
            self.assertTrue(c.user(USER).startswith(b"+OK"))
            resp = c.pass_(PASSWORD)
            self.assertTrue(resp.startswith(b"+OK"), resp)
            self.assertNoInjected(resp)
            c.quit()
        finally:
            c.close()
        fc = self.fake_conn(name, before)
        self.assertEqual(fc.handshake, "ok", fc.log)
        self.assertEqual(credential_bytes(fc.plain), [], bytes(fc.plain))
        cmds = [ln.split()[0].upper() for ln in fc.pre_cmds]
        self.assertEqual(cmds[-1], b"STLS", fc.pre_cmds)
        self.assertTrue(set(cmds) <= {b"CAPA", b"STLS"}, fc.pre_cmds)
        self.assertIn(b"USER alice\r\nPASS secret\r\n", bytes(fc.app))
        self.session(cport)
        return fc

    def test_happy_path_plaintext_apop_stamp_not_relayed(self):
        self.check_ok("ok")

    def test_greeting_without_timestamp(self):
        self.check_ok("no_timestamp")

    def test_c1_stls_not_offered(self):
        self.check_fails("c1_no_stls")

    def test_c2_refused(self):
        self.check_fails("c2_err")

    def test_c4_injection_after_ok(self):
        self.check_ok("c4_inject")

    def test_c11_capa_split(self):
        fc = self.check_ok("c11_split")
        self.assertEqual(fc.premature, [], "postern sent before the CAPA response was complete")

    def test_c12_greeting_err(self):
        self.check_fails("c12_err", c12=True, warn=False)

    def test_c13_close_after_ok(self):
        self.check_fails("c13_close")

    def test_c9_wrong_name(self):
        self.check_fails("c9_wrongname")


# ---------------------------------------------------------------- SMTP

HELO = "client.example.test"


class SmtpBackendStarttls(BackendStarttlsCase):
    PROTO = "smtp"
    CASES = {
        "ok": ({}, "good", {"helo_name": HELO}),
        "post_caps_starttls": ({"caps_post": ("STARTTLS", "AUTH PLAIN LOGIN", "XPOSTTLS")}, "good",
                               {"helo_name": HELO}),
        "c1_no_starttls": ({"caps_pre": ("PIPELINING", "AUTH PLAIN LOGIN", "8BITMIME")}, "good", {"helo_name": HELO}),
        "c2_454": ({"tls_reply": b"454 4.7.0 TLS not available due to temporary reason\r\n", "after_ok": "plain"},
                   "good", {"helo_name": HELO}),
        "c4_inject": ({"inject": b"250 AUTH LOGIN XINJECTED\r\n", "tls_reply": b"220 ok\r\n"}, "good",
                      {"helo_name": HELO}),
        "c11_split": ({"greeting_parts": [b"220-fake.test ESMTP\r\n", b"220-second greeting line\r\n",
                                          b"220 last greeting line\r\n"],
                       "cap_split": split_lines}, "good", {"helo_name": HELO}),
        "c12_554": ({"greeting": b"554 5.3.2 No service here\r\n", "close_after_greeting": True}, "good",
                    {"helo_name": HELO}),
        "c12_421": ({"greeting": b"421 4.3.2 Too busy\r\n", "close_after_greeting": True}, "good",
                    {"helo_name": HELO}),
        "c13_close": ({"after_ok": "close"}, "good", {"helo_name": HELO}),
        "c9_selfsigned": ({}, "selfsigned", {"helo_name": HELO}),
    }

    def check_ok(self, name):
        f = self.fakes[name]
        before = f.count()
        c = smtplib.SMTP("127.0.0.1", self.port(name), timeout=5 * SLOW)
        cport = c.sock.getsockname()[1]
        try:
            code, msg = c.ehlo("client.test")
            self.assertEqual(code, 250, msg)
            self.assertNoInjected(msg)
            self.assertFalse(c.has_extn("starttls"), msg)
            self.assertTrue(c.has_extn("xposttls"), "EHLO not from after TLS: %r" % msg)
            c.login(USER, PASSWORD)
            c.sendmail("alice@example.test", ["bob@example.test"], b"Subject: hi\r\n\r\nthrough TLS\r\n")
            c.quit()
        finally:
            c.close()
        fc = self.fake_conn(name, before)
        self.assertEqual(fc.handshake, "ok", fc.log)
        self.assertEqual(fc.pre_cmds, [("EHLO %s\r\n" % HELO).encode(), b"STARTTLS\r\n"], "pre-TLS dialogue")
        app = bytes(fc.app)
        self.assertTrue(app.startswith(("EHLO %s\r\n" % HELO).encode()), "capabilities not re-read after TLS: %r"
                        % app[:100])
        self.assertIn(b"EHLO CLIENT.TEST\r\n", app.upper())
        self.assertIn(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret"), app)
        self.assertIn(b"through TLS", app)
        self.assertEqual(credential_bytes(fc.plain), [], bytes(fc.plain))
        self.session(cport)
        return fc

    def test_greeting_is_220(self):
        f = self.fakes["ok"]
        s = self.connect("ok")
        r = Reader(s)
        line = r.readline()
        while line[:4] == b"220-":
            line = r.readline()
        self.assertRegex(line, rb"^220 ")
        c = f.last()
        self.assertEqual(c.handshake, "ok", "greeted before TLS to the backend was up")
        r.send(b"QUIT\r\n")
        self.assertTrue(r.readline().startswith(b"221"))

    def test_happy_path_helo_name(self):
        self.check_ok("ok")

    def test_post_tls_starttls_removed(self):
        self.check_ok("post_caps_starttls")

    def test_c1_starttls_not_offered(self):
        self.check_fails("c1_no_starttls")

    def test_c2_454(self):
        self.check_fails("c2_454")

    def test_c4_injection_after_220(self):
        self.check_ok("c4_inject")

    def test_c11_multiline_split(self):
        fc = self.check_ok("c11_split")
        self.assertEqual(fc.premature, [], "postern sent before the reply was complete")

    def test_c12_greeting_554(self):
        self.check_fails("c12_554", c12=True, warn=False)

    def test_c12_greeting_421(self):
        self.check_fails("c12_421", c12=True, warn=False)

    def test_c13_close_after_220(self):
        self.check_fails("c13_close")

    def test_c9_self_signed(self):
        self.check_fails("c9_selfsigned")
