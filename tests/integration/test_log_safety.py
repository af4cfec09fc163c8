"""Logs never carry a secret or a forged field.

Forged fields and lines: a TLS SNI is free text for OpenSSL (any byte but
NUL), and commands after TLS may hold any byte. The log must show a SNI only
when it is a host name (else `sni=(invalid)`), JSON keys only postern's own,
and every output (text log, JSON log, transcript) must be valid UTF-8 whose
lines are the same for a byte reader and for Python's `splitlines()`, with a
NUL no longer cutting a line (those bytes come from a server's line: the
adapters refuse a client's line holding them). The SNI comes from Python's ssl (printable
ASCII with spaces) and `openssl s_client -servername` (8-bit bytes, U+2028).

Redaction for the whole session: an SMTP server that quotes the client's
SASL response and its decoded password in its refusal (an odd peer: a small
fake), and `AUTH PLAIN<TAB><b64>` to aiosmtpd after TLS and to postern before
TLS: neither the base64 nor the password is in any byte postern wrote.
"""

import base64
import json
import socket
import ssl
import subprocess

from harness import SLOW, recv_until, svc
from test_commandlog import Conn, Fake, LogCase, smtp_cmd, smtp_greet, smtp_quit

FORGED_SNI = "mail.example.com client=203.0.113.66:4444 level=error service=evil"
# U+2028, 8-bit bytes, an ESC: only s_client sends these
RAW_SNI = b"mail\xe2\x80\xa8.example.com\xff\x1b[31m level=error"
# from a server: LS, NEL, PS, an invalid byte, NUL, ESC, CR inside the line
ODD_BYTES = b"x\xe2\x80\xa8y\xc2\x85z\xe2\x80\xa9\xff\x00w\x1b[31m\rv"
ODD_SHOWN = "x\\u2028y\\u0085z\\u2029\\xff\\x00w\\x1b[31m\\x0dv"

PW = "Ech0ed-uniq-PW-9134"
PLAIN = base64.b64encode(b"\0alice\0" + PW.encode()).decode()


def strict_lines(data, what):
    """The lines of DATA (bytes), checked: valid UTF-8, ending with a newline,
    and str.splitlines() sees exactly the lines split on b"\\n"."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AssertionError("%s is not valid UTF-8 (%s): ...%r..." % (what, e, data[max(0, e.start - 80) : e.start + 80]))
    rows = data.split(b"\n")
    if rows[-1] != b"":
        raise AssertionError("%s does not end with a newline: %r" % (what, data[-200:]))
    lines = text.splitlines()
    if len(lines) != len(rows) - 1:
        extra = [ln for ln in lines if ln.encode() not in rows]
        raise AssertionError("%s: splitlines() sees %d lines, a byte reader %d; forged: %r"
                             % (what, len(lines), len(rows) - 1, extra[:5]))
    return lines


def unique_keys(pairs):
    keys = [k for k, _ in pairs]
    dups = sorted({k for k in keys if keys.count(k) > 1})
    if dups:
        raise AssertionError("JSON keys given twice: %r in %r" % (dups, pairs))
    return dict(pairs)


def json_objects(data, what):
    return [json.loads(ln, object_pairs_hook=unique_keys) for ln in strict_lines(data, what)]


def log_bytes(p):
    with open(p.logfile, "rb") as f:
        return f.read()


class SafeLogCase(LogCase):
    def all_outputs_strict(self, p):
        """Every file postern wrote (log, stderr, transcripts) passes strict_lines."""
        for name, data in self.outputs(p).items():
            if data:
                strict_lines(data, name)

    def capture_of(self, session_id):
        caps = self.captures()
        self.assertIn(session_id, caps, sorted(caps))
        return caps[session_id]


# ---------------------------------------------------------------- SNI


class SniNeverForgesFields(SafeLogCase):
    def sni_session(self, p, sni):
        """An IMAP session with SNI `sni` (str: Python's ssl; bytes:
        s_client); returns the client's local port."""
        if isinstance(sni, bytes):
            r = subprocess.run([b"openssl", b"s_client", b"-quiet", b"-connect", b"127.0.0.1:%d" % p.port("imaps"),
                                b"-servername", sni], input=b"a LOGOUT\r\n", capture_output=True,
                               timeout=20 * SLOW)
            self.assertIn(b"a OK", r.stdout, r.stderr[-2000:])
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", p.port("imaps")), timeout=10 * SLOW) as raw:
            port = raw.getsockname()[1]
            with ctx.wrap_socket(raw, server_hostname=sni) as s:
                s.sendall(b"a LOGOUT\r\n")
                self.assertIn(b"a OK", recv_until(s, b"a OK"))
        return port

    def test_forged_sni_is_invalid_in_text_log(self):
        p = self.start([("imaps", svc("imap"))], level="info")
        port = self.sni_session(p, FORGED_SNI)
        self.wait_end(p, "imaps", port)
        self.sni_session(p, RAW_SNI)
        good = self.sni_session(p, "localhost")
        self.wait_end(p, "imaps", good)
        p.stop()
        lines = strict_lines(log_bytes(p), p.logfile)
        starts = [ln for ln in lines if " start tls=" in ln]
        self.assertEqual(len(starts), 3, lines)
        for ln in starts[:2]:
            self.assertTrue(ln.endswith(" sni=(invalid)"), ln)
        self.assertTrue(starts[2].endswith(" sni=localhost"), starts[2])
        text = "\n".join(lines)
        self.assertNotIn("203.0.113.66", text)
        self.assertNotIn("level=error", text)

    def test_forged_sni_adds_no_json_key(self):
        p = self.start([("imaps", svc("imap"))], level="info", log_format="json")
        port = self.sni_session(p, FORGED_SNI)
        self.sni_session(p, RAW_SNI)
        p.stop()
        objs = json_objects(log_bytes(p), p.logfile)  # duplicate keys raise
        starts = [o for o in objs if o.get("event") == "start"]
        self.assertEqual(len(starts), 2, objs)
        mine = [o for o in starts if o.get("client") == "127.0.0.1:%d" % port]
        self.assertEqual(len(mine), 1, starts)
        for o in starts:
            self.assertEqual((o["level"], o["service"], o.get("sni")), ("info", "imaps", "(invalid)"), o)
            self.assertNotIn("msg", o, o)
        self.assertNotIn("203.0.113.66", json.dumps(objs))


