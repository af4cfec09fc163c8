"""PROXY protocol.

- ProxyHeader (`proxy_protocol = v1 | v2`): postern sends the header with
  the client's address as the very first bytes to the backend, before
  backend TLS, exactly once; the exact bytes for TCP4 (client bound to
  127.0.0.9) and TCP6 (::1); a real Dovecot behind `haproxy = yes` logs the
  client's address (rip=127.0.0.9); behind client-side TLS a v2 header
  carries the SSL and AUTHORITY TLVs; P5: a client that sends its own PROXY
  line or v2 signature cannot spoof its address.
- AcceptProxy (`accept_proxy_from`): postern behind a load balancer reads a
  v1/v2 header from trusted addresses (before TLS), uses its source as the
  client's address in logs and in the header it passes on, accepts v2
  LOCAL, closes on a missing, malformed or late header, and treats a
  header from an untrusted address as data.

Item ids (S8, C9, P5, ...) are those of tests/security-checklist.md.
"""

import re
import socket
import struct
import time

import harness
from harness import SLOW, Reader, SourceIMAP4, client_context, client_hello, read_to_close, shut_down_after, svc
from clientmode_util import (
    PASSWORD,
    USER,
    V2_SIG,
    ClientModeCase,
    fmt_addr,
    pki,
    proxy_v1,
    proxy_v2,
    record_script,
    tls_dovecot,
)

V6 = harness.have_ipv6()
FAKE_GREETING = b"* OK fake imap ready\r\n"


def tlv(kind, value):
    """One PROXY v2 TLV."""
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def exchange(tc, s, first=b""):
    """Greeting, `a NOOP`, `z LOGOUT` until close; returns the bytes the
    client received. first: sent right after connecting."""
    if first:
        s.sendall(first)
    r = Reader(s)
    s.settimeout(5 * SLOW)
    greet = r.readline()
    tc.assertEqual(greet, FAKE_GREETING)
    r.send(b"a NOOP\r\n")
    got = greet + r.read_until(b"a OK NOOP done\r\n")
    r.send(b"z LOGOUT\r\n")
    rest = read_to_close(s, 5 * SLOW)
    tc.assertIsNotNone(rest, "not closed after LOGOUT")
    s.close()
    return got + rest


