"""The relay: raw protocol, tls = off, backend down / not answering,
half-close, backpressure, idle and handshake timeouts, max_connections,
EMFILE, peers that reset."""

import hashlib
import random
import socket
import ssl
import struct
import threading
import time

from harness import (
    ASAN,
    BIG_SEQ,
    SLOW,
    BlackholeBackend,
    PosternTestCase,
    Reader,
    TcpBackend,
    client_hello,
    closed_by_peer,
    duplex,
    env,
    free_port,
    imap_cmd,
    imap_fetch_raw,
    imap_login,
    imap_logout,
    imap_response,
    imap_untagged,
    plain_connect,
    svc,
    tls_connect,
)

BUSY_OR_DOWN = {"imap": b"* BYE", "pop3": b"-ERR", "smtp": b"421"}


def rst_close(sock):
    """Close with a TCP RST (SO_LINGER 0)."""
    raw = sock
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()


class Relay(PosternTestCase):
    def backend(self, **kw):
        b = TcpBackend(**kw)
        self.addCleanup(b.stop)
        return b

    # ---------------------------------------------------------------- raw
    def test_raw_binary_both_ways(self):
        """protocol = raw relays every byte value unchanged, full duplex."""
        b = self.backend(greeting=b"RAW HELLO\r\n", echo=True)
        p = self.postern([("rawtls", svc("raw", backend=b.address))])
        s = tls_connect(p.port())
        local_port = s.getsockname()[1]
        r = Reader(s)
        self.assertEqual(r.readline(), b"RAW HELLO\r\n")
        payload = random.Random(7).randbytes(3 * 1024 * 1024) + bytes(range(256))
        got = duplex(s, payload, len(payload), initial=bytes(r.buf))
        self.assertEqual(len(got), len(payload))
        self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(payload).digest())
        s.close()
        st, end = self.assertSessionEnd(p, local_port, reason="client-closed")
        self.assertEqual(int(end.fields["in"]), len(payload), end.raw)
        self.assertEqual(int(end.fields["out"]), len(payload) + 11, end.raw)
        self.assertEqual(st.service, "rawtls")

    # ---------------------------------------------------------------- tls = off
    def test_tls_off_imap(self):
        p = self.postern([("imap", svc("imap", tls="off"))])
        s = plain_connect(p.port())
        local_port = s.getsockname()[1]
        r = imap_login(s)
        resp = imap_cmd(r, "e", "EXAMINE INBOX")
        self.assertIn(b"* 4 EXISTS", resp)
        resp = imap_cmd(r, "f", "FETCH 1 BODY.PEEK[TEXT]")
        self.assertIn(b"This is the first message.", resp)
        self.assertIn(b"* BYE", imap_logout(r))
        s.close()
        st, end = self.assertSessionEnd(p, local_port, reason="backend-closed")
        self.assertEqual(st.fields.get("tls"), "off", st.raw)
        self.assertNotIn("cipher", st.fields, st.raw)
        self.assertNotIn("sni", st.fields, st.raw)

    # ---------------------------------------------------------------- backend down
    def test_backend_down(self):
        """Backend refusing: the client gets IMAP * BYE / POP3 -ERR / SMTP 421
        (over TLS when the service uses TLS), a warn log line, and
        reason=backend-unreachable."""
        dead = "127.0.0.1:%d" % free_port()
        services = []
        for proto in ("imap", "pop3", "smtp"):
            services.append((proto + "s", svc(proto, backend=dead)))
            services.append((proto + "-plain", svc(proto, backend=dead, tls="off")))
        services.append(("imap-unix", svc("imap", backend="unix:%s/no-such.sock" % env().tmp)))
        p = self.postern(services)
        for name, d in services:
            proto = d["protocol"]
            with self.subTest(service=name):
                port = int(d["listen"].rsplit(":", 1)[1])
                if d["tls"] == "off":
                    s = plain_connect(port)
                else:
                    s = tls_connect(port)
                local_port = s.getsockname()[1]
                r = Reader(s)
                line = r.readline()
                self.assertTrue(line.startswith(BUSY_OR_DOWN[proto]), line)
                self.assertTrue(line.endswith(b"\r\n"), line)
                self.assertTrue(closed_by_peer(s, 5 * SLOW), "connection not closed after the error reply")
                s.close()
                _, end = self.assertSessionEnd(p, local_port, reason="backend-unreachable", service=name)
                warns = [
                    ln for ln in p.session_lines(local_port, service=name)
                    if ln.level in ("warn", "error") and "backend" in ln.msg and "unreachable" in ln.msg
                ]
                self.assertTrue(warns, "no warn line about the unreachable backend:\n" + p.log_text()[-3000:])

    def test_backend_connect_timeout(self):
        """A backend that never answers the SYN: after connect_timeout the
        client gets * BYE, reason=backend-unreachable."""
        bh = BlackholeBackend()
        self.addCleanup(bh.stop)
        if not bh.hangs():
            self.skipTest("could not build a backend whose connects hang")
        p = self.postern([("imaps", svc("imap", backend="127.0.0.1:%d" % bh.port, connect_timeout="1s"))])
        t0 = time.monotonic()
        s = tls_connect(p.port(), timeout=15)
        local_port = s.getsockname()[1]
        line = Reader(s).readline()
        took = time.monotonic() - t0
        s.close()
        self.assertTrue(line.startswith(b"* BYE"), line)
        self.assertGreater(took, 0.8, "BYE came before connect_timeout")
        self.assertLess(took, 5 * SLOW, "BYE came long after connect_timeout")
        self.assertSessionEnd(p, local_port, reason="backend-unreachable")

    # ---------------------------------------------------------------- half-close
    def test_half_close_smtp_plain(self):
        """tls = off: QUIT then shutdown(SHUT_WR); the client still gets 221."""
        p = self.postern([("smtp", svc("smtp", tls="off"))])
        s = plain_connect(p.port())
        r = Reader(s)
        self.assertTrue(r.readline().startswith(b"220"))
        s.sendall(b"QUIT\r\n")
        s.shutdown(socket.SHUT_WR)
        rest = r.read_to_eof()
        self.assertTrue(rest.startswith(b"221"), rest)
        local_port = s.getsockname()[1]
        s.close()
        self.assertSessionEnd(p, local_port)

    def test_half_close_delayed_reply_plain(self):
        """tls = off, raw: the backend answers 0.5 s after it sees EOF; postern
        must pass the FIN on and keep the other direction open."""
        b = self.backend(greeting=b"HELLO\r\n", echo=False, eof_reply=b"REPLY AFTER EOF\r\n", eof_delay=0.5)
        p = self.postern([("raw", svc("raw", tls="off", backend=b.address))])
        s = plain_connect(p.port())
        r = Reader(s)
        self.assertEqual(r.readline(), b"HELLO\r\n")
        s.sendall(b"QUIT\r\n")
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(r.read_to_eof(), b"REPLY AFTER EOF\r\n")
        local_port = s.getsockname()[1]
        s.close()
        _, end = self.assertSessionEnd(p, local_port)
        self.assertEqual(int(end.fields["in"]), 6, end.raw)
        self.assertEqual(int(end.fields["out"]), 7 + 17, end.raw)

    def test_half_close_delayed_reply_tls(self):
        """implicit TLS: the client sends close_notify (and keeps reading);
        postern passes it on as a FIN and still delivers the late reply."""
        b = self.backend(greeting=b"HELLO\r\n", echo=False, eof_reply=b"REPLY AFTER EOF\r\n", eof_delay=0.5)
        p = self.postern([("rawtls", svc("raw", backend=b.address))])
        s = tls_connect(p.port())
        r = Reader(s)
        self.assertEqual(r.readline(), b"HELLO\r\n")
        s.sendall(b"QUIT\r\n")
        s.setblocking(False)
        try:
            s.unwrap()  # sends close_notify; would then wait for the peer's
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        s.setblocking(True)
        s.settimeout(10 * SLOW)
        got = bytearray()
        while True:
            try:
                chunk = s._sslobj.read(65536)
            except ssl.SSLZeroReturnError:
                break
            except (ssl.SSLError, OSError) as e:
                self.fail("reading after close_notify: %r (got %r)" % (e, bytes(got)))
            if not chunk:
                break
            got += chunk
        self.assertEqual(bytes(got), b"REPLY AFTER EOF\r\n")
        s.close()

    # ---------------------------------------------------------------- backpressure
    def test_backpressure_slow_reader(self):
        """A client that does not read a 20 MB FETCH: postern stops reading
        from Dovecot, its RSS stays small; the data then arrives intact."""
        sha, size = env().direct_big("imap")
        p = self.postern([("imaps", svc("imap"))])
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        raw.settimeout(30 * SLOW)
        raw.connect(("127.0.0.1", p.port()))
        from harness import client_context

        s = client_context().wrap_socket(raw, server_hostname="localhost")
        r = imap_login(s)
        imap_cmd(r, "s", "EXAMINE INBOX")
        time.sleep(0.2)  # no event says the heap has settled: a pause before the baseline
        base = p.rss_kb()
        s.sendall(b"f FETCH %d BODY.PEEK[]\r\n" % BIG_SEQ)
        peak = base
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end:
            peak = max(peak, p.rss_kb())
            time.sleep(0.05)
        data = imap_untagged(imap_response(r, "f"), "f")
        imap_cmd(r, "z", "LOGOUT")
        s.close()
        self.assertEqual(hashlib.sha256(data).hexdigest(), sha)
        growth_mb = (peak - base) / 1024.0
        limit = 12 if ASAN else 8
        self.assertLess(growth_mb, limit, "postern's RSS grew %.1f MB (base %d kB) while the client did not read"
                        % (growth_mb, base))
        if not ASAN:
            self.assertLess(peak / 1024.0, 30, "postern's RSS %.1f MB" % (peak / 1024.0))

    def test_backpressure_slow_backend(self):
        """A backend that does not read: postern stops reading from the client
        (the client's send blocks) instead of buffering everything."""
        # a backend that accepts at the TCP level (kernel backlog) but never reads
        never = socket.socket()
        never.bind(("127.0.0.1", 0))
        never.listen(8)
        self.addCleanup(never.close)
        p2 = self.postern([("rawtls", svc("raw", backend="127.0.0.1:%d" % never.getsockname()[1],
                                          idle_timeout="3s"))])
        s = tls_connect(p2.port())
        time.sleep(0.2)  # no event says the heap has settled: a pause before the baseline
        base = p2.rss_kb()
        sent = [0]
        chunk = b"x" * 65536

        def sender():
            try:
                while sent[0] < 64 * 1024 * 1024:
                    s.sendall(chunk)
                    sent[0] += len(chunk)
            except Exception:
                pass

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        peak = base
        t_end = time.monotonic() + 2.5
        while time.monotonic() < t_end:
            peak = max(peak, p2.rss_kb())
            time.sleep(0.05)
        stalled_at = sent[0]
        growth_mb = (peak - base) / 1024.0
        # wake the blocked sender, then reset the connection
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        t.join(5)
        s.close()
        self.assertLess(stalled_at, 40 * 1024 * 1024, "the client could send %d bytes into a backend that never reads"
                        % stalled_at)
        self.assertLess(growth_mb, 12 if ASAN else 8, "postern's RSS grew %.1f MB" % growth_mb)

    # ---------------------------------------------------------------- timeouts
    def test_idle_timeout(self):
        p = self.postern([("imaps", svc("imap", idle_timeout="2s"))])
        idle = tls_connect(p.port())
        idle_port = idle.getsockname()[1]
        imap_login(idle)
        busy = tls_connect(p.port())
        busy_port = busy.getsockname()[1]
        rb = imap_login(busy)
        t0 = time.monotonic()
        # the busy session talks every 0.6 s for 3.6 s and must survive
        for i in range(6):
            imap_cmd(rb, "n%d" % i, "NOOP")
            time.sleep(0.6)
        self.assertTrue(closed_by_peer(idle, 3 * SLOW), "idle session not closed")
        imap_cmd(rb, "n9", "NOOP")
        imap_cmd(rb, "z", "LOGOUT")
        busy.close()
        idle.close()
        _, end = self.assertSessionEnd(p, idle_port, reason="idle-timeout")
        self.assertGreater(float(end.fields["duration"]), 1.9, end.raw)
        self.assertLess(float(end.fields["duration"]), 4.5 * SLOW, end.raw)
        # LOGOUT, then the client closes at once: either side's EOF may come first.
        _, end = self.assertSessionEnd(p, busy_port)
        self.assertIn(end.fields["reason"], ("backend-closed", "client-closed"), end.raw)
        self.assertGreater(time.monotonic() - t0, 3.5)

    def test_handshake_timeout(self):
        """A client that never sends a ClientHello (or stops half-way) is
        closed after handshake_timeout, reason=handshake-failed, and does not
        block other clients meanwhile."""
        p = self.postern([("imaps", svc("imap", handshake_timeout="2s"))])
        silent = plain_connect(p.port())
        silent_port = silent.getsockname()[1]
        partial = plain_connect(p.port())
        partial_port = partial.getsockname()[1]
        partial.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's first bytes
        t0 = time.monotonic()
        s = tls_connect(p.port())
        r = imap_login(s)
        imap_cmd(r, "z", "LOGOUT")
        s.close()
        self.assertLess(time.monotonic() - t0, 1.5 * SLOW, "a stalled handshake held up another client")
        for sock, port in ((silent, silent_port), (partial, partial_port)):
            self.assertTrue(closed_by_peer(sock, 5 * SLOW), "stalled handshake not closed")
            sock.close()
            _, end = self.assertSessionEnd(p, port, reason="handshake-failed")
            self.assertGreater(float(end.fields["duration"]), 1.9, end.raw)
            self.assertLess(float(end.fields["duration"]), 4.5 * SLOW, end.raw)
            self.assertEqual(end.fields["in"], "0")
            self.assertEqual(end.fields["out"], "0")

    # ---------------------------------------------------------------- limits
    def test_max_connections(self):
        """Beyond max_connections: plaintext listeners answer * BYE / -ERR /
        421 and close; an implicit-TLS listener closes before any handshake;
        both logged with reason=refused. A freed slot serves again."""
        services = [
            ("imaps", svc("imap")),
            ("imap", svc("imap", tls="off")),
            ("pop3", svc("pop3", tls="off")),
            ("smtp", svc("smtp", tls="off")),
        ]
        p = self.postern(services, {"max_connections": 2})
        held = []
        for _ in range(2):
            s = plain_connect(p.port("imap"))
            r = Reader(s)
            self.assertTrue(r.readline().startswith(b"* OK"))
            held.append(s)
        for name in ("imap", "pop3", "smtp"):
            with self.subTest(service=name):
                s = plain_connect(p.port(name))
                line = Reader(s).readline()
                self.assertTrue(line.startswith(BUSY_OR_DOWN[name]), line)
                self.assertTrue(closed_by_peer(s, 3 * SLOW))
                s.close()
        with self.subTest(service="imaps"):
            # closed before any handshake: a ClientHello gets no byte back
            raw = plain_connect(p.port("imaps"))
            try:
                raw.sendall(client_hello())
                answer = raw.recv(100)
            except ConnectionError:
                answer = b""
            raw.close()
            self.assertEqual(answer, b"", "the refused TLS connection got an answer (a ServerHello?)")
        # logged: "refused" with the client's address (no session id yet)
        refused = p.wait_for(regex=r"\brefused\b", count=4)
        self.assertGreaterEqual(len(refused), 4, refused)
        # free a slot: a new TLS session works again
        gone = held.pop()
        gone_port = gone.getsockname()[1]
        gone.close()
        p.wait_session_end(gone_port)  # the slot is free once its session ended
        s = tls_connect(p.port("imaps"))
        r = imap_login(s)
        imap_cmd(r, "z", "LOGOUT")
        s.close()
        for h in held:
            h.close()

    def test_emfile_does_not_spin(self):
        """Out of descriptors: postern backs off instead of spinning on the
        readable listener, and serves again once descriptors are free."""
        b = self.backend(greeting=b"HI\r\n", echo=True)
        limit = 64
        p = self.postern([("raw", svc("raw", tls="off", backend=b.address))], rlimit_nofile=limit)
        port = p.port()
        clients = []
        try:
            for _ in range(limit + 40):
                clients.append(plain_connect(port, timeout=5))
            p.wait_for(level="warn", contains="pausing for")  # out of descriptors
            served = 0
            for c in clients:
                c.settimeout(0.01)
                try:
                    if c.recv(10):
                        served += 1
                except (socket.timeout, OSError):
                    pass
            self.assertLess(served, len(clients), "every connection was served: postern did not run out of "
                            "descriptors (RLIMIT_NOFILE=%d raised?)" % limit)
            self.assertGreater(served, 5, "hardly any connection served")
            cpu0, t0 = p.cpu_seconds(), time.monotonic()
            time.sleep(2.0)  # the window the CPU use is measured over
            cpu = (p.cpu_seconds() - cpu0) / (time.monotonic() - t0)
            self.assertLess(cpu, 0.3, "postern used %.0f%% CPU while out of descriptors" % (cpu * 100))
            self.assertTrue(p.running())
        finally:
            for c in clients:
                c.close()
        # descriptors free again: a new session is served within a few seconds
        deadline = time.monotonic() + 8 * SLOW
        ok = False
        while time.monotonic() < deadline and not ok:
            try:
                s = plain_connect(port, timeout=3)
                s.settimeout(3 * SLOW)
                ok = s.recv(10) == b"HI\r\n"
                s.close()
            except OSError:
                time.sleep(0.2)
        self.assertTrue(ok, "postern does not serve again after descriptors were freed")

    def test_concurrent_sessions(self):
        """40 sessions at once, three of them pulling the 20 MB message, the
        rest small fetches, over TLS and plaintext: all complete, all intact."""
        sha, size = env().direct_big("imap")
        p = self.postern([("imaps", svc("imap")), ("imap", svc("imap", tls="off"))])
        results, errors, ports = {}, [], {}

        def worker(i):
            try:
                tls = i % 2 == 0
                s = tls_connect(p.port("imaps")) if tls else plain_connect(p.port("imap"))
                s.settimeout(60 * SLOW)
                ports[i] = ("imaps" if tls else "imap", s.getsockname()[1])
                if i < 3:
                    data = imap_fetch_raw(s, BIG_SEQ)
                    results[i] = hashlib.sha256(data).hexdigest() == sha
                else:
                    r = imap_login(s)
                    imap_cmd(r, "e", "EXAMINE INBOX")
                    resp = imap_cmd(r, "f", "FETCH %d BODY.PEEK[TEXT]" % (1 + i % 2 * 3))
                    results[i] = (b"first message" in resp) or (b"fourth message" in resp)
                    imap_cmd(r, "z", "LOGOUT")
                s.close()
            except Exception as e:
                errors.append("client %d: %r" % (i, e))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 40)
        self.assertTrue(all(results.values()), results)
        ends = p.wait_for(event="end", count=40, timeout=10)
        for i, (service, port) in ports.items():
            self.assertTrue([e for e in ends if e.service == service and e.client_port == port],
                            "no end line for client %d (%s, port %d)" % (i, service, port))

    def test_backend_reset_mid_upload(self):
        """The backend resets while postern is writing a big upload to it
        (EPIPE/ECONNRESET on a plain socket: SIGPIPE territory): postern
        closes that session and lives on."""
        b = self.backend(greeting=b"HELLO\r\n", echo=False, rst_after=100000)
        p = self.postern([("raw", svc("raw", tls="off", backend=b.address)),
                          ("rawtls", svc("raw", backend=b.address))])
        for name, connect in (("raw", plain_connect), ("rawtls", tls_connect)):
            with self.subTest(service=name):
                s = connect(p.port(name))
                local_port = s.getsockname()[1]
                self.assertEqual(Reader(s).readline(), b"HELLO\r\n")
                try:
                    for _ in range(200):
                        s.sendall(b"y" * 65536)
                except (OSError, ssl.SSLError):
                    pass
                self.assertTrue(closed_by_peer(s, 5 * SLOW), "client side not closed after the backend reset")
                s.close()
                _, end = self.assertSessionEnd(p, local_port, service=name)
                self.assertIn(end.fields["reason"], ("backend-closed", "error"), end.raw)
                time.sleep(0.1)  # a crash after the end line would need a moment to show
                self.assertTrue(p.running(), "postern died after a backend reset:\n" + p.stderr()[-3000:])
        self.assertGreaterEqual(b.resets, 2)

    def test_client_reset_mid_transfer(self):
        """A client that resets the connection while postern writes a big
        FETCH to it (EPIPE/ECONNRESET, SIGPIPE territory): postern lives on."""
        p = self.postern([("imaps", svc("imap")), ("imap", svc("imap", tls="off"))])
        for name, connect in (("imaps", tls_connect), ("imap", plain_connect)):
            with self.subTest(service=name):
                s = connect(p.port(name))
                local_port = s.getsockname()[1]
                r = imap_login(s)
                imap_cmd(r, "s", "EXAMINE INBOX")
                s.sendall(b"f FETCH %d BODY.PEEK[]\r\n" % BIG_SEQ)
                r.read(200000)
                if isinstance(s, ssl.SSLSocket):
                    raw = socket.socket(fileno=s.detach())
                    rst_close(raw)
                else:
                    rst_close(s)
                _, end = self.assertSessionEnd(p, local_port, service=name)
                self.assertIn(end.fields["reason"], ("client-closed", "error"), end.raw)
                time.sleep(0.2)  # a crash after the end line would need a moment to show
                self.assertTrue(p.running(), "postern died after a client reset:\n" + p.stderr()[-3000:])
        s = tls_connect(p.port("imaps"))
        r = imap_login(s)
        imap_cmd(r, "z", "LOGOUT")
        s.close()
