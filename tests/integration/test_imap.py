"""IMAP through postern (tls = implicit -> Dovecot plaintext): curl,
openssl s_client, imaplib, the 20 MB message byte for byte, several listen
addresses, a unix socket backend, session log lines."""

import hashlib
import re
import ssl
import time

import harness
from harness import (
    BIG_MIN,
    BIG_SEQ,
    PASSWORD,
    SLOW,
    USER,
    PosternTestCase,
    curl,
    env,
    free_port,
    imap_cmd,
    imap_fetch_raw,
    imap_login,
    run,
    shut_down_after,
    svc,
    tls_connect,
)

TS_RE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


class Imap(PosternTestCase):
    def start_imaps(self, **kw):
        p = self.postern([("imaps", svc("imap", **kw))])
        return p, p.port("imaps")

    def test_curl_list_and_fetch(self):
        p, port = self.start_imaps()
        base = ["--resolve", "localhost:%d:127.0.0.1" % port, "--user", "%s:%s" % (USER, PASSWORD)]
        r = curl(base + ["imaps://localhost:%d/" % port])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"INBOX", r.stdout)
        r = curl(base + ["imaps://localhost:%d/INBOX;MAILINDEX=1" % port])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"This is the first message.", r.stdout)
        self.assertIn(b"Subject: Hello 1", r.stdout)
        r = curl(base + ["imaps://localhost:%d/INBOX" % port, "-X", "EXAMINE INBOX"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, rb"\* 4 EXISTS")
        # three sessions, each with start and end lines
        ends = p.wait_for(event="end", service="imaps", count=3)
        starts = p.find(event="start", service="imaps")
        self.assertEqual(len(starts), 3, p.log_text())
        for st in starts:
            self.assertRegex(st.ts, TS_RE)
            self.assertEqual(st.level, "info")
            self.assertRegex(st.sid, r"^[0-9a-f]+$", st.raw)
            self.assertRegex(st.addr, r"^127\.0\.0\.1:\d+$", st.raw)
            self.assertRegex(st.fields.get("tls", ""), r"^TLSv1\.[23]$", st.raw)
            self.assertTrue(st.fields.get("cipher"), st.raw)
            self.assertEqual(st.fields.get("sni"), "localhost", st.raw)
        self.assertEqual(len({s.sid for s in starts}), 3, "session ids are unique")
        for end in ends:
            self.assertIn(end.sid, {s.sid for s in starts})
            self.assertIn(end.fields.get("reason"), ("client-closed", "backend-closed"), end.raw)
            self.assertGreater(int(end.fields["in"]), 10, end.raw)
            self.assertGreater(int(end.fields["out"]), 100, end.raw)

    def test_openssl_s_client(self):
        p, port = self.start_imaps()
        for version, flag in (("TLSv1.3", "-tls1_3"), ("TLSv1.2", "-tls1_2")):
            with self.subTest(version=version):
                cmds = "a LOGIN %s %s\nb SELECT INBOX\nc FETCH 1 BODY[]\nd LOGOUT\n" % (USER, PASSWORD)
                r = run(
                    ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername", "localhost",
                     "-CAfile", env().ca, "-verify_return_error", "-verify_hostname", "localhost",
                     "-crlf", "-ign_eof", flag],
                    input=cmds.encode(), timeout=20,
                )
                out = r.stdout.decode("utf-8", "replace")
                self.assertEqual(r.returncode, 0, out + r.stderr.decode())
                self.assertRegex(out, r"Protocol\s*:\s*%s" % re.escape(version))
                self.assertIn("Verify return code: 0 (ok)", out)
                self.assertIn("* OK", out)
                self.assertRegex(out, r"(?m)^a OK")
                self.assertRegex(out, r"(?m)^b OK \[READ-WRITE\]")
                self.assertIn("This is the first message.", out)
                self.assertRegex(out, r"(?m)^\* BYE")
                self.assertRegex(out, r"(?m)^d OK")
                m = re.search(r"Cipher is (\S+)", out)
                self.assertTrue(m, out)
                st = p.wait_for(event="start", service="imaps", regex="tls=%s " % re.escape(version))[-1]
                self.assertEqual(st.fields.get("cipher"), m.group(1), st.raw)
        ends = p.wait_for(event="end", service="imaps", count=2)
        for end in ends:
            # After LOGOUT Dovecot closes and s_client quits: either EOF may be seen first.
            self.assertIn(end.fields["reason"], ("backend-closed", "client-closed"), end.raw)

    def test_imaplib(self):
        p, port = self.start_imaps()
        with shut_down_after(harness.IMAP4_SSL(port)) as c:
            typ, _ = c.login(USER, PASSWORD)
            self.assertEqual(typ, "OK")
            typ, boxes = c.list()
            self.assertEqual(typ, "OK")
            self.assertTrue(any(b"INBOX" in b for b in boxes), boxes)
            typ, data = c.select("INBOX")
            self.assertEqual((typ, data), ("OK", [b"4"]))
            typ, data = c.fetch("2", "(BODY.PEEK[])")
            self.assertEqual(typ, "OK")
            self.assertIn("Grüße aus Köln".encode(), data[0][1])
            self.assertIn("日本語".encode(), data[0][1])
            typ, data = c.fetch("1:4", "(RFC822.SIZE)")
            sizes = [int(re.search(rb"RFC822.SIZE (\d+)", d).group(1)) for d in data]
            self.assertEqual(len(sizes), 4)
            self.assertGreater(sizes[2], BIG_MIN)
            local_port = c.sock.getsockname()[1]
            c.logout()
        # imaplib closes right after LOGOUT's reply: either side may be first
        st, end = self.assertSessionEnd(p, local_port)
        self.assertIn(end.fields["reason"], ("client-closed", "backend-closed"), end.raw)
        self.assertEqual(st.fields.get("sni"), "localhost")

    def test_big_message_sha256(self):
        """The 20 MB 8-bit/binary message fetched through postern is byte for
        byte what Dovecot sends directly; out= counts it."""
        sha, size = env().direct_big("imap")
        self.assertGreater(size, BIG_MIN)
        p, port = self.start_imaps()
        s = tls_connect(port)
        local_port = s.getsockname()[1]
        t0 = time.monotonic()
        data = imap_fetch_raw(s, BIG_SEQ)
        took = time.monotonic() - t0
        s.close()
        self.assertEqual(len(data), size)
        self.assertEqual(hashlib.sha256(data).hexdigest(), sha)
        self.assertLess(took, 20 * SLOW, "20 MB took %.1fs" % took)
        _, end = self.assertSessionEnd(p, local_port)
        out = int(end.fields["out"])
        self.assertGreaterEqual(out, size, end.raw)
        self.assertLess(out, size + 10000, end.raw)
        self.assertLess(int(end.fields["in"]), 200, end.raw)
        self.assertGreater(int(end.fields["in"]), 40, end.raw)

    def test_multiple_listen_addresses(self):
        v6 = harness.have_ipv6()
        if not v6:
            print("\n*** WARNING: ::1 not available on this machine: IPv6 listen address NOT tested ***", flush=True)
        ports = [free_port(), free_port("127.0.0.2")]
        listen = ["127.0.0.1:%d" % ports[0]]
        if v6:
            ports.append(free_port("::1"))
            listen.append("[::1]:%d" % ports[2])
        # a space-separated list on one line, and a repeated listen line
        e = env()
        p = self.postern([("imaps", {"listen": listen + ["127.0.0.2:%d" % ports[1]]})], start=False)
        p.write_config(config_text=(
            "[global]\npidfile = %s\nshutdown_timeout = 3s\n\n"
            "[imaps]\nprotocol = imap\nlisten = %s\nlisten = 127.0.0.2:%d\n"
            "cert = %s\nkey = %s\nbackend = 127.0.0.1:%d\n"
        ) % (p.pidfile, " ".join(listen), ports[1], e.cert, e.key, e.imap_port))
        p.start()
        listening = p.wait_for(event="listening", who="postern", count=len(ports))
        addrs = {ln.fields.get("addr") for ln in listening}
        self.assertIn("127.0.0.1:%d" % ports[0], addrs)
        self.assertIn("127.0.0.2:%d" % ports[1], addrs)
        self.assertTrue(all(ln.fields.get("service") == "imaps" for ln in listening))
        targets = [("127.0.0.1", ports[0]), ("127.0.0.2", ports[1])]
        if v6:
            self.assertIn("[::1]:%d" % ports[2], addrs)
            targets.append(("::1", ports[2]))
        for host, port in targets:
            with self.subTest(host=host):
                s = tls_connect(port, host=host)
                r = imap_login(s)
                resp = imap_cmd(r, "e", "EXAMINE INBOX")
                self.assertIn(b"* 4 EXISTS", resp)
                imap_cmd(r, "z", "LOGOUT")
                local = s.getsockname()
                s.close()
                # a client port is unique per destination only: match the address too
                want = "[::1]:%d" % local[1] if host == "::1" else "127.0.0.1:%d" % local[1]
                ends = harness.wait_until(lambda: p.find(event="end", regex=r" %s end " % re.escape(want)), 5,
                                          msg="end line of %s" % want)
                self.assertTrue(p.find(event="start", regex=r"#%s %s start " % (ends[-1].sid, re.escape(want))))

    def test_unix_socket_backend(self):
        p, port = self.start_imaps(backend="unix:" + env().imap_socket)
        c = harness.IMAP4_SSL(port)
        c.login(USER, PASSWORD)
        typ, data = c.select("INBOX", readonly=True)
        self.assertEqual((typ, data), ("OK", [b"4"]))
        typ, data = c.fetch("4", "(BODY.PEEK[TEXT])")
        self.assertIn(b"The fourth message", data[0][1])
        local_port = c.sock.getsockname()[1]
        c.logout()
        _, end = self.assertSessionEnd(p, local_port)
        self.assertIn(end.fields["reason"], ("client-closed", "backend-closed"), end.raw)

    def test_no_sni(self):
        p, port = self.start_imaps()
        s = tls_connect(port, sni=None)
        local_port = s.getsockname()[1]
        r = imap_login(s)
        imap_cmd(r, "z", "LOGOUT")
        s.close()
        st, end = self.assertSessionEnd(p, local_port)
        self.assertNotIn("sni", st.fields, st.raw)
        self.assertIn("cipher", st.fields, st.raw)

    def test_client_close_notify(self):
        """Client closes with close_notify first: reason=client-closed, and
        the bytes counted match what was relayed."""
        p, port = self.start_imaps()
        s = tls_connect(port)
        local_port = s.getsockname()[1]
        r = harness.Reader(s)
        greeting = r.readline()
        s.sendall(b"a NOOP\r\n")
        reply = harness.imap_response(r, "a")
        try:
            s.unwrap()
        except (ssl.SSLError, OSError):
            pass
        s.close()
        st, end = self.assertSessionEnd(p, local_port, reason="client-closed")
        self.assertEqual(int(end.fields["in"]), len(b"a NOOP\r\n"), end.raw)
        self.assertEqual(int(end.fields["out"]), len(greeting) + len(reply), end.raw)

    def test_backend_close_sends_close_notify(self):
        """When Dovecot closes after LOGOUT, postern ends the TLS stream with
        close_notify (the client sees a clean EOF, not a truncation), and the
        end line says the backend closed (it did, first; the client closes
        only after that EOF, without a close_notify of its own)."""
        p, port = self.start_imaps()
        s = tls_connect(port, ragged_ok=False)
        r = imap_login(s)
        r.send("z LOGOUT\r\n")
        rest = r.read_to_eof()  # raises on EOF without close_notify
        self.assertIn(b"* BYE", rest)
        self.assertIn(b"z OK", rest)
        local_port = s.getsockname()[1]
        s.close()
        self.assertSessionEnd(p, local_port, reason="backend-closed")
