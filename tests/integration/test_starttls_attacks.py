"""Malicious clients against `tls = starttls` (issue 3), one test per item
of tests/security-checklist.md that needs a live attacker:

S1-S3  command injection after STARTTLS/STLS in the same segment
S4     injection in a second segment before the handshake
S5     plaintext garbage and a ClientHello in one write
S6     an injected SMTP transaction that would steal the victim's mail/AUTH
S7     an injected IMAP APPEND literal that would store the victim's LOGIN
S13    idle, slow-drip and stalled-handshake clients bounded by handshake_timeout
S14    a ClientHello straight away on a STARTTLS port
P3     backend bytes during the client handshake go inside TLS, never raw
P4     injected client bytes never reach the backend

Real servers (Dovecot, aiosmtpd) where the effect is observable there;
recording fake backends where only "never forwarded" can show it."""

import re
import socket
import ssl
import threading
import time

from harness import PASSWORD, SLOW, USER, client_hello, env, read_to_close
from starttls_util import (
    IMAP_BEGIN,
    POP3_BEGIN,
    SMTP_READY,
    Client,
    StarttlsCase,
    TlsByHand,
    imap_lines,
    imap_response,
    imap_tagged,
    mailbox_messages,
    sasl_plain,
    smtp_keywords,
    smtp_reply,
    starttls_svc,
    tls_records,
)

BEGIN = {"imap": b"A " + IMAP_BEGIN + b"\r\n", "pop3": POP3_BEGIN + b"\r\n", "smtp": SMTP_READY + b"\r\n"}
STARTTLS_CMD = {"imap": b"A STARTTLS\r\n", "pop3": b"STLS\r\n", "smtp": b"STARTTLS\r\n"}
GREETING = {"imap": b"* OK", "pop3": b"+OK", "smtp": b"220"}