# ---------------------------------------------------------------- bytes of commands


class CommandBytesEscaped(SafeLogCase):
    """The adapters refuse, and log as `***`, a client line with such bytes
    (they cannot parse it), so the bytes come from the server: an SMTP
    server (a small fake) whose greeting carries them, which postern passes
    on unchanged and must log escaped."""

    def odd_session(self, p):
        c = Conn(p.port("smtps"), tls=True)
        try:
            self.assertEqual(c.line().rstrip(b"\r\n"), b"220 " + ODD_BYTES)
            smtp_quit(c)
        finally:
            c.close()
        return c.local_port

    def start_odd(self, **kw):
        fake = Fake("smtp", greeting=b"220 " + ODD_BYTES + b"\r\n")
        self.addCleanup(fake.stop)
        return self.start([("smtps", svc("smtp", backend=fake.address))], level="info", **kw)

    def test_text_log_and_transcript(self):
        p = self.start_odd()
        port = self.odd_session(p)
        end = self.wait_end(p, "smtps", port)
        p.stop()
        lines = strict_lines(log_bytes(p), p.logfile)
        greetings = [ln for ln in lines if " S: 220 " in ln]
        self.assertEqual(len(greetings), 1, lines)
        self.assertTrue(greetings[0].endswith(" S: 220 " + ODD_SHOWN), greetings[0])
        self.all_outputs_strict(p)
        cap = self.capture_of(end.sid)
        self.assertIn(("S", "220 " + ODD_SHOWN), [(side, text) for _, side, text in cap["lines"]])

    def test_json_log(self):
        p = self.start_odd(log_format="json")
        port = self.odd_session(p)
        p.stop()
        objs = json_objects(log_bytes(p), p.logfile)
        client = "127.0.0.1:%d" % port
        replies = [o for o in objs if o.get("client") == client and o.get("event") == "reply"]
        self.assertEqual([o["line"] for o in replies][:1], ["220 " + ODD_SHOWN], objs)
        self.all_outputs_strict(p)


# ---------------------------------------------------------------- secrets for the whole session


