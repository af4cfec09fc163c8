"""POP3 command framing through postern in front of Dovecot: the verb postern
judges is the verb the laxest server would see (any white space around it).

- Before TLS (require_tls = yes) only plain CAPA, QUIT and STLS reach the
  backend: USER/PASS/APOP/AUTH behind a tab or a leading space are
  postern's refusals, never Dovecot's answers.
- After TLS XCLIENT and STLS behind white space are still XCLIENT and STLS,
  and a command line too long to judge is refused while the session goes on.
"""

import hashlib

from harness import PASSWORD, USER
from starttls_util import (
    LONG_LINE,
    POP3_ACTIVE,
    POP3_BEGIN,
    POP3_REFUSED,
    StarttlsCase,
    pop3_multiline,
    sasl_plain,
    starttls_svc,
)

POP3_NOT_RELAYED = b"-ERR Not relayed: only the proxy may send this"


class Pop3Framing(StarttlsCase):
    @classmethod
    def make_services(cls):
        return [("pop3", starttls_svc("pop3"))]

    def connect(self):
        c = self.client("pop3")
        self.assertTrue(c.line().startswith(b"+OK"))
        return c

    def stls(self, c):
        self.assertEqual(c.cmd(b"STLS\r\n"), POP3_BEGIN + b"\r\n")
        c.starttls()

    def test_pretls_white_space_commands_refused_by_postern(self):
        c = self.connect()
        digest = hashlib.md5(b"<x@y>" + PASSWORD.encode()).hexdigest()
        for cmd in ("USER\t" + USER, " USER " + USER, "PASS\t" + PASSWORD, "\tPASS " + PASSWORD,
                    "APOP\t%s %s" % (USER, digest), "AUTH\tPLAIN " + sasl_plain(USER, PASSWORD),
                    "STLS\t", " CAPA", "NOOP", "STAT"):
            with self.subTest(cmd=cmd):
                self.assertEqual(c.cmd(cmd + "\r\n"), POP3_REFUSED + b"\r\n")
        self.stls(c)
        self.assertEqual(c.cmd("USER %s\r\n" % USER), b"+OK\r\n")
        self.assertTrue(c.cmd("PASS %s\r\n" % PASSWORD).startswith(b"+OK"))
        self.assertEqual(c.cmd(b"QUIT\r\n")[:3], b"+OK")

    def test_posttls_verbs_behind_white_space(self):
        c = self.connect()
        self.stls(c)
        for cmd, want in ((b"XCLIENT\tADDR=6.6.6.6", POP3_NOT_RELAYED), (b" XCLIENT ADDR=6.6.6.6", POP3_NOT_RELAYED),
                          (b"\tSTLS", POP3_ACTIVE), (b"STLS\t", POP3_ACTIVE)):
            with self.subTest(cmd=cmd):
                self.assertEqual(c.cmd(cmd + b"\r\n"), want + b"\r\n")
        self.assertTrue(c.cmd(b"XCLIENT\x0bADDR=6.6.6.6\r\n").startswith(b"-ERR "))
        # CAPA with a tab is still a multi-line CAPA for postern; Dovecot
        # (SP only) answers -ERR, which has no body: in step either way
        c.send(b"CAPA\t\r\nCAPA\r\n")
        first = c.line()
        if first.startswith(b"+OK"):
            pop3_multiline(c)
        self.assertTrue(c.line().startswith(b"+OK"))
        self.assertNotIn(b"STLS", b"".join(pop3_multiline(c)))

    def test_posttls_overlong_command_refused_session_goes_on(self):
        c = self.connect()
        self.stls(c)
        c.send(b"USER " + b"x" * LONG_LINE + b"\r\nUSER %s\r\n" % USER.encode())
        self.assertEqual(c.line(), b"-ERR Line too long\r\n")
        self.assertEqual(c.line(), b"+OK\r\n")
        self.assertTrue(c.cmd("PASS %s\r\n" % PASSWORD).startswith(b"+OK"))
        self.assertEqual(c.cmd(b"QUIT\r\n")[:3], b"+OK")