class ProxyHeader(ClientModeCase):
    @classmethod
    def make_services(cls):
        k = pki()
        good = k.pair("good")
        d = tls_dovecot()
        cls.fakes = {}
        out = []
        for v in ("v1", "v2"):
            f = cls.server(record_script(), name=v)
            cls.fakes[v] = f
            out.append((v, svc("imap", tls="off", backend=f.address, proxy_protocol=v)))
            if V6:
                f = cls.server(record_script(), name=v + "_6")
                cls.fakes[v + "_6"] = f
                out.append((v + "_6", svc("imap", tls="off", host="::1", backend=f.address, proxy_protocol=v)))
            f = cls.server(record_script(tls=True), cert=good[0], key=good[1], name=v + "_tls")
            cls.fakes[v + "_tls"] = f
            out.append((v + "_tls", svc("imap", tls="off", backend=f.address, proxy_protocol=v, backend_tls="implicit",
                                        backend_ca=k.ca, backend_sni="localhost")))
            out.append(("dv_" + v, svc("imap", tls="off", backend="127.0.0.1:%d" % d.ports["imaps_hap"],
                                       proxy_protocol=v, backend_tls="implicit", backend_ca=k.ca,
                                       backend_sni="localhost")))
            out.append(("dv_plain_" + v, svc("imap", tls="off", backend="127.0.0.1:%d" % d.ports["imap_hap"],
                                             proxy_protocol=v)))
        # the header carries the client's address also behind client-side TLS
        f = cls.server(record_script(), name="v2_imaps")
        cls.fakes["v2_imaps"] = f
        out.append(("v2_imaps", svc("imap", tls="implicit", backend=f.address, proxy_protocol="v2")))
        return out

    def header_for(self, v, s, listen_host="127.0.0.1", name=None):
        src = s.getsockname()[:2]
        dst = (listen_host, self.port(name or v))
        return proxy_v1(src, dst) if v == "v1" else proxy_v2(src, dst)

    def check_plain(self, name, v, host="127.0.0.1", source="127.0.0.9"):
        f = self.fakes[name]
        s = self.connect(name, source=source, host=host)
        cport = s.getsockname()[1]
        want = self.header_for(v, s, listen_host=host, name=name)
        exchange(self, s)
        c = f.last()
        self.assertTrue(c.done.wait(5 * SLOW), c.log)
        self.assertEqual(c.proxy_header, want, "the PROXY header")
        self.assertEqual(bytes(c.raw), want + b"a NOOP\r\nz LOGOUT\r\n",
                         "header once, first, then exactly the client's bytes")
        start, end, _ = self.session(cport)
        self.assertEqual(start.addr, fmt_addr(source or host, cport), start.raw)
        return c

    def test_v1_tcp4_exact(self):
        self.check_plain("v1", "v1")

    def test_v2_tcp4_exact(self):
        self.check_plain("v2", "v2")

    def test_v1_tcp6_exact(self):
        self.assertTrue(V6, "::1 is not available on this machine")
        c = self.check_plain("v1_6", "v1", host="::1", source=None)
        self.assertTrue(c.proxy_header.startswith(b"PROXY TCP6 ::1 ::1 "), c.proxy_header)

    def test_v2_tcp6_exact(self):
        self.assertTrue(V6, "::1 is not available on this machine")
        c = self.check_plain("v2_6", "v2", host="::1", source=None)
        self.assertEqual(c.proxy_header[12:16], b"\x21\x21\x00\x24", "v2 PROXY, TCP over IPv6, 36 bytes")

    def check_before_tls(self, v):
        name = v + "_tls"
        f = self.fakes[name]
        s = self.connect(name, source="127.0.0.9")
        want = self.header_for(v, s, name=name)
        exchange(self, s)
        c = f.last()
        self.assertTrue(c.done.wait(5 * SLOW), c.log)
        self.assertEqual(c.handshake, "ok", c.log)
        self.assertEqual(c.proxy_header, want)
        self.assertEqual(bytes(c.raw[: len(want)]), want, "the header is the very first bytes")
        self.assertEqual(bytes(c.raw[len(want): len(want) + 1]), b"\x16", "TLS starts right after the header")
        self.assertEqual(bytes(c.app), b"a NOOP\r\nz LOGOUT\r\n", "inside TLS: only the client's bytes")

    def test_v1_before_backend_tls(self):
        self.check_before_tls("v1")

    def test_v2_before_backend_tls(self):
        self.check_before_tls("v2")

    def test_v2_behind_client_tls(self):
        f = self.fakes["v2_imaps"]
        s = harness.tls_connect(self.port("v2_imaps"), source="127.0.0.9", timeout=5.0)
        # PP2_TYPE_SSL (client SSL, verify 1: no client certificate; the
        # version and cipher sub-TLVs) then PP2_TYPE_AUTHORITY: the SNI.
        subs = tlv(0x21, s.version().encode()) + tlv(0x23, s.cipher()[0].encode())
        tlvs = tlv(0x20, b"\x01" + struct.pack("!I", 1) + subs) + tlv(0x02, b"localhost")
        want = proxy_v2(s.getsockname()[:2], ("127.0.0.1", self.port("v2_imaps")), tlvs)
        exchange(self, s)
        c = f.last()
        self.assertTrue(c.done.wait(5 * SLOW), c.log)
        self.assertEqual(bytes(c.raw), want + b"a NOOP\r\nz LOGOUT\r\n")

    def test_v2_behind_client_tls_authority_only_for_a_host_name(self):
        """No SNI, or one that is not a host name: no AUTHORITY TLV."""
        f = self.fakes["v2_imaps"]
        for sni in (None, "bad_name.example"):
            with self.subTest(sni=sni):
                ctx = client_context()
                ctx.check_hostname = False
                s = harness.tls_connect(self.port("v2_imaps"), source="127.0.0.9", timeout=5.0, sni=sni, ctx=ctx)
                subs = tlv(0x21, s.version().encode()) + tlv(0x23, s.cipher()[0].encode())
                tlvs = tlv(0x20, b"\x01" + struct.pack("!I", 1) + subs)
                want = proxy_v2(s.getsockname()[:2], ("127.0.0.1", self.port("v2_imaps")), tlvs)
                cport = s.getsockname()[1]
                exchange(self, s)
                c = f.last()
                self.assertTrue(c.done.wait(5 * SLOW), c.log)
                self.assertEqual(c.proxy_header, want)
                start, _, _ = self.session(cport)
                self.assertEqual("sni=(invalid)" in start.raw, sni is not None, start.raw)

    def test_one_header_per_session(self):
        f = self.fakes["v1"]
        before = f.count()
        socks = [self.connect("v1", source="127.0.0.9") for _ in range(3)]
        wants = {self.header_for("v1", s) for s in socks}
        for s in socks:
            exchange(self, s)
        self.assertEqual(f.count(), before + 3)
        got = set()
        for c in f.conns[before:]:
            self.assertTrue(c.done.wait(5 * SLOW), c.log)
            self.assertEqual(bytes(c.raw).count(b"PROXY "), 1, bytes(c.raw))
            got.add(c.proxy_header)
        self.assertEqual(got, wants)

    # --- P5: the client cannot spoof
    def test_p5_client_proxy_line_is_data(self):
        f = self.fakes["v1"]
        s = self.connect("v1", source="127.0.0.9")
        cport = s.getsockname()[1]
        want = self.header_for("v1", s)
        spoof = b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n"
        exchange(self, s, first=spoof)
        c = f.last()
        self.assertTrue(c.done.wait(5 * SLOW), c.log)
        self.assertEqual(c.proxy_header, want)
        self.assertEqual(bytes(c.raw), want + spoof + b"a NOOP\r\nz LOGOUT\r\n")
        start, _, lines = self.session(cport)
        self.assertEqual(start.addr, "127.0.0.9:%d" % cport)
        self.assertFalse([ln for ln in lines if "1.2.3.4" in ln.raw], lines)

    def test_p5_client_v2_signature_is_data(self):
        f = self.fakes["v2"]
        s = self.connect("v2", source="127.0.0.9")
        cport = s.getsockname()[1]
        want = self.header_for("v2", s)
        spoof = proxy_v2(("1.2.3.4", 1111), ("5.6.7.8", 2222)) + b"\r\n"
        exchange(self, s, first=spoof)
        c = f.last()
        self.assertTrue(c.done.wait(5 * SLOW), c.log)
        self.assertEqual(c.proxy_header, want)
        self.assertEqual(bytes(c.raw), want + spoof + b"a NOOP\r\nz LOGOUT\r\n")
        self.assertEqual(bytes(c.raw).count(V2_SIG), 2)
        start, _, lines = self.session(cport)
        self.assertEqual(start.addr, "127.0.0.9:%d" % cport)
        self.assertFalse([ln for ln in lines if "1.2.3.4" in ln.raw], lines)

    # --- real Dovecot behind haproxy = yes
    def check_dovecot(self, name):
        d = tls_dovecot()
        off = d.log_size()
        with shut_down_after(SourceIMAP4("127.0.0.1", self.port(name), timeout=10 * SLOW)) as c:
            cport = c.sock.getsockname()[1]
            self.assertTrue(c.welcome.startswith(b"* OK"), c.welcome)
            self.assertEqual(c.login(USER, PASSWORD)[0], "OK")
            typ, data = c.select("INBOX", readonly=True)
            self.assertEqual((typ, data), ("OK", [b"3"]))
            typ, data = c.fetch("1", "(BODY.PEEK[])")
            self.assertEqual(typ, "OK")
            self.assertIn(b"First message, fetched through TLS.", data[0][1])
            c.logout()
        m = d.wait_log(off, r"imap-login: Info: Login: user=<alice>, method=PLAIN, rip=127\.0\.0\.9, [^\n]*")
        self.assertIn("lip=127.0.0.1,", m.group(0))
        self.assertRegex(m.group(0), r", TLS(, |$)")
        start, end, _ = self.session(cport)
        self.assertEqual(start.addr, "127.0.0.9:%d" % cport)

    def test_dovecot_v1_rip(self):
        self.check_dovecot("dv_v1")

    def test_dovecot_v2_rip(self):
        self.check_dovecot("dv_v2")

    def test_dovecot_plain_listener_rip(self):
        """The plaintext haproxy listener (Dovecot refuses plaintext LOGIN
        from a non-local client with ssl = required; its log still shows
        the address from the header)."""
        d = tls_dovecot()
        for v in ("v1", "v2"):
            with self.subTest(version=v):
                off = d.log_size()
                s = self.connect("dv_plain_" + v, source="127.0.0.9")
                cport = s.getsockname()[1]
                r = Reader(s)
                self.assertTrue(r.readline().startswith(b"* OK"))
                r.send(b"z LOGOUT\r\n")
                self.assertIsNotNone(read_to_close(s, 5 * SLOW))
                s.close()
                d.wait_log(off, r"imap-login: Info: Disconnected[^\n]*rip=127\.0\.0\.9, lip=127\.0\.0\.1")
                self.session(cport)


