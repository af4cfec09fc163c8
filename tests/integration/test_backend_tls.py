"""Client mode with `backend_tls = implicit`: postern connects to the
backend, completes TLS and verifies the certificate before the client sees
a byte, then relays.

- ImplicitDovecot: real clients (imaplib, poplib) in plaintext to postern,
  postern in implicit TLS to a TLS Dovecot (imaps/pop3s); fetched messages
  equal those fetched directly; SNI/host/IP/IPv6 forms of `backend`; the
  decrypting relay (tls = implicit on both sides).
- BackendCertificates: scripted TLS servers (Python ssl) with every kind of
  certificate: chain, host name (RFC 6125 wildcards), IP SANs, expiry,
  untrusted and self-signed (C9), fail closed with the protocol's error and
  nothing forwarded (C8), no plaintext retry after a TLS error, reset or
  timeout (C10), SNI on the wire, backend_verify = no.
- BackendTlsConfig: backend_verify/backend_ca/backend_sni need backend_tls.

Item ids (S8, C9, P5, ...) are those of tests/security-checklist.md.
"""

import hashlib
import imaplib
import poplib
import re
import time

import harness
from harness import (
    SLOW,
    PosternTestCase,
    Reader,
    env,
    free_port,
    literal_of,
    read_to_close,
    run,
    shut_down_after,
    svc,
    tls_connect,
)
from clientmode_util import (
    GREETING,
    PASSWORD,
    USER,
    ClientModeCase,
    credential_bytes,
    implicit_tls_script,
    imap_direct_fetch,
    pki,
    plaintext_script,
    pop3_direct_retr,
    read_for,
    rst_script,
    silent_script,
    tls_dovecot,
)

V6 = harness.have_ipv6()
ERROR_LINE = {
    "imap": rb"\* BYE [^\r\n]*\r\n",
    "pop3": rb"-ERR [^\r\n]*\r\n",
    "smtp": rb"421[ -][^\r\n]*\r\n",
}


def backend_keys(**kw):
    d = {"backend_tls": "implicit", "backend_ca": pki().ca}
    d.update(kw)
    return d


# ---------------------------------------------------------------- real Dovecot


