"""postern in front of a real Postfix is not an open relay when it sends a
PROXY header, and is one without it (the old README example).

Postfix (Debian's, a private instance) allows relaying to `mynetworks`
first (`smtpd_relay_restrictions = permit_mynetworks
permit_sasl_authenticated defer_unauth_destination`, Debian's order).
Debian ships `mynetworks = 127.0.0.0/8`; here it is 127.0.0.1/32, the
address postern connects from, so that the client can come from 127.0.0.9:
a loopback address outside mynetworks that stands for an Internet client.

- Postfix with `smtpd_upstream_proxy_protocol = haproxy` behind
  `proxy_protocol = v2` (postern terminating implicit TLS): Postfix sees
  127.0.0.9, refuses to relay to an outside domain (454 Relay access denied)
  and logs 127.0.0.9; once the client has logged in (SMTP AUTH checked by a
  real Dovecot's auth service, `smtpd_sasl_type = dovecot`) it relays.
- Postfix without it, behind postern without a PROXY header: Postfix sees
  127.0.0.1, inside mynetworks, and relays the same client's mail.
"""

import tempfile

from harness import PASSWORD, env, svc
from postfix_util import OUTSIDE, RELAY, Postfix, SaslDovecot, relay_attempt
from starttls_util import StarttlsCase


class SmtpRelaySafety(StarttlsCase):
    @classmethod
    def make_services(cls):
        cls.sasl = SaslDovecot.shared()
        cls.pf_proxy = Postfix(tempfile.mkdtemp(prefix="postfix-proxy-", dir=env().tmp),
                               main=dict(RELAY, **cls.sasl.main()),
                               smtpd_opts={"smtpd_upstream_proxy_protocol": "haproxy"})
        cls._fakes.append(cls.pf_proxy)
        cls.pf_proxy.start()
        cls.pf_bare = Postfix(tempfile.mkdtemp(prefix="postfix-bare-", dir=env().tmp), main=RELAY)
        cls._fakes.append(cls.pf_bare)
        cls.pf_bare.start()
        return [
            ("proxied", svc("smtp", backend=cls.pf_proxy.address, proxy_protocol="v2")),
            ("bare", svc("smtp", backend=cls.pf_bare.address)),
        ]

    def relay_attempt(self, name, password=None):
        """MAIL and RCPT to an outside domain, after logging in as alice
        with PASSWORD if given: RCPT's (code, text)."""
        return relay_attempt(self.port(name), password)

    def test_with_proxy_header_postfix_refuses_to_relay_and_logs_the_client(self):
        queued, before = self.pf_proxy.queued(), len(self.pf_proxy.sessions())
        off = len(self.pf_proxy.log_text())
        code, text = self.relay_attempt("proxied")
        self.assertEqual(code, 454, text)
        self.assertIn(b"Relay access denied", text)
        self.pf_proxy.wait_sessions(before + 1)
        log = self.pf_proxy.log_text()[off:]
        self.assertRegex(log, r"postfix/smtpd\[\d+\]: connect from unknown\[127\.0\.0\.9\]")
        self.assertRegex(log, r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.9\]: 454 4\.7\.1 <%s>: "
                              r"Relay access denied" % OUTSIDE)
        self.assertNotRegex(log, r"connect from \S*\[127\.0\.0\.1\]")
        self.assertEqual(self.pf_proxy.queued(), queued)

    def test_without_proxy_header_every_client_relays(self):
        """The configuration postern now warns about: the same client relays."""
        queued, before = self.pf_bare.queued(), len(self.pf_bare.sessions())
        off = len(self.pf_bare.log_text())
        code, text = self.relay_attempt("bare")
        self.assertEqual(code, 250, text)
        self.pf_bare.wait_sessions(before + 1)
        self.assertRegex(self.pf_bare.log_text()[off:], r"postfix/smtpd\[\d+\]: connect from unknown\[127\.0\.0\.1\]")
        self.assertEqual(len(self.pf_bare.queued()), len(queued) + 1, "the relayed message is queued")

    def test_with_proxy_header_an_authenticated_client_relays(self):
        """SMTP AUTH checked by a real Dovecot's auth service: once logged
        in, the same client from 127.0.0.9 may relay."""
        queued, before = self.pf_proxy.queued(), len(self.pf_proxy.sessions())
        off = len(self.pf_proxy.log_text())
        code, text = self.relay_attempt("proxied", PASSWORD)
        self.assertEqual(code, 250, text)
        self.pf_proxy.wait_sessions(before + 1)
        self.assertRegex(self.pf_proxy.log_text()[off:],
                         r"client=unknown\[127\.0\.0\.9\], sasl_method=PLAIN, sasl_username=alice")
        self.assertEqual(len(self.pf_proxy.queued()), len(queued) + 1, "the relayed message is queued")