# ---------------------------------------------------------------- accept_proxy_from


class AcceptProxy(ClientModeCase):
    """accept_proxy_from = 127.0.0.1/32: clients from 127.0.0.1 are the
    'load balancer'; clients bound to 127.0.0.9 are not trusted."""

    @classmethod
    def make_services(cls):
        cls.fakes = {}
        out = []
        for name, kw in (
            ("ap", dict(tls="off", proxy_protocol="v1")),
            ("ap_v2out", dict(tls="off", proxy_protocol="v2")),
            ("ap_tls", dict(tls="implicit", proxy_protocol="v1")),
        ):
            f = cls.server(record_script(), name=name)
            cls.fakes[name] = f
            out.append((name, svc("imap", backend=f.address, accept_proxy_from="127.0.0.1/32",
                                  handshake_timeout="2s", **kw)))
        f = cls.server(record_script(header=False), name="ap_nopp")
        cls.fakes["ap_nopp"] = f
        out.append(("ap_nopp", svc("imap", tls="off", backend=f.address, accept_proxy_from="10.0.0.0/8 127.0.0.1/32",
                                   handshake_timeout="2s")))
        return out

    _next = [41000]

    def fake_port(self):
        self._next[0] += 1
        return self._next[0]

    def check_accepted(self, name, header, src, dst, passed=None, split=None):
        """A trusted client sends header (in parts if split), then talks:
        the log shows src as the client, the backend gets `passed` (by
        default: src and dst in the service's proxy_protocol version)."""
        f = self.fakes[name]
        before = f.count()
        s = self.connect(name)
        if split:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(0, len(header), split):
                s.sendall(header[i: i + split])
                time.sleep(0.1)  # separate segments: the split header is what is under test
        else:
            s.sendall(header)
        exchange(self, s)
        self.assertEqual(f.count(), before + 1)
        c = f.last()
        self.assertTrue(c.done.wait(5 * SLOW), c.log)
        if passed is None:
            passed = proxy_v2(src, dst) if name == "ap_v2out" else proxy_v1(src, dst)
        self.assertEqual(c.proxy_header, passed, "the header passed on")
        self.assertEqual(bytes(c.raw), passed + b"a NOOP\r\nz LOGOUT\r\n", "the received header is not forwarded")
        start, end, lines = self.session(src[1])
        self.assertEqual(start.addr, fmt_addr(*src), start.raw)
        return start, end, lines

    def test_v1_tcp4(self):
        p = self.fake_port()
        self.check_accepted("ap", proxy_v1(("203.0.113.7", p), ("198.51.100.1", 993)),
                            ("203.0.113.7", p), ("198.51.100.1", 993))

    def test_v2_tcp4(self):
        p = self.fake_port()
        self.check_accepted("ap", proxy_v2(("203.0.113.8", p), ("198.51.100.1", 993)),
                            ("203.0.113.8", p), ("198.51.100.1", 993))

    def test_v1_tcp6(self):
        p = self.fake_port()
        self.check_accepted("ap", proxy_v1(("2001:db8::7", p), ("2001:db8::1", 993)),
                            ("2001:db8::7", p), ("2001:db8::1", 993))

    def test_v2_tcp6_passed_on_as_v2(self):
        p = self.fake_port()
        self.check_accepted("ap_v2out", proxy_v2(("2001:db8::8", p), ("2001:db8::1", 993)),
                            ("2001:db8::8", p), ("2001:db8::1", 993))

    def test_v1_in_as_v2_out(self):
        p = self.fake_port()
        self.check_accepted("ap_v2out", proxy_v1(("203.0.113.9", p), ("198.51.100.1", 143)),
                            ("203.0.113.9", p), ("198.51.100.1", 143))

    def test_v2_with_tlvs(self):
        """TLVs (authority, noop) after the addresses are skipped."""
        p = self.fake_port()
        tlvs = b"\x02" + struct.pack("!H", 17) + b"mail.example.test" + b"\x04" + struct.pack("!H", 3) + b"\0\0\0"
        self.check_accepted("ap", proxy_v2(("203.0.113.10", p), ("198.51.100.1", 993), tlvs=tlvs),
                            ("203.0.113.10", p), ("198.51.100.1", 993))

    def test_header_split_across_segments(self):
        p = self.fake_port()
        self.check_accepted("ap", proxy_v2(("203.0.113.11", p), ("198.51.100.1", 993)),
                            ("203.0.113.11", p), ("198.51.100.1", 993), split=7)
        p = self.fake_port()
        self.check_accepted("ap", proxy_v1(("203.0.113.12", p), ("198.51.100.1", 993)),
                            ("203.0.113.12", p), ("198.51.100.1", 993), split=9)

    def test_data_after_header_in_same_segment(self):
        """The client's first bytes arrive with the header: kept, relayed."""
        p = self.fake_port()
        f = self.fakes["ap"]
        s = self.connect("ap")
        s.sendall(proxy_v1(("203.0.113.13", p), ("198.51.100.1", 993)) + b"a NOOP\r\n")
        r = Reader(s)
        self.assertEqual(r.readline(), FAKE_GREETING)
        self.assertEqual(r.readline(), b"a OK NOOP done\r\n")
        s.close()
        c = f.last()
        self.assertEqual(bytes(c.raw), proxy_v1(("203.0.113.13", p), ("198.51.100.1", 993)) + b"a NOOP\r\n")

    def test_header_without_proxy_protocol_not_forwarded(self):
        """Without proxy_protocol the backend sees only the client's bytes,
        never the balancer's header."""
        p = self.fake_port()
        f = self.fakes["ap_nopp"]
        s = self.connect("ap_nopp")
        s.sendall(proxy_v2(("203.0.113.14", p), ("198.51.100.1", 993)))
        exchange(self, s)
        c = f.last()
        self.assertTrue(c.done.wait(5 * SLOW), c.log)
        self.assertEqual(bytes(c.raw), b"a NOOP\r\nz LOGOUT\r\n")
        start, _, _ = self.session(p)
        self.assertEqual(start.addr, "203.0.113.14:%d" % p)

    def check_own_address(self, header):
        f = self.fakes["ap"]
        s = self.connect("ap")
        cport = s.getsockname()[1]
        s.sendall(header)
        exchange(self, s)
        c = f.last()
        self.assertTrue(c.done.wait(5 * SLOW), c.log)
        own = proxy_v1(("127.0.0.1", cport), ("127.0.0.1", self.port("ap")))
        self.assertEqual(c.proxy_header, own)
        self.assertEqual(bytes(c.raw), own + b"a NOOP\r\nz LOGOUT\r\n")
        start, _, _ = self.session(cport)
        self.assertEqual(start.addr, "127.0.0.1:%d" % cport)

    def test_v2_local_is_balancers_own(self):
        self.check_own_address(proxy_v2(None, None, command=0x0))

    def test_v2_local_with_addresses_ignored(self):
        """LOCAL: whatever address block follows is ignored."""
        self.check_own_address(proxy_v2(("203.0.113.15", 1234), ("198.51.100.1", 993), command=0x0))

    def test_v1_unknown_is_balancers_own(self):
        """`PROXY UNKNOWN` (v1's LOCAL; receivers must accept it)."""
        self.check_own_address(b"PROXY UNKNOWN\r\n")

    def test_header_before_client_tls(self):
        p = self.fake_port()
        f = self.fakes["ap_tls"]
        raw = socket.create_connection(("127.0.0.1", self.port("ap_tls")), timeout=5 * SLOW)
        self.addCleanup(raw.close)
        hdr = proxy_v2(("203.0.113.16", p), ("198.51.100.1", 993))
        raw.sendall(hdr)
        s = client_context().wrap_socket(raw, server_hostname="localhost")
        exchange(self, s)
        c = f.last()
        self.assertTrue(c.done.wait(5 * SLOW), c.log)
        self.assertEqual(c.proxy_header, proxy_v1(("203.0.113.16", p), ("198.51.100.1", 993)))
        start, _, _ = self.session(p)
        self.assertEqual(start.addr, "203.0.113.16:%d" % p)
        self.assertRegex(start.fields.get("tls", ""), r"^TLSv1\.[23]$", start.raw)

    # --- refused
    def refused_at_once(self, f, attempts, max_wait, min_wait=0.0):
        """Each (what, bytes) of ATTEMPTS on a connection of its own, all
        at once: each closed within MAX_WAIT of its connect, no sooner than
        MIN_WAIT, without a greeting and with a log line about the PROXY
        header; and no connection to backend F."""
        before = f.count()
        clients = []
        for what, data in attempts:
            t0 = time.monotonic()
            s = self.connect("ap")
            if data:
                s.sendall(data)
            clients.append((what, s, t0))
        for what, s, t0 in clients:
            with self.subTest(what=what):
                self.assertRefused(s, t0, max_wait, min_wait)
        time.sleep(0.2 * SLOW)  # a backend connection that is not made has no event: time for one to show
        self.assertEqual(f.count(), before, "a backend connection was made")

    def assertRefused(self, s, t0, max_wait, min_wait):
        cport = s.getsockname()[1]
        data = read_to_close(s, max(0.0, t0 + max_wait * SLOW - time.monotonic()))
        took = time.monotonic() - t0
        self.assertIsNotNone(data, "the connection was not closed within %.1fs" % max_wait)
        s.close()
        self.assertGreaterEqual(took, min_wait, "closed before handshake_timeout")
        self.assertNotIn(b"* OK", data, "the client got a greeting")
        addr = "127.0.0.1:%d" % cport
        lines = harness.wait_until(lambda: [ln for ln in harness.parse_log(self.p.log_text()) if addr in ln.raw],
                                   3, interval=0.05, msg="a log line for %s" % addr)
        self.assertTrue(any(re.search(r"(?i)proxy", ln.msg) for ln in lines),
                        "no log line about the PROXY header:\n%s" % "\n".join(ln.raw for ln in lines))

    def test_missing_header_closes(self):
        # decided from the first bytes: well before handshake_timeout (2s)
        self.refused_at_once(self.fakes["ap"], [
            ("imap command", b"a LOGIN alice secret\r\n"),
            ("TLS ClientHello", client_hello()),
            ("v2 signature, bad version", V2_SIG + b"\x11\x11\x00\x0c" + b"\0" * 12),
        ], max_wait=1.5)

    def test_malformed_header_closes(self):
        self.refused_at_once(self.fakes["ap"], [(what, data + b"a NOOP\r\n") for what, data in (
            ("bad address", b"PROXY TCP4 203.0.113.300 198.51.100.1 40000 993\r\n"),
            ("bad port", b"PROXY TCP4 203.0.113.7 198.51.100.1 99999 993\r\n"),
            ("missing fields", b"PROXY TCP4 203.0.113.7\r\n"),
            ("family mismatch", b"PROXY TCP4 2001:db8::7 198.51.100.1 40000 993\r\n"),
            ("bare LF", b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 993\n"),
            ("too long", b"PROXY TCP4 " + b"1" * 120 + b"\r\n"),
            ("v2 bad command", V2_SIG + b"\x2f\x11\x00\x0c" + b"\0" * 12),
            ("v2 short address block", V2_SIG + b"\x21\x11\x00\x04" + b"\0" * 4),
            ("v2 TCP6 short", V2_SIG + b"\x21\x21\x00\x0c" + b"\0" * 12),
        )], max_wait=1.5)

    def test_no_header_within_handshake_timeout(self):
        # each waits out handshake_timeout (2s)
        self.refused_at_once(self.fakes["ap"], [
            ("nothing", b""), ("partial v1", b"PROXY TCP4 203.0.113.7"), ("partial v2", V2_SIG + b"\x21\x11"),
        ], max_wait=6.0, min_wait=1.5)

    def test_untrusted_header_is_data(self):
        f = self.fakes["ap"]
        s = self.connect("ap", source="127.0.0.9")
        cport = s.getsockname()[1]
        spoof = b"PROXY TCP4 203.0.113.66 198.51.100.1 40000 993\r\n"
        exchange(self, s, first=spoof)
        c = f.last()
        self.assertTrue(c.done.wait(5 * SLOW), c.log)
        own = proxy_v1(("127.0.0.9", cport), ("127.0.0.1", self.port("ap")))
        self.assertEqual(c.proxy_header, own)
        self.assertEqual(bytes(c.raw), own + spoof + b"a NOOP\r\nz LOGOUT\r\n")
        start, _, lines = self.session(cport)
        self.assertEqual(start.addr, "127.0.0.9:%d" % cport)
        self.assertFalse([ln for ln in lines if "203.0.113.66" in ln.raw], lines)

    def test_untrusted_needs_no_header(self):
        f = self.fakes["ap"]
        s = self.connect("ap", source="127.0.0.9")
        cport = s.getsockname()[1]
        exchange(self, s)
        c = f.last()
        self.assertTrue(c.done.wait(5 * SLOW), c.log)
        self.assertEqual(bytes(c.raw), proxy_v1(("127.0.0.9", cport), ("127.0.0.1", self.port("ap")))
                         + b"a NOOP\r\nz LOGOUT\r\n")