class EchoingSmtp(Fake):
    """An odd SMTP server that quotes the client's SASL response, and the
    password it decodes to, in its refusal."""

    def _smtp_command(self, c, cmd, words, readline, readn):
        if cmd != "AUTH":
            return super()._smtp_command(c, cmd, words, readline, readn)
        if len(words) > 2:
            resp = words[2]
        else:
            c.send(b"334 \r\n")
            resp = readline().strip()
        pw = base64.b64decode(resp).split(b"\0")[-1]
        c.send(b"535 5.7.8 response " + resp + b" refused: bad password " + pw + b"\r\n")
        return False


class SecretsMaskedForTheSession(SafeLogCase):
    def no_secret(self, p):
        return self.assertNoLeak(p, plain=[PW], b64s=[PLAIN])

    def test_server_echo_of_sasl_response_masked(self):
        fake = EchoingSmtp("smtp")
        self.addCleanup(fake.stop)
        p = self.start([("smtps", svc("smtp", backend=fake.address))], level="debug")
        c = Conn(p.port("smtps"), tls=True)
        try:
            smtp_greet(c)
            # the server does echo both: a log that showed its replies would leak
            echo = b"535 5.7.8 response " + PLAIN.encode() + b" refused: bad password " + PW.encode()
            self.assertEqual(smtp_cmd(c, "AUTH PLAIN " + PLAIN)[-1], echo)
            self.assertEqual(smtp_cmd(c, "AUTH PLAIN")[-1], b"334 ")
            self.assertEqual(smtp_cmd(c, PLAIN)[-1], echo)
            smtp_quit(c)
        finally:
            c.close()
        end = self.wait_end(p, "smtps", c.local_port)
        p.stop()
        _, lines = self.session(p, "smtps", c.local_port)
        replies = [self.text(ln) for ln in lines if ln.event == "S:" and "535" in ln.msg]
        self.assertEqual(replies, ["535 5.7.8 response *** refused: bad password ***"] * 2, lines)
        cap = self.capture_of(end.sid)
        self.assertEqual([t for _, side, t in cap["lines"] if side == "S" and t.startswith("535")],
                         ["535 5.7.8 response *** refused: bad password ***"] * 2)
        self.no_secret(p)

    def test_upper_case_echo_of_early_response_masked(self):
        """aiosmtpd echoes an unknown command in upper case: a SASL response
        sent before the server refused its AUTH comes back that way, from
        which trying the letter cases would find the password."""
        p = self.start([("smtps", svc("smtp"))], level="debug")
        c = Conn(p.port("smtps"), tls=True)
        try:
            smtp_greet(c)
            c.send(b"AUTH FOO\r\n" + PLAIN.encode() + b"\r\n")
            self.assertRegex(c.line(), rb"^5\d\d ")
            self.assertIn(PLAIN.upper().encode(), c.line())
            smtp_quit(c)
        finally:
            c.close()
        self.wait_end(p, "smtps", c.local_port)
        p.stop()
        _, lines = self.session(p, "smtps", c.local_port)
        self.assertIn('500 Error: command "***" not recognized', [self.text(ln) for ln in lines])
        self.assertNotIn(PLAIN.upper(), log_bytes(p).decode(errors="replace"))
        self.no_secret(p)

    def test_auth_plain_tab_response_not_logged(self):
        """aiosmtpd (and Postfix) take `AUTH PLAIN<TAB><b64>`; after TLS to
        aiosmtpd, and before TLS where postern refuses it."""
        p = self.start([("smtps", svc("smtp")),
                        ("submission", svc("smtp", tls="starttls"))], level="debug")
        ports = []
        for service, tls in (("smtps", True), ("submission", False)):
            c = Conn(p.port(service), tls=tls)
            try:
                smtp_greet(c)
                reply = smtp_cmd(c, "AUTH PLAIN\t" + PLAIN)[-1]
                self.assertRegex(reply, rb"^5\d\d ")
                smtp_quit(c)
            finally:
                c.close()
            self.wait_end(p, service, c.local_port)
            ports.append((service, c.local_port))
        p.stop()
        # After TLS the mechanism is shown; before TLS postern refuses the
        # malformed line without showing any of it.
        expected = {"smtps": "AUTH PLAIN ***", "submission": "(malformed command)"}
        for service, port in ports:
            _, lines = self.session(p, service, port)
            auth = [self.text(ln) for ln in lines if ln.event == "C:"
                    and self.text(ln) not in ("QUIT",) and not self.text(ln).startswith("EHLO")]
            self.assertEqual(auth, [expected[service]], lines)
        self.no_secret(p)
