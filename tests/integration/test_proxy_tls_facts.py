"""The PROXY v2 header tells the backend about the client's TLS.

postern terminates TLS (`tls = implicit`) and passes the session on in
plaintext with `proxy_protocol = v2`. A real Dovecot behind a `haproxy = yes`
listener, with Debian's `disable_plaintext_auth = yes` and
`haproxy_trusted_networks = 127.0.0.0/8`, takes the client for a plaintext
one unless the header carries PP2_TYPE_SSL: then it refuses LOGIN with
"Plaintext authentication disallowed". With the TLV the login succeeds and
Dovecot logs the client's address (rip=) and `secured`.

The client connects from 127.0.0.9, not 127.0.0.1: Dovecot counts a client
whose address equals its own local one (127.0.0.1) as secured whatever the
header says, which would hide the difference.
"""

import harness
from harness import SLOW, IMAP4_SSL, SourceIMAP4, shut_down_after, svc
from clientmode_util import PASSWORD, USER, ClientModeCase, tls_dovecot


class SourceIMAP4_SSL(IMAP4_SSL):
    """imaplib over TLS to postern from SourceIMAP4's source address."""

    source = SourceIMAP4.source

    def _create_socket(self, timeout):
        sock = SourceIMAP4._create_socket(self, timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self._sni)


class ProxyTlsFacts(ClientModeCase):
    @classmethod
    def make_services(cls):
        d = tls_dovecot()
        return [("imaps_v2", svc("imap", tls="implicit", backend="127.0.0.1:%d" % d.ports["imap_hap"],
                                 proxy_protocol="v2"))]

    def test_dovecot_with_plaintext_auth_disabled_logs_in_through_v2_with_ssl_tlv(self):
        d = tls_dovecot()
        off = d.log_size()
        with shut_down_after(SourceIMAP4_SSL(self.port("imaps_v2"), timeout=10)) as c:
            cport = c.sock.getsockname()[1]
            self.assertTrue(c.welcome.startswith(b"* OK"), c.welcome)
            self.assertEqual(c.login(USER, PASSWORD)[0], "OK")
            typ, data = c.select("INBOX", readonly=True)
            self.assertEqual((typ, data), ("OK", [b"3"]))
            c.logout()
        m = d.wait_log(off, r"imap-login: Info: Login: user=<alice>, method=PLAIN, rip=127\.0\.0\.9, [^\n]*")
        self.assertIn("lip=127.0.0.1,", m.group(0))
        self.assertRegex(m.group(0), r", secured(, |$)")
        start, _, _ = self.session(cport)
        self.assertEqual(start.addr, "127.0.0.9:%d" % cport)
