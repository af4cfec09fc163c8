"""SMTP command framing against real Postfix (which splits a command on any
white space and skips leading white space) and aiosmtpd (which has no
CHUNKING): postern's verb must be the server's verb.

- Before TLS (require_tls = yes) only plain EHLO/HELO/NOOP/RSET/QUIT/
  STARTTLS reach the backend: MAIL<TAB>FROM, " RCPT TO", DATA<TAB> queue no
  mail, AUTH<TAB>PLAIN never reaches Postfix nor the log in clear (S6: a
  pre-TLS transaction prefix never makes the victim's post-TLS AUTH the body
  of a mail).
- After TLS XCLIENT<TAB>... is refused like XCLIENT (Postfix trusts
  postern's address for XCLIENT here), and so is an XCLIENT pipelined
  behind AUTH with an initial response: Postfix answered the AUTH with a
  final reply, so the next line is a command, not a SASL response.
- BDAT: refused by postern when the server did not offer CHUNKING, and
  the session ends (its chunk follows, and no framing of it is safe); a
  BDAT Postfix refuses leaves no desync (Postfix skips the chunk, so does
  the reply count).

Item ids (S8, C9, P5, ...) are those of tests/security-checklist.md.
"""

import tempfile

from harness import env
from postfix_util import Postfix
from starttls_util import (
    LONG_LINE,
    SMTP_530,
    SMTP_READY,
    SMTP_TOO_LONG,
    StarttlsCase,
    sasl_plain,
    smtp_keywords,
    smtp_reply,
    starttls_svc,
)

SMTP_NOT_RELAYED = b"550 5.7.1 Not relayed: only the proxy may send this"
SMTP_NO_CHUNKING = b"421 4.7.0 BDAT refused (BDAT not available: the server did not offer CHUNKING), closing"

VICTIM_B64 = sasl_plain("victim", "Zs-victim-password")