class ImplicitDovecot(ClientModeCase):
    @classmethod
    def make_services(cls):
        d = tls_dovecot()
        imaps, pop3s = d.ports["imaps"], d.ports["pop3s"]
        s = [
            ("imap_sni", svc("imap", tls="off", backend="127.0.0.1:%d" % imaps, **backend_keys(backend_sni="localhost"))),
            ("imap_host", svc("imap", tls="off", backend="localhost:%d" % imaps, **backend_keys())),
            ("imap_ip", svc("imap", tls="off", backend="127.0.0.1:%d" % imaps, **backend_keys())),
            ("pop3_sni", svc("pop3", tls="off", backend="127.0.0.1:%d" % pop3s, **backend_keys(backend_sni="localhost"))),
            ("imaps_relay", svc("imap", tls="implicit", backend="127.0.0.1:%d" % imaps,
                                **backend_keys(backend_sni="localhost"))),
            ("pop3s_relay", svc("pop3", tls="implicit", backend="127.0.0.1:%d" % pop3s,
                                **backend_keys(backend_sni="localhost"))),
        ]
        if V6:
            s.append(("imap_v6", svc("imap", tls="off", backend="[::1]:%d" % imaps, **backend_keys())))
        return s

    @classmethod
    def direct(cls, seq):
        if not hasattr(cls, "_direct"):
            cls._direct = {}
        if seq not in cls._direct:
            cls._direct[seq] = imap_direct_fetch(seq)
        return cls._direct[seq]

    def check_imaplib(self, name, rip=r"127\.0\.0\.1", ssl_client=False):
        d = tls_dovecot()
        off = d.log_size()
        if ssl_client:
            c = harness.IMAP4_SSL(self.port(name))
        else:
            c = imaplib.IMAP4("127.0.0.1", self.port(name), timeout=10 * SLOW)
        local_port = c.sock.getsockname()[1]
        with shut_down_after(c):
            self.assertTrue(c.welcome.startswith(b"* OK"), c.welcome)
            self.assertIn(b"Dovecot TLS ready.", c.welcome)
            caps = [x.upper() for x in c.capabilities]
            self.assertNotIn("STARTTLS", caps, caps)
            self.assertNotIn("LOGINDISABLED", caps, caps)
            typ, _ = c.login(USER, PASSWORD)
            self.assertEqual(typ, "OK")
            typ, data = c.select("INBOX", readonly=True)
            self.assertEqual((typ, data), ("OK", [b"3"]))
            for seq in (2, 3):
                typ, data = c.fetch(str(seq), "(BODY.PEEK[])")
                self.assertEqual(typ, "OK")
                want = literal_of(self.direct(seq))
                got = data[0][1]
                self.assertEqual(len(got), len(want), "message %d: size differs" % seq)
                self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(want).hexdigest(),
                                 "message %d differs from the direct fetch" % seq)
            c.logout()
        start, end, _ = self.session(local_port)
        if not ssl_client:
            self.assertEqual(start.fields.get("tls"), "off", start.raw)
        self.assertIn(end.fields["reason"], ("client-closed", "backend-closed"), end.raw)
        self.assertGreater(int(end.fields["out"]), 1024 * 1024, end.raw)
        # Dovecot saw a TLS connection from postern (not a "secured" plaintext one)
        m = d.wait_log(off, r"imap-login: Info: Login: user=<alice>, method=PLAIN, rip=%s, [^\n]*" % rip)
        self.assertRegex(m.group(0), r", TLS(, |$)", m.group(0))
        return start, end

    def test_imap_backend_ip_with_sni(self):
        """backend = 127.0.0.1:PORT, backend_sni = localhost."""
        self.check_imaplib("imap_sni")

    def test_imap_backend_hostname(self):
        """backend = localhost:PORT: SNI and name check use localhost."""
        self.check_imaplib("imap_host", rip=r"(127\.0\.0\.1|::1)")

    def test_imap_backend_ip_literal(self):
        """backend = 127.0.0.1:PORT, no backend_sni: the certificate's IP SAN."""
        self.check_imaplib("imap_ip")

    def test_imap_backend_ipv6(self):
        """backend = [::1]:PORT, no backend_sni: the certificate's IP SAN ::1."""
        self.assertTrue(V6, "::1 is not available on this machine")
        self.check_imaplib("imap_v6", rip="::1")

    def test_imap_decrypting_relay(self):
        """tls = implicit on the client side and backend_tls = implicit."""
        start, _ = self.check_imaplib("imaps_relay", ssl_client=True)
        self.assertRegex(start.fields.get("tls", ""), r"^TLSv1\.[23]$", start.raw)

    def check_poplib(self, name, ssl_client=False):
        d = tls_dovecot()
        off = d.log_size()
        if ssl_client:
            c = harness.POP3_SSL(self.port(name))
        else:
            c = poplib.POP3("127.0.0.1", self.port(name), timeout=10 * SLOW)
        local_port = c.sock.getsockname()[1]
        try:
            self.assertTrue(c.getwelcome().startswith(b"+OK"), c.getwelcome())
            capa = c.capa()
            self.assertNotIn("STLS", capa, capa)
            c.user(USER)
            c.pass_(PASSWORD)
            count, _ = c.stat()
            self.assertEqual(count, 3)
            for n in (1, 3):
                resp, lines, octets = c.retr(n)
                self.assertTrue(resp.startswith(b"+OK"), resp)
                want = pop3_direct_retr(n)
                # poplib strips CRLF and dot-stuffing; compare the lines
                want_lines = want.split(b"\r\n")[1:-2]
                want_lines = [ln[1:] if ln.startswith(b"..") else ln for ln in want_lines]
                self.assertEqual(len(lines), len(want_lines), "message %d" % n)
                self.assertEqual(hashlib.sha256(b"\n".join(lines)).hexdigest(),
                                 hashlib.sha256(b"\n".join(want_lines)).hexdigest(), "message %d differs" % n)
            c.quit()
        finally:
            c.close()
        start, end, _ = self.session(local_port)
        self.assertIn(end.fields["reason"], ("client-closed", "backend-closed"), end.raw)
        m = d.wait_log(off, r"pop3-login: Info: Login: user=<alice>, method=PLAIN, rip=127\.0\.0\.1, [^\n]*")
        self.assertRegex(m.group(0), r", TLS(, |$)", m.group(0))

    def test_pop3_backend_ip_with_sni(self):
        self.check_poplib("pop3_sni")

    def test_pop3_decrypting_relay(self):
        self.check_poplib("pop3s_relay", ssl_client=True)


