"""`xclient = yes`: postern tells a real Postfix who the client is with
XCLIENT ADDR= PORT= (Postfix's XCLIENT_README), so that Postfix applies its
relay rules to the client and not to postern.

Postfix (a private instance, `smtpd_authorized_xclient_hosts = 127.0.0.0/8`)
has mynetworks = 127.0.0.1/32, postern's own address, first in
smtpd_relay_restrictions (Debian's order). The client comes from
127.0.0.9: without XCLIENT Postfix would see 127.0.0.1 and relay its mail
(test_smtp_relay_safety shows that); with it Postfix logs 127.0.0.9 and
refuses to relay to an outside domain, and relays once the client has
logged in (SASL through a real Dovecot's auth socket).

A client of postern's [::1] listener reaches Postfix as ::1 (ADDR=IPV6:::1,
Postfix with inet_protocols = all); an IPv4-only Postfix refuses that
XCLIENT and the client gets the unavailable reply. A backend that does not
offer XCLIENT (the run's aiosmtpd) still serves the client, and postern
warns once. `xclient` is a key of SMTP services
only, and `-t` does not warn of an open relay when it is set.
"""

import tempfile

from harness import PASSWORD, POSTERN, SMTP_SSL, PosternTestCase, Reader, env, free_port, run, svc, tls_connect
from postfix_util import OUTSIDE, RELAY, Postfix, SaslDovecot, relay_attempt
from starttls_util import StarttlsCase, smtp_reply


class Xclient(StarttlsCase):
    @classmethod
    def make_services(cls):
        cls.sasl = SaslDovecot.shared()
        # inet_protocols = all: Postfix takes an IPv6 address in XCLIENT
        # only then; the IPv4-only one refuses it (501 Bad ADDR syntax).
        main = dict(RELAY, smtpd_authorized_xclient_hosts="127.0.0.0/8", **cls.sasl.main())
        cls.pf = Postfix(tempfile.mkdtemp(prefix="postfix-xclient-", dir=env().tmp),
                         main=dict(main, inet_protocols="all"))
        cls._fakes.append(cls.pf)
        cls.pf.start()
        cls.pf4 = Postfix(tempfile.mkdtemp(prefix="postfix-xclient4-", dir=env().tmp), main=main)
        cls._fakes.append(cls.pf4)
        cls.pf4.start()
        return [
            ("xclient", svc("smtp", backend=cls.pf.address, xclient="yes")),
            ("no_offer", svc("smtp", xclient="yes")),  # aiosmtpd: no XCLIENT
            ("xclient6", svc("smtp", backend=cls.pf.address, xclient="yes", host="::1")),
            ("xclient6_to_v4", svc("smtp", backend=cls.pf4.address, xclient="yes", host="::1")),
        ]

    def attempt(self, password=None):
        """relay_attempt through the xclient service: (RCPT code, text,
        what Postfix logged meanwhile, messages it queued)."""
        queued, before = len(self.pf.queued()), len(self.pf.sessions())
        off = len(self.pf.log_text())
        code, text = relay_attempt(self.port("xclient"), password)
        self.pf.wait_sessions(before + 1)
        return code, text, self.pf.log_text()[off:], len(self.pf.queued()) - queued

    def test_postfix_sees_the_client_and_refuses_to_relay(self):
        code, text, log, queued = self.attempt()
        self.assertEqual(code, 454, text)
        self.assertIn(b"Relay access denied", text)
        self.assertRegex(log, r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.9\]: 454 4\.7\.1 <%s>: "
                              r"Relay access denied; from=<someone@client\.test> to=<%s> proto=ESMTP "
                              r"helo=<client\.test>" % (OUTSIDE, OUTSIDE))
        self.assertEqual(queued, 0)

    def test_authenticated_client_relays(self):
        code, text, log, queued = self.attempt(PASSWORD)
        self.assertEqual(code, 250, text)
        self.assertRegex(log, r"client=unknown\[127\.0\.0\.9\], sasl_method=PLAIN, sasl_username=alice")
        self.assertEqual(queued, 1, "the relayed message is queued")

    def test_ipv6_client_reaches_postfix_as_ipv6(self):
        """XCLIENT ADDR=IPV6:::1 for a client of postern's [::1] listener."""
        before, off = len(self.pf.sessions()), len(self.pf.log_text())
        s = tls_connect(self.port("xclient6"), host="::1")
        self.addCleanup(s.close)
        r = Reader(s)
        r.line = r.readline  # what smtp_reply reads with
        greeting = smtp_reply(r)
        self.assertTrue(greeting[-1].startswith(b"220 "), greeting)
        for cmd, code in (("EHLO client.test", b"250 "), ("MAIL FROM:<someone@client.test>", b"250 "),
                          ("RCPT TO:<%s>" % OUTSIDE, b"454 "), ("QUIT", b"221 ")):
            r.send(cmd + "\r\n")
            reply = smtp_reply(r)
            self.assertTrue(reply[-1].startswith(code), (cmd, reply))
        self.pf.wait_sessions(before + 1)
        self.assertRegex(self.pf.log_text()[off:], r"NOQUEUE: reject: RCPT from unknown\[::1\]: 454 ")

    def test_refused_xclient_fails_closed(self):
        """An IPv4-only Postfix refuses the IPv6 client's XCLIENT: the client
        gets the unavailable reply, never a session as a local client."""
        s = tls_connect(self.port("xclient6_to_v4"), host="::1")
        self.addCleanup(s.close)
        r = Reader(s)
        r.line = r.readline
        self.assertEqual(smtp_reply(r), [b"421 4.4.1 Mail server unavailable, try again later"])
        self.p.wait_for(level="warn", service="xclient6_to_v4",
                        contains="unreachable: XCLIENT refused: 501 5.5.4 Bad ADDR syntax: IPV6:::1")

    def test_backend_without_xclient_serves_the_client_and_warns_once(self):
        for _ in range(2):
            with SMTP_SSL(self.port("no_offer")) as c:
                code, _ = c.ehlo()
                self.assertEqual(code, 250)
                self.assertNotIn("xclient", c.esmtp_features)  # never shown to clients
                self.assertEqual(c.noop()[0], 250)
                port = c.sock.getsockname()[1]
            self.p.wait_session_end(port, service="no_offer")
        warned = self.p.find(level="warn", contains="does not offer XCLIENT")
        self.assertEqual(len(warned), 1, warned)


class XclientConfig(PosternTestCase):
    NEEDS_SERVERS = False

    def check(self, protocol):
        """`postern -t` of one service of PROTOCOL with xclient = yes and a
        backend on this host: (postern, result)."""
        p = self.postern([("svc", svc(protocol, backend="127.0.0.1:%d" % free_port(), xclient="yes"))],
                         start=False)
        return p, run([POSTERN, "-t", "-c", p.conf], timeout=10)

    def test_xclient_is_a_key_of_smtp_services_only(self):
        p, r = self.check("imap")
        self.assertEqual(r.returncode, 1, r.stderr)
        line = p.config_text.splitlines().index("xclient = yes") + 1
        self.assertIn("%s:%d: xclient needs protocol smtp" % (p.conf, line), r.stderr.decode())

    def test_no_open_relay_warning_with_xclient(self):
        _, r = self.check("smtp")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("WARNING", r.stderr.decode())