class SmtpFraming(StarttlsCase):
    GLOBAL = {"log_level": "debug"}

    @classmethod
    def make_services(cls):
        pf = Postfix(tempfile.mkdtemp(prefix="postfix-", dir=env().tmp),
                     main={"smtpd_authorized_xclient_hosts": "127.0.0.0/8"})
        cls._fakes.append(pf)  # stopped with the fakes in tearDownClass
        cls.pf = pf.start()
        return [
            ("pf", starttls_svc("smtp", backend=pf.address, log_commands="yes")),
            ("aio", starttls_svc("smtp", log_commands="yes")),
        ]

    def connect(self, name="pf"):
        c = self.client(name)
        self.assertEqual(smtp_reply(c)[-1][:3], b"220")
        return c

    def ehlo(self, c, name="client.test"):
        c.send("EHLO %s\r\n" % name)
        lines = smtp_reply(c)
        self.assertEqual(lines[-1][:4], b"250 ", lines)
        return lines

    def starttls(self, c):
        self.assertEqual(c.cmd(b"STARTTLS\r\n"), SMTP_READY + b"\r\n")
        c.starttls()

    def postfix_session(self, before, c):
        """Postfix's command counts for the session of client c, which
        must have sent QUIT."""
        self.assertEqual(smtp_reply(c)[-1][:3], b"221")
        c.close()
        return self.pf.wait_sessions(before + 1)[before]

    # ------------------------------------------------------------ before TLS

    def test_pretls_white_space_transaction_queues_no_mail(self):
        queued, before = self.pf.queued(), len(self.pf.sessions())
        c = self.connect()
        self.ehlo(c)
        lines = [b"MAIL\tFROM:<attacker@example.test>", b" RCPT TO:<victim@example.test>", b"DATA\t",
                 b"Subject: injected", b"", b"body", b"."]
        c.send(b"".join(ln + b"\r\n" for ln in lines))
        for ln in lines:
            with self.subTest(line=ln):
                self.assertEqual(c.line(), SMTP_530 + b"\r\n")
        c.send(b"QUIT\r\n")
        stats = self.postfix_session(before, c)
        self.assertEqual(stats.split(), ["ehlo=1", "quit=1", "commands=2"], stats)
        self.assertEqual(self.pf.queued(), queued, "Postfix queued a mail from a pre-TLS injection")

    def test_pretls_auth_tab_plain_refused_and_hidden(self):
        before = len(self.pf.sessions())
        c = self.connect()
        self.ehlo(c)
        for cmd in (b"AUTH\tPLAIN " + VICTIM_B64.encode(), b"AUTH PLAIN\t" + VICTIM_B64.encode(),
                    b" AUTH PLAIN " + VICTIM_B64.encode()):
            with self.subTest(cmd=cmd):
                self.assertEqual(c.cmd(cmd + b"\r\n"), SMTP_530 + b"\r\n")
        c.send(b"QUIT\r\n")
        stats = self.postfix_session(before, c)
        self.assertNotIn("auth", stats)
        self.assertSessionEnd(self.p, c.local_port)
        self.assertNotIn(VICTIM_B64, self.p.log_text())

    def test_S6_pretls_transaction_prefix_never_swallows_victim_auth(self):
        """The attacker (a man in the middle before TLS) sends a transaction
        prefix with odd white space and the STARTTLS; the victim's
        pipelined EHLO, AUTH and mail inside TLS must be commands, not the
        body of the attacker's mail."""
        before = len(self.pf.sessions())
        c = self.connect()
        c.send(b"MAIL\tFROM:<attacker@example.test>\r\n RCPT TO:<attacker@example.test>\r\nDATA\t\r\nSTARTTLS\r\n")
        self.assertEqual(c.lines(3), [SMTP_530 + b"\r\n"] * 3)
        self.assertEqual(c.line(), SMTP_READY + b"\r\n")
        c.starttls()
        c.send(b"EHLO victim.test\r\nAUTH PLAIN " + VICTIM_B64.encode() + b"\r\n")
        self.assertIn("CHUNKING", smtp_keywords(smtp_reply(c)))  # answered: a command
        self.assertEqual(smtp_reply(c)[-1][:3], b"503")  # Postfix here has no SASL
        c.send(b"MAIL FROM:<victim@example.test>\r\nRCPT TO:<friend@example.test>\r\nDATA\r\n")
        self.assertEqual([smtp_reply(c)[-1][:3] for _ in range(3)], [b"250", b"250", b"354"])
        c.send(b"Subject: from the victim\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        self.assertEqual(smtp_reply(c)[-1][:3], b"250")
        stats = self.postfix_session(before, c)
        self.assertIn("mail=1 rcpt=1 data=1", stats)
        for qid in self.pf.queued():
            self.assertNotIn(VICTIM_B64.encode(), self.pf.queue_file(qid), "the victim's AUTH is in a mail")

    # ------------------------------------------------------------ after TLS

    def test_posttls_xclient_behind_white_space_refused(self):
        before = len(self.pf.sessions())
        c = self.connect()
        self.starttls(c)
        self.ehlo(c)
        for cmd in (b"XCLIENT\tADDR=6.6.6.6 LOGIN=victim", b" XCLIENT ADDR=6.6.6.6 LOGIN=victim",
                    b"XFORWARD\tADDR=6.6.6.6"):
            with self.subTest(cmd=cmd):
                self.assertEqual(c.cmd(cmd + b"\r\n"), SMTP_NOT_RELAYED + b"\r\n")
        self.assertEqual(c.cmd(b"XCLIENT\x0bADDR=6.6.6.6\r\n")[:4], b"500 ")
        c.send(b"QUIT\r\n")
        stats = self.postfix_session(before, c)
        self.assertEqual(stats.split(), ["ehlo=1", "quit=1", "commands=2"], stats)
        self.assertNotIn("6.6.6.6", self.pf.log_text())

    def test_posttls_xclient_pipelined_after_auth_initial_response_refused(self):
        """AUTH PLAIN <ir> gets a final reply (503: this Postfix has no
        SASL), so the pipelined XCLIENT is a command Postfix would run;
        postern waits for that reply and refuses XCLIENT itself."""
        before = len(self.pf.sessions())
        c = self.connect()
        self.starttls(c)
        self.ehlo(c)
        c.send(b"AUTH PLAIN " + VICTIM_B64.encode() + b"\r\nXCLIENT ADDR=6.6.6.6 LOGIN=victim\r\n")
        self.assertEqual(smtp_reply(c)[-1][:3], b"503")
        self.assertEqual(c.line(), SMTP_NOT_RELAYED + b"\r\n")
        c.send(b"QUIT\r\n")
        stats = self.postfix_session(before, c)
        self.assertNotIn("xclient", stats)
        self.assertNotIn("6.6.6.6", self.pf.log_text())

    def test_posttls_overlong_command_refused_session_goes_on(self):
        before = len(self.pf.sessions())
        c = self.connect()
        self.starttls(c)
        self.ehlo(c)
        c.send(b"XCLIENT ADDR=6.6.6.6 " + b"x" * LONG_LINE + b"\r\nNOOP\r\n")
        self.assertEqual(c.line(), SMTP_TOO_LONG + b"\r\n")
        self.assertEqual(smtp_reply(c)[-1][:3], b"250")
        c.send(b"QUIT\r\n")
        stats = self.postfix_session(before, c)
        self.assertEqual(stats.split(), ["ehlo=1", "noop=1", "quit=1", "commands=3"], stats)

    def test_bdat_postfix_refuses_no_desync(self):
        """Postfix offers CHUNKING; a BDAT it refuses (no MAIL yet) has its
        chunk skipped by Postfix as by postern: one reply, then NOOP's."""
        before = len(self.pf.sessions())
        c = self.connect()
        self.starttls(c)
        self.assertIn("CHUNKING", smtp_keywords(self.ehlo(c)))
        c.send(b"BDAT 12\r\nRSET\r\nNOOP\r\nNOOP\r\n")
        self.assertEqual(smtp_reply(c)[-1][:1], b"5")
        self.assertEqual(smtp_reply(c)[-1][:3], b"250")
        self.assertEqual(c.quiet(0.3), b"")
        c.send(b"QUIT\r\n")
        stats = self.postfix_session(before, c)
        self.assertNotIn("rset", stats)

    def test_bdat_without_chunking_refused_and_closed(self):
        """aiosmtpd offers no CHUNKING: it would answer 500 to BDAT and run
        the chunk as commands. postern refuses it and ends the session, so
        no byte of the chunk is judged as a command."""
        c = self.connect("aio")
        self.starttls(c)
        self.assertNotIn("CHUNKING", smtp_keywords(self.ehlo(c)))
        self.assertEqual(c.cmd(b"MAIL FROM:<a@example.test>\r\n")[:3], b"250")
        chunk = b"RSET\r\nMAIL FROM:<b@example.test>\r\n"
        c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk + b"NOOP\r\n")
        self.assertEqual(c.line(), SMTP_NO_CHUNKING + b"\r\n")
        self.assertEqual(c.quiet(0.3), b"")