# ---------------------------------------------------------------- scripted TLS servers

# name: (certificate, backend form, extra keys, expected SNI, failure regex or None)
#   backend form: ip = 127.0.0.1:PORT, host = localhost:PORT, v6 = [::1]:PORT
CERT_CASES = {
    "good_sni": ("good", "ip", {"backend_sni": "localhost"}, "localhost", None),
    "good_ip": ("good", "ip", {}, None, None),
    "good_host": ("good", "host", {}, "localhost", None),
    "good_v6": ("good", "v6", {}, None, None),
    "sni_other_name": ("good", "ip", {"backend_sni": "mail.example.test"}, "mail.example.test", None),
    "wildcard": ("wildcard", "ip", {"backend_sni": "mail.example.test"}, "mail.example.test", None),
    "wildcard_two_labels": ("wildcard", "ip", {"backend_sni": "a.b.example.test"}, "a.b.example.test",
                            r"hostname mismatch"),
    "wildcard_apex": ("wildcard", "ip", {"backend_sni": "example.test"}, "example.test", r"hostname mismatch"),
    "partial_wildcard": ("partial", "ip", {"backend_sni": "mail.example.test"}, "mail.example.test",
                         r"hostname mismatch"),
    "wrong_name": ("wrongname", "ip", {"backend_sni": "localhost"}, "localhost", r"hostname mismatch"),
    "wrong_name_host": ("wrongname", "host", {}, "localhost", r"hostname mismatch"),
    "wrong_ip": ("wrongname", "ip", {}, None, r"(IP address|hostname) mismatch"),
    "ip_only_in_cn": ("cnip", "ip", {}, None, r"(IP address|hostname) mismatch"),
    "cn_only_no_san": ("cnonly", "ip", {"backend_sni": "localhost"}, "localhost", r"hostname mismatch"),
    "cn_only_no_san_host": ("cnonly", "host", {}, "localhost", r"hostname mismatch"),
    "expired": ("expired", "ip", {"backend_sni": "localhost"}, "localhost", r"certificate: certificate has expired"),
    "not_yet_valid": ("notyet", "ip", {"backend_sni": "localhost"}, "localhost", r"certificate is not yet valid"),
    "untrusted_ca": ("untrusted", "ip", {"backend_sni": "localhost"}, "localhost",
                     r"unable to get local issuer certificate"),
    "self_signed": ("selfsigned", "ip", {"backend_sni": "localhost"}, "localhost", r"self.signed certificate"),
    "intermediate_missing": ("viainter", "ip", {"backend_sni": "localhost"}, "localhost",
                             r"unable to get local issuer certificate"),
    "intermediate_sent": ("viainter_chain", "ip", {"backend_sni": "localhost"}, "localhost", None),
    "system_store": ("good", "ip", {"backend_sni": "localhost", "backend_ca": None}, "localhost",
                     r"unable to get local issuer certificate"),
    "verify_no": ("wrongname", "ip", {"backend_sni": "localhost", "backend_verify": "no", "backend_ca": None},
                  "localhost", None),
    "verify_no_selfsigned": ("selfsigned", "ip", {"backend_verify": "no", "backend_ca": None}, None, None),
}

# the expired certificate behind the other protocols and behind a TLS client side
PROTO_CASES = {
    "expired_pop3": "pop3",
    "expired_smtp": "smtp",
}