class Attacks(StarttlsCase):
    @classmethod
    def make_services(cls):
        cls.fb = {k: cls.fake(k) for k in ("imap", "pop3", "smtp")}
        services = [(k, starttls_svc(k)) for k in ("imap", "pop3", "smtp")]
        services += [("f" + k, starttls_svc(k, backend=cls.fb[k].address)) for k in ("imap", "pop3", "smtp")]
        return services

    # ------------------------------------------------------------ helpers
    def connect(self, name):
        """Connected and greeted; for SMTP also EHLO'd."""
        proto = name.lstrip("f")
        c = self.client(name)
        greet = smtp_reply(c)[0] if proto == "smtp" else c.line()
        self.assertTrue(greet.startswith(GREETING[proto]), greet)
        if proto == "smtp":
            c.send(b"EHLO client.test\r\n")
            self.assertIn("STARTTLS", smtp_keywords(smtp_reply(c)))
        return c

    def fake_conn(self, proto, n):
        return self.fb[proto].conn(n)

    def assertNothingMore(self, c):
        extra = c.quiet()
        self.assertEqual(extra, b"", "unexpected bytes inside TLS (an injected command answered?)")

    # ------------------------------------------------------------ S1 S2 S3
    def test_S1_smtp_injection_one_segment(self):
        for inj in (b"RSET\r\n", b"EHLO evil.test\r\n", b"NOOP\r\nNOOP\r\nQUIT\r\n"):
            with self.subTest(injected=inj):
                c = self.connect("smtp")
                c.send(b"STARTTLS\r\n" + inj)
                self.assertEqual(c.line(), SMTP_READY + b"\r\n")
                c.starttls()
                c.send(b"EHLO victim.test\r\n")
                lines = smtp_reply(c)
                self.assertTrue(lines[0].startswith(b"250-"), "first reply inside TLS is not the EHLO reply: %r" % lines)
                self.assertIn("SIZE", smtp_keywords(lines))
                self.assertNothingMore(c)
                self.assertEqual(c.cmd(b"NOOP\r\n"), b"250 OK\r\n")
                self.assertDiscardLogged(c.local_port, len(inj))

    def test_S2_imap_injection_one_segment(self):
        for inj in (b"X NOOP\r\n", b"X CAPABILITY\r\nX2 LOGOUT\r\n"):
            with self.subTest(injected=inj):
                c = self.connect("imap")
                c.send(b"A STARTTLS\r\n" + inj)
                self.assertEqual(c.line(), b"A " + IMAP_BEGIN + b"\r\n")
                c.starttls()
                c.send(b"Y NOOP\r\n")
                resp = imap_response(c, "Y")
                self.assertEqual(imap_lines(resp), [imap_tagged(resp, "Y")], "more than Y's reply: %r" % resp)
                self.assertTrue(resp.startswith(b"Y OK"), resp)
                self.assertNothingMore(c)
                self.assertDiscardLogged(c.local_port, len(inj))

    def test_S3_pop3_injection_one_segment(self):
        for inj in (b"CAPA\r\n", b"USER evil\r\nQUIT\r\n"):
            with self.subTest(injected=inj):
                c = self.connect("pop3")
                c.send(b"STLS\r\n" + inj)
                self.assertEqual(c.line(), POP3_BEGIN + b"\r\n")
                c.starttls()
                self.assertEqual(c.cmd("USER %s\r\n" % USER), b"+OK\r\n")
                self.assertNothingMore(c)
                self.assertEqual(c.cmd("PASS %s\r\n" % PASSWORD)[:3], b"+OK")
                self.assertDiscardLogged(c.local_port, len(inj))

    # ------------------------------------------------------------ S4
    def test_S4_split_segment_injection(self):
        """The injected command in a second segment, right after STARTTLS or
        a moment later but before the client starts TLS: the handshake
        fails, or the bytes are dropped; never executed, never forwarded."""
        cases = {
            "imap": (b"X NOOP\r\n", b"Y NOOP\r\n", b"Y OK NOOP done\r\n"),
            "pop3": (b"USER evil\r\n", b"NOOP\r\n", b"+OK NOOP done\r\n"),
            "smtp": (b"MAIL FROM:<evil@evil.test>\r\n", b"EHLO victim.test\r\n", None),
        }
        for proto, (inj, real, real_reply) in cases.items():
            for delay in (0.0, 0.05):
                with self.subTest(proto=proto, delay=delay):
                    n = self.fb[proto].count()
                    c = self.connect("f" + proto)
                    c.send(STARTTLS_CMD[proto])
                    if delay:
                        time.sleep(delay)
                    c.send(inj)
                    self.assertEqual(c.line(), BEGIN[proto])
                    try:
                        c.starttls()
                        ok = True
                    except (ssl.SSLError, OSError):
                        ok = False
                    if ok:
                        try:
                            c.send(real)
                            got = c.quiet()
                        except (ssl.SSLError, OSError):
                            got = None
                        if got:
                            if real_reply is None:  # the EHLO reply, nothing else
                                self.assertTrue(got.startswith(b"250-fake.test\r\n"), got)
                                self.assertEqual(len(re.findall(rb"(?m)^\d{3} ", got)), 1, got)
                            else:
                                self.assertEqual(got, real_reply, "injected bytes answered inside TLS")
                            rec = self.fake_conn(proto, n).data()
                            self.assertTrue(rec.endswith(real), rec)
                    c.close()
                    _, end = self.assertSessionEnd(self.p, c.local_port)
                    if not ok:
                        self.assertEqual(end.fields.get("reason"), "handshake-failed", end.raw)
                    rec = self.fake_conn(proto, n).data()
                    self.assertNotIn(inj.strip(), rec, "injected bytes reached the backend")

    # ------------------------------------------------------------ S5
    def test_S5_garbage_then_clienthello_one_write(self):
        for name, garbage in (("fimap", b"X NOOP\r\n"), ("fsmtp", b"RSET\r\n"), ("fpop3", b"\x00\x01garbage")):
            proto = name[1:]
            with self.subTest(service=name):
                n = self.fb[proto].count()
                c = self.connect(name)
                self.assertEqual(c.cmd(STARTTLS_CMD[proto]), BEGIN[proto])
                c.send(garbage + client_hello())
                data = read_to_close(c.sock, 5 * SLOW)
                self.assertIsNotNone(data, "connection still open 5 s after a garbled handshake")
                self.assertNotEqual(data[:1], b"\x16", "the server answered the ClientHello behind the garbage")
                if data:
                    tls_records(data)  # an alert at most, never plaintext
                _, end = self.assertSessionEnd(self.p, c.local_port)
                self.assertEqual(end.fields.get("reason"), "handshake-failed", end.raw)
                rec = self.fake_conn(proto, n).data()
                self.assertNotIn(garbage.strip(), rec)

    # ------------------------------------------------------------ S6 S7
    def test_S6_smtp_injected_transaction_not_delivered(self):
        """Injected MAIL/RCPT/DATA after STARTTLS would make the victim's
        next lines (AUTH, a whole mail) the body of a mail to the attacker."""
        tag = "%d" % time.monotonic_ns()
        attacker = "attacker-%s@evil.test" % tag
        c = self.connect("smtp")
        c.send(("STARTTLS\r\nMAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (attacker, attacker)).encode())
        self.assertEqual(c.line(), SMTP_READY + b"\r\n")
        c.starttls()
        # the victim
        c.send(b"EHLO victim.test\r\n")
        lines = smtp_reply(c)
        self.assertTrue(lines[0].startswith(b"250-"), lines)
        c.send(("AUTH PLAIN %s\r\n" % sasl_plain("victim", "pw-" + tag)).encode())
        self.assertNotEqual(smtp_reply(c)[-1][:3], b"354")
        marker = ("victim-mail-%s" % tag).encode()
        self.assertEqual(c.cmd(b"MAIL FROM:<victim@example.test>\r\n"), b"250 OK\r\n")
        self.assertEqual(c.cmd(b"RCPT TO:<friend@example.test>\r\n"), b"250 OK\r\n")
        self.assertEqual(c.cmd(b"DATA\r\n")[:3], b"354")
        c.send(b"Subject: hi\r\n\r\n" + marker + b"\r\n.\r\n")
        self.assertEqual(smtp_reply(c)[-1][:3], b"250")
        self.assertEqual(c.cmd(b"QUIT\r\n")[:3], b"221")
        c.close()
        self.assertSessionEnd(self.p, c.local_port)
        time.sleep(0.2 * SLOW)  # a mail that must not arrive has no event: time for one to show
        msgs = env().smtp_messages()
        to_attacker = [m for m, body in msgs if attacker in m["rcpt_tos"] or m["mail_from"] == attacker]
        self.assertEqual(to_attacker, [], "a mail went to the attacker")
        mine = [(m, body) for m, body in msgs if marker in body]
        self.assertEqual(len(mine), 1, mine)
        self.assertEqual(mine[0][0]["mail_from"], "victim@example.test")
        self.assertEqual(mine[0][0]["rcpt_tos"], ["friend@example.test"])
        self.assertNotIn(b"AUTH", mine[0][1])
        self.assertNotIn(b"EHLO", mine[0][1])

    def test_S7_imap_injected_append_literal(self):
        """`A STARTTLS` then an APPEND with a literal sized for the victim's
        LOGIN line (with and without the attacker logging in first): the
        victim's post-TLS LOGIN works and nothing lands in any mailbox."""
        bob_before, _ = mailbox_messages("bob", "hunter2")
        alice_before, _ = mailbox_messages(USER, PASSWORD)
        victim = ("D LOGIN %s %s\r\n" % (USER, PASSWORD)).encode()
        for inj in (b"B APPEND INBOX {%d}\r\n" % len(victim),
                    b"B LOGIN bob hunter2\r\nC APPEND INBOX {%d+}\r\n" % len(victim)):
            with self.subTest(injected=inj):
                c = self.connect("imap")
                c.send(b"A STARTTLS\r\n" + inj)
                self.assertEqual(c.line(), b"A " + IMAP_BEGIN + b"\r\n")
                c.starttls()
                c.send(victim)
                resp = imap_response(c, "D")
                self.assertTrue(imap_tagged(resp, "D").startswith(b"D OK"), resp)
                self.assertFalse([ln for ln in imap_lines(resp) if ln[:2] in (b"B ", b"C ")], resp)
                c.send(b"E SELECT INBOX\r\n")
                resp = imap_response(c, "E")
                self.assertIn(b"* %d EXISTS" % alice_before, resp)
                c.send(b"F LOGOUT\r\n")
                imap_response(c, "F")
                c.close()
                self.assertSessionEnd(self.p, c.local_port)
        bob_after, bob_text = mailbox_messages("bob", "hunter2")
        alice_after, alice_text = mailbox_messages(USER, PASSWORD)
        self.assertEqual(bob_after, bob_before, "a message was appended to bob's INBOX")
        self.assertEqual(alice_after, alice_before, "a message was appended to alice's INBOX")
        self.assertNotIn(PASSWORD.encode() + b"\r\n", bob_text)

    # ------------------------------------------------------------ S14
    def test_S14_clienthello_straight_away(self):
        """A ClientHello as the first bytes (before any STARTTLS), sent at
        once, after the greeting, or only its first 5 bytes: postern closes
        at once (handshake_timeout is 30 s here), never answers with TLS,
        never forwards it, and logs the session's end."""
        hello = client_hello()
        for name in ("fimap", "fpop3", "fsmtp", "imap", "pop3", "smtp"):
            proto = name.lstrip("f")
            for how in ("immediately", "after-greeting", "partial"):
                with self.subTest(service=name, how=how):
                    fb = self.fb.get(proto) if name.startswith("f") else None
                    n = fb.count() if fb else 0
                    c = self.client(name)
                    if how == "immediately":
                        c.send(hello)
                    else:
                        self.assertTrue(c.line().startswith(GREETING[proto]))
                        time.sleep(0.1)  # a ClientHello some time after the greeting is the case under test
                        c.send(hello if how == "after-greeting" else hello[:5])
                    t0 = time.monotonic()
                    data = read_to_close(c.sock, 5 * SLOW)
                    took = time.monotonic() - t0
                    self.assertIsNotNone(data, "still open 5 s after a ClientHello on a STARTTLS port")
                    self.assertLess(took, 1.0 * SLOW, "closed only after %.2fs" % took)
                    self.assertNotIn(b"\x16\x03\x03", data, "postern answered the ClientHello with TLS")
                    c.close()
                    _, end = self.assertSessionEnd(self.p, c.local_port)
                    self.assertIn(end.fields.get("reason"), ("handshake-failed", "refused"), end.raw)
                    if fb:
                        time.sleep(0.05)  # bytes that must not reach the fake have no event: time for them
                        rec = fb.conn(n).data() if fb.count() > n else b""
                        self.assertNotIn(b"\x16\x03", rec, "the ClientHello was forwarded to the backend")

    # ------------------------------------------------------------ P3 P4
    def test_P3_backend_bytes_while_waiting_for_clienthello(self):
        """Backend bytes arriving after the STARTTLS OK, before the client
        starts TLS: nothing raw on the socket; delivered inside TLS."""
        n = self.fb["imap"].count()
        c = self.connect("fimap")
        self.assertEqual(c.cmd(b"A STARTTLS\r\n"), BEGIN["imap"])
        pushed = b"* OK pushed while waiting for the ClientHello\r\n"
        self.fake_conn("imap", n).send(pushed)
        time.sleep(0.3 * SLOW)  # raw bytes that must not come have no event: time for them to show
        self.assertEqual(c.raw_pending(), b"", "backend bytes written raw after the STARTTLS OK")
        c.starttls()
        c.send(b"B NOOP\r\n")
        resp = imap_response(c, "B")
        self.assertIn(pushed, resp, "the backend's bytes were not delivered inside TLS")
        self.assertTrue(resp.endswith(b"B OK NOOP done\r\n"), resp)

    def test_P3_backend_bytes_during_handshake(self):
        """Backend bytes arriving between the ClientHello and the client's
        Finished: every byte on the wire is a TLS record; the bytes come
        inside TLS afterwards."""
        for proto, name in (("imap", "fimap"), ("pop3", "fpop3")):
            with self.subTest(proto=proto):
                n = self.fb[proto].count()
                c = self.connect(name)
                self.assertEqual(c.cmd(STARTTLS_CMD[proto]), BEGIN[proto])
                t = TlsByHand(c.raw)
                self.assertFalse(t.step())  # ClientHello sent
                t.receive(0.2)  # the server's first flight (TLS 1.3: up to its Finished)
                pushed = b"* OK pushed during the handshake\r\n" if proto == "imap" else b"+OK pushed during the handshake\r\n"
                self.fake_conn(proto, n).send(pushed)
                t.receive(0.3)  # raises on any plaintext
                t.handshake()
                got = t.read_until(pushed)
                self.assertTrue(got.startswith(pushed), got)
                records, used = tls_records(t.wire)
                self.assertEqual(used, len(t.wire))

    def test_P4_injected_bytes_never_reach_backend(self):
        cases = {
            "imap": (b"A STARTTLS\r\nX NOOP\r\n", b"Y NOOP\r\n", b"Y OK NOOP done\r\n", b""),
            "pop3": (b"STLS\r\nUSER evil\r\n", b"NOOP\r\n", b"+OK NOOP done\r\n", b""),
            "smtp": (b"STARTTLS\r\nMAIL FROM:<evil@evil.test>\r\n", b"EHLO victim.test\r\n", None, b"EHLO client.test\r\n"),
        }
        for proto, (attack, real, real_reply, pre) in cases.items():
            with self.subTest(proto=proto):
                n = self.fb[proto].count()
                c = self.connect("f" + proto)
                c.send(attack)
                self.assertEqual(c.line(), BEGIN[proto])
                c.starttls()
                c.send(real)
                if real_reply is None:
                    self.assertIn("AUTH", smtp_keywords(smtp_reply(c)))
                else:
                    self.assertEqual(c.line(), real_reply)
                self.assertNothingMore(c)
                self.assertEqual(self.fake_conn(proto, n).data(), pre + real)
                self.assertDiscardLogged(c.local_port, len(attack) - len(STARTTLS_CMD[proto]))


class HandshakeTimeout(StarttlsCase):
    @classmethod
    def make_services(cls):
        return [(k, starttls_svc(k, handshake_timeout="2s")) for k in ("imap", "pop3", "smtp")]

    def test_S13_pre_tls_phase_bounded(self):
        """handshake_timeout (2 s) bounds the plaintext phase plus the
        handshake: idle clients, clients busy with plaintext commands, a
        slowloris line, a stalled handshake and a dripped ClientHello all
        end at ~2 s with reason=handshake-failed; the plaintext ones get
        the protocol's goodbye (* BYE, -ERR, 421) first."""
        hello = client_hello()
        results = {}

        def drive(label, name, preamble, steps, interval):
            try:
                c = Client(self.port(name))
                t0 = time.monotonic()
                c.sock.settimeout(0.05)
                data = bytearray()
                i = 0
                sent_preamble = False
                next_step = time.monotonic()
                while time.monotonic() - t0 < 6 * SLOW:
                    now = time.monotonic()
                    if not sent_preamble and now - t0 > 0.1:
                        if preamble:
                            c.raw.sendall(preamble)
                        sent_preamble = True
                        next_step = now + interval
                    elif sent_preamble and i < len(steps) and now >= next_step:
                        try:
                            c.raw.sendall(steps[i])
                        except OSError:
                            pass
                        i += 1
                        next_step = now + interval
                    try:
                        chunk = c.raw.recv(65536)
                    except (socket.timeout, TimeoutError):
                        continue
                    except OSError:
                        break
                    if not chunk:
                        break
                    data += chunk
                results[label] = (time.monotonic() - t0, bytes(data), c.local_port)
                c.close()
            except Exception as e:  # pragma: no cover - reported below
                results[label] = e

        drip_noop = [b"a%d NOOP\r\n" % i for i in range(40)]
        drip_line = [bytes([b]) for b in b"EHLO slowloris.test"] * 3
        drip_hello = [hello[i : i + 8] for i in range(0, len(hello), 8)]
        plan = [
            ("imap-idle", "imap", b"", [], 1.0, b"* BYE"),
            ("pop3-idle", "pop3", b"", [], 1.0, b"-ERR"),
            ("smtp-idle", "smtp", b"", [], 1.0, b"421"),
            ("imap-busy", "imap", b"a NOOP\r\n", drip_noop, 0.3, b"* BYE"),
            ("smtp-slowloris", "smtp", b"EHLO x\r\n", drip_line, 0.2, b"421"),
            ("pop3-stalled-handshake", "pop3", b"STLS\r\n", [], 1.0, None),
            ("smtp-dripped-hello", "smtp", b"EHLO x\r\nSTARTTLS\r\n", drip_hello, 0.25, None),
        ]
        threads = [threading.Thread(target=drive, args=row[:5]) for row in plan]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15 * SLOW)
        for label, name, preamble, steps, interval, bye in plan:
            with self.subTest(client=label):
                r = results.get(label)
                self.assertIsInstance(r, tuple, "driver failed: %r" % (r,))
                took, data, port = r
                self.assertGreater(took, 1.7, "closed after %.2fs, before handshake_timeout" % took)
                self.assertLess(took, 2.0 + 1.5 * SLOW, "closed only after %.2fs" % took)
                _, end = self.assertSessionEnd(self.p, port)
                self.assertEqual(end.fields.get("reason"), "handshake-failed", end.raw)
                if bye is not None:
                    last = data.rstrip(b"\r\n").split(b"\r\n")[-1]
                    # SPEC.md: "handshakes beyond handshake_timeout ... are
                    # refused with a reply and a log line"; still plaintext here
                    self.assertTrue(last.startswith(bye), "no %r before the close; last line: %r" % (bye, last))
                else:
                    begin = BEGIN[name]
                    self.assertIn(begin, data)
                    after = data.split(begin, 1)[1]
                    if after:
                        tls_records(after)  # a TLS alert at most, no plaintext