class BackendCertificates(ClientModeCase):
    @classmethod
    def make_services(cls):
        k = pki()
        cls.fakes = {}
        out = []
        for name, (cert, form, extra, _, _) in CERT_CASES.items():
            if form == "v6" and not V6:
                continue
            hosts = {"ip": ("127.0.0.1",), "host": ("127.0.0.1", "::1") if V6 else ("127.0.0.1",),
                     "v6": ("::1",)}[form]
            f = cls.server(implicit_tls_script("imap"), cert=k.pair(cert)[0], key=k.pair(cert)[1], hosts=hosts,
                           name=name)
            cls.fakes[name] = f
            backend = {"ip": "127.0.0.1:%d", "host": "localhost:%d", "v6": "[::1]:%d"}[form] % f.port
            out.append((name, svc("imap", tls="off", backend=backend, **backend_keys(**extra))))
        for name, proto in PROTO_CASES.items():
            f = cls.server(implicit_tls_script(proto), cert=k.pair("expired")[0], key=k.pair("expired")[1], name=name)
            cls.fakes[name] = f
            out.append((name, svc(proto, tls="off", backend=f.address, **backend_keys(backend_sni="localhost"))))
        f = cls.server(implicit_tls_script("imap"), cert=k.pair("expired")[0], key=k.pair("expired")[1],
                       name="expired_imaps")
        cls.fakes["expired_imaps"] = f
        out.append(("expired_imaps", svc("imap", tls="implicit", backend=f.address,
                                         **backend_keys(backend_sni="localhost"))))
        # C10: a plaintext server, a reset, a server that never answers the handshake
        for name, script in (("plaintext_server", plaintext_script("imap")), ("reset", rst_script),
                             ("silent", silent_script)):
            f = cls.server(script, name=name)
            cls.fakes[name] = f
            out.append((name, svc("imap", tls="off", backend=f.address, handshake_timeout="2s",
                                  **backend_keys(backend_sni="localhost"))))
        # a slow handshake: the client must see nothing before it is done
        g = k.pair("good")
        f = cls.server(implicit_tls_script("imap", delay=1.0), cert=g[0], key=g[1], name="slow")
        cls.fakes["slow"] = f
        out.append(("slow", svc("imap", tls="off", backend=f.address, **backend_keys(backend_sni="localhost"))))
        return out

    # --- helpers
    def check_ok(self, name, host="127.0.0.1"):
        f = self.fakes[name]
        before = f.count()
        s = self.connect(name)
        port = s.getsockname()[1]
        r = Reader(s)
        self.assertEqual(r.readline(), GREETING["imap"])
        r.send("a LOGIN %s %s\r\n" % (USER, PASSWORD))
        self.assertTrue(r.readline().startswith(b"a OK"))
        r.send("z LOGOUT\r\n")
        rest = read_to_close(s, 5 * SLOW)
        self.assertIsNotNone(rest, "postern did not close after LOGOUT")
        self.assertIn(b"z OK", rest)
        s.close()  # the relay ends when both sides have closed
        self.assertEqual(f.count(), before + 1)
        c = f.last()
        self.assertEqual(c.handshake, "ok", c.log)
        self.assertEqual(bytes(c.plain), b"", "plaintext before TLS")
        self.assertEqual(bytes(c.raw[:1]), b"\x16", "the first byte is not a TLS handshake record")
        self.assertIn(("a LOGIN %s %s\r\n" % (USER, PASSWORD)).encode(), bytes(c.app))
        self.assertEqual(c.sni, CERT_CASES[name][3] if name in CERT_CASES else "localhost", "SNI sent")
        start, end, lines = self.session(port)
        self.assertEqual(start.fields.get("tls"), "off", start.raw)
        self.assertIn(end.fields["reason"], ("client-closed", "backend-closed"), end.raw)
        self.assertFalse([ln for ln in lines if "TLS failed" in ln.msg], lines)
        return start, end, lines

    def check_fails(self, name, why, proto="imap", client_tls=False, timeout=5.0):
        """The client gets the protocol's error line and nothing else; the
        session ends with backend-tls-failed and the reason in a warn line;
        the backend got no credentials and exactly one connection."""
        f = self.fakes[name]
        before = f.count()
        login = {"imap": "a LOGIN %s %s\r\n" % (USER, PASSWORD),
                 "pop3": "USER %s\r\nPASS %s\r\n" % (USER, PASSWORD),
                 "smtp": "EHLO client.test\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"}[proto]
        if client_tls:
            s = tls_connect(self.port(name), timeout=5.0)
            self.addCleanup(s.close)
        else:
            s = self.connect(name)
        port = s.getsockname()[1]
        s.sendall(login.encode())  # before any greeting: must be held, never forwarded (C8)
        data = read_to_close(s, (timeout + 3) * SLOW)
        self.assertIsNotNone(data, "postern did not close the client connection")
        s.close()  # postern drains what the client sent until it closes
        self.assertRegex(data, b"^" + ERROR_LINE[proto] + b"$", "the client must get exactly the error line")
        self.assertTlsFailureLogged(port, why, timeout=timeout)
        time.sleep(0.3 * SLOW)  # a retry would come now
        self.assertEqual(f.count(), before + 1, "no second (plaintext) connection to the backend (C10)")
        c = f.last()
        self.assertTrue(c.done.wait(5 * SLOW), c.log)
        self.assertNotEqual(c.handshake, "ok", c.log)
        self.assertEqual(bytes(c.app), b"", "bytes reached the backend inside TLS")
        self.assertEqual(credential_bytes(c.raw), [], "credentials reached the backend: %r" % bytes(c.raw[-200:]))
        if c.raw:
            self.assertEqual(bytes(c.raw[:1]), b"\x16", "postern's first byte is not a TLS handshake record")
        return c

    def check_case(self, name):
        cert, form, extra, sni, why = CERT_CASES[name]
        if why is None:
            return self.check_ok(name)
        c = self.check_fails(name, why)
        self.assertEqual(c.sni, sni, "SNI sent")
        return c

    # --- good certificates, SNI
    def test_sni_from_backend_sni(self):
        self.check_case("good_sni")

    def test_ip_backend_no_sni_ip_san(self):
        self.check_case("good_ip")

    def test_hostname_backend_sni_localhost(self):
        self.check_case("good_host")

    def test_ipv6_backend_ip_san(self):
        self.assertTrue(V6, "::1 is not available on this machine")
        self.check_case("good_v6")

    def test_backend_sni_overrides_ip(self):
        self.check_case("sni_other_name")

    def test_intermediate_sent_by_server(self):
        self.check_case("intermediate_sent")

    # --- C9: host names (RFC 6125)
    def test_wildcard_leftmost_label(self):
        self.check_case("wildcard")

    def test_wildcard_not_two_labels(self):
        self.check_case("wildcard_two_labels")

    def test_wildcard_not_apex(self):
        self.check_case("wildcard_apex")

    def test_partial_wildcard_never_matches(self):
        self.check_case("partial_wildcard")

    def test_wrong_name(self):
        self.check_case("wrong_name")

    def test_wrong_name_hostname_backend(self):
        self.check_case("wrong_name_host")

    def test_ip_not_in_san(self):
        self.check_case("wrong_ip")

    def test_ip_only_in_subject_cn(self):
        self.check_case("ip_only_in_cn")

    def test_subject_cn_never_names_the_backend(self):
        """RFC 6125 6.4.4: a certificate without a DNS subjectAltName does
        not name localhost, though its subject CN is localhost."""
        self.check_case("cn_only_no_san")
        self.check_case("cn_only_no_san_host")

    # --- C9: chain and dates
    def test_expired(self):
        self.check_case("expired")

    def test_not_yet_valid(self):
        self.check_case("not_yet_valid")

    def test_untrusted_ca(self):
        self.check_case("untrusted_ca")

    def test_self_signed(self):
        self.check_case("self_signed")

    def test_intermediate_missing(self):
        self.check_case("intermediate_missing")

    def test_default_is_system_store(self):
        """Without backend_ca the system store is used: the test CA is not
        in it, so verification fails (it is not 'accept anything')."""
        self.check_case("system_store")

    # --- the error line per protocol and on a TLS client side
    def test_expired_pop3(self):
        self.check_fails("expired_pop3", r"certificate has expired", proto="pop3")

    def test_expired_smtp(self):
        self.check_fails("expired_smtp", r"certificate has expired", proto="smtp")

    def test_expired_imaps_client(self):
        """tls = implicit towards the client: the BYE comes inside TLS."""
        self.check_fails("expired_imaps", r"certificate has expired", client_tls=True)

    # --- C10: no plaintext retry
    def test_plaintext_server(self):
        """A server (or MitM) that answers in plaintext: handshake fails,
        no plaintext fallback, no credentials."""
        c = self.check_fails("plaintext_server", r"TLS failed")
        self.assertEqual(bytes(c.plain[:1]), b"\x16", "postern did not start with a ClientHello")

    def test_reset_during_handshake(self):
        self.check_fails("reset", r"TLS failed")

    def test_handshake_timeout(self):
        t0 = time.monotonic()
        self.check_fails("silent", r"(?i)time", timeout=8.0)
        took = time.monotonic() - t0
        self.assertGreater(took, 1.5, "closed before handshake_timeout = 2s")
        self.assertLess(took, 8 * SLOW, "not closed within handshake_timeout = 2s")

    def test_nothing_before_backend_tls_done(self):
        """The backend's handshake takes 1 s: the client sees nothing before
        it is done, and its early LOGIN is forwarded only inside TLS (C8)."""
        f = self.fakes["slow"]
        s = self.connect("slow")
        s.sendall(("a LOGIN %s %s\r\n" % (USER, PASSWORD)).encode())
        early = read_for(s, 0.6)
        self.assertEqual(early, b"", "the client got bytes before the backend's TLS was up")
        r = Reader(s)
        s.settimeout(5 * SLOW)
        self.assertEqual(r.readline(), GREETING["imap"])
        self.assertTrue(r.readline().startswith(b"a OK"), "the early LOGIN was not relayed after TLS")
        c = f.last()
        self.assertEqual(c.handshake, "ok")
        self.assertEqual(credential_bytes(c.raw), [], "credentials on the wire in plaintext")
        self.assertIn(b"a LOGIN", bytes(c.app))

    # --- backend_verify = no
    def test_verify_no_connects_with_warnings(self):
        for name in ("verify_no", "verify_no_selfsigned"):
            with self.subTest(name=name):
                start, end, lines = self.check_case(name)
                marked = [ln for ln in lines if (ln.event == "start" or ln.level == "warn")
                          and "backend_verify=no" in ln.msg]
                self.assertTrue(marked, "no start or warn line with backend_verify=no in the session:\n%s"
                                % "\n".join(ln.raw for ln in lines))
        # a warning at start, outside any session
        at_start = [ln for ln in complete_lines_of(self.p)
                    if ln.level == "warn" and not ln.sid and re.search(r"(?i)verif", ln.msg)]
        self.assertTrue(at_start, "no warn line at start about backend verification:\n%s" % self.p.log_text()[-3000:])
        # and no such mark on a verified session
        start, end, lines = self.check_case("good_sni")
        self.assertFalse([ln for ln in lines if "backend_verify=no" in ln.msg], lines)


class ImplicitCapabilities(ClientModeCase):
    """The backend's own STARTTLS/STLS/LOGINDISABLED are removed from the
    capability lists the client gets (greeting, CAPABILITY, CAPA, EHLO)."""

    @classmethod
    def make_services(cls):
        g = pki().pair("good")
        cls.fakes = {
            "imap": cls.server(implicit_tls_script(
                "imap", greeting=b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED AUTH=PLAIN XCAP] ready\r\n",
                caps="IMAP4rev1 STARTTLS LOGINDISABLED AUTH=PLAIN XCAP"), cert=g[0], key=g[1]),
            "pop3": cls.server(implicit_tls_script("pop3", capa=("USER", "STLS", "XCAP")), cert=g[0], key=g[1]),
            "smtp": cls.server(implicit_tls_script("smtp", ehlo=("STARTTLS", "AUTH PLAIN", "XCAP")),
                               cert=g[0], key=g[1]),
        }
        return [(k, svc(k, tls="off", backend=f.address, **backend_keys(backend_sni="localhost")))
                for k, f in cls.fakes.items()]

    def test_imap_greeting_and_capability(self):
        s = self.connect("imap")
        r = Reader(s)
        greet = r.readline()
        self.assertIn(b"XCAP", greet)
        self.assertNotRegex(greet, rb"STARTTLS|LOGINDISABLED")
        resp = harness.imap_cmd(r, "c", "CAPABILITY")
        self.assertIn(b"XCAP", resp)
        self.assertNotRegex(resp, rb"STARTTLS|LOGINDISABLED")

    def test_pop3_capa(self):
        s = self.connect("pop3")
        r = Reader(s)
        self.assertTrue(r.readline().startswith(b"+OK"))
        r.send(b"CAPA\r\n")
        resp = r.read_until(b"\r\n.\r\n")
        self.assertIn(b"XCAP", resp)
        self.assertNotIn(b"STLS", resp)

    def test_smtp_ehlo(self):
        s = self.connect("smtp")
        r = Reader(s)
        self.assertTrue(r.readline().startswith(b"220"))
        r.send(b"EHLO client.test\r\n")
        resp = r.read_until(b"250 ")
        resp += r.readline()
        self.assertIn(b"XCAP", resp)
        self.assertNotIn(b"STARTTLS", resp)


def complete_lines_of(p):
    from starttls_util import complete_lines

    return complete_lines(p)


# ---------------------------------------------------------------- configuration


class BackendTlsConfig(PosternTestCase):
    def check(self, text):
        p = self.postern(config_text=text, start=False)
        r = run([harness.POSTERN, "-t", "-c", p.conf], timeout=10)
        return p, r.returncode, r.stdout.decode(), r.stderr.decode()

    def test_keys_need_backend_tls(self):
        e = env()
        text = (
            "[imap]\n"                                   # 1
            "protocol = imap\n"                          # 2
            "tls = off\n"                                # 3
            "listen = 127.0.0.1:%d\n"                    # 4
            "backend = 127.0.0.1:%d\n"                   # 5
            "backend_verify = no\n"                      # 6
            "backend_ca = %s\n"                          # 7
            "backend_sni = localhost\n"                  # 8
            "\n"                                         # 9
            "[pop3]\n"                                   # 10
            "protocol = pop3\n"                          # 11
            "tls = off\n"                                # 12
            "listen = 127.0.0.1:%d\n"                    # 13
            "backend = 127.0.0.1:%d\n"                   # 14
            "backend_tls = off\n"                        # 15
            "backend_sni = localhost\n"                  # 16
        ) % (free_port(), e.imap_port, pki().ca, free_port(), e.pop3_port)
        p, code, out, err = self.check(text)
        self.assertEqual(code, 1, err)
        self.assertNotIn("configuration OK", out)
        for line, key in ((6, "backend_verify"), (7, "backend_ca"), (8, "backend_sni"), (16, "backend_sni")):
            self.assertRegex(err, r"(?m)^%s:%d: .*%s.*needs backend_tls" % (re.escape(p.conf), line, key),
                             "line %d (%s):\n%s" % (line, key, err))

    def test_backend_tls_config_ok(self):
        text = (
            "[imap]\n"
            "protocol = imap\n"
            "tls = off\n"
            "listen = 127.0.0.1:%d\n"
            "backend = localhost:993\n"
            "backend_tls = implicit\n"
            "backend_verify = yes\n"
            "backend_ca = %s\n"
            "backend_sni = mail.example.test\n"
        ) % (free_port(), pki().ca)
        p, code, out, err = self.check(text)
        self.assertEqual(code, 0, err)
        self.assertIn("postern: configuration OK", out.splitlines())

    def test_unix_backend_tls_needs_a_name(self):
        """A unix: backend has no host name to check the certificate against:
        backend_tls with verification needs backend_sni (else any certificate
        of the CA bundle would do)."""
        text = (
            "[imap]\n"                                   # 1
            "protocol = imap\n"                          # 2
            "tls = off\n"                                # 3
            "listen = 127.0.0.1:%d\n"                    # 4
            "backend = unix:/run/dovecot/imaps\n"        # 5
            "backend_tls = implicit\n"                   # 6
            "backend_ca = %s\n"                          # 7
        ) % (free_port(), pki().ca)
        p, code, out, err = self.check(text)
        self.assertEqual(code, 1, err)
        self.assertNotIn("configuration OK", out)
        self.assertRegex(err, r"(?m)^%s:6: .*unix.*backend_sni" % re.escape(p.conf), err)
        for extra in ("backend_sni = mail.example.test\n", "backend_verify = no\n"):
            with self.subTest(extra=extra):
                p, code, out, err = self.check(text + extra)
                self.assertEqual(code, 0, err)
                self.assertIn("postern: configuration OK", out.splitlines())

    def test_backend_ca_unreadable(self):
        text = (
            "[imap]\n"                                   # 1
            "protocol = imap\n"                          # 2
            "tls = off\n"                                # 3
            "listen = 127.0.0.1:%d\n"                    # 4
            "backend = localhost:993\n"                  # 5
            "backend_tls = implicit\n"                   # 6
            "backend_ca = /nonexistent/ca.pem\n"         # 7
        ) % free_port()
        p, code, out, err = self.check(text)
        self.assertEqual(code, 1, err)
        self.assertRegex(err, r"(?m)^%s:7: .*/nonexistent/ca\.pem" % re.escape(p.conf), err)
