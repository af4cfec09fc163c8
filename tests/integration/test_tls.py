"""TLS policy on the client side: ALPN (ALPACA), minimum version, no client
renegotiation, SNI certificate selection, client certificates."""

import os
import re
import socket
import ssl
import subprocess
import time

from harness import (
    ASAN,
    PipeWatch,
    PosternTestCase,
    Reader,
    env,
    free_port,
    imap_cmd,
    imap_login,
    run,
    svc,
    tls_connect,
)

# an OpenSSL config without Debian's MinProtocol/SECLEVEL so that the client
# really offers TLS 1.1 (otherwise the refusal would be the client's own)
LEGACY_OPENSSL_CNF = """\
openssl_conf = default_conf
[default_conf]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = None
CipherString = DEFAULT@SECLEVEL=0
"""


class Tls(PosternTestCase):
    def test_alpn(self):
        p = self.postern([("imaps", svc("imap")), ("pop3s", svc("pop3")), ("smtps", svc("smtp"))])
        # no ALPN: served
        s = tls_connect(p.port("imaps"))
        self.assertIsNone(s.selected_alpn_protocol())
        s.close()
        # ALPN with the service's protocol among others: served
        for name, proto in (("imaps", "imap"), ("pop3s", "pop3"), ("smtps", "smtp")):
            with self.subTest(service=name, alpn=proto):
                s = tls_connect(p.port(name), alpn=["h2", proto])
                self.assertIn(s.selected_alpn_protocol(), (proto, None))
                line = Reader(s).readline()
                self.assertTrue(line.startswith((b"* OK", b"+OK", b"220")), line)
                s.close()
        # ALPN without it: no_application_protocol alert
        for name, offer in (("imaps", ["http/1.1"]), ("imaps", ["h2", "pop3"]), ("pop3s", ["imap"]),
                            ("smtps", ["http/1.1", "imap"])):
            with self.subTest(service=name, alpn=offer):
                with self.assertRaises(ssl.SSLError) as cm:
                    tls_connect(p.port(name), alpn=offer)
                self.assertRegex(str(cm.exception).upper(), "NO.APPLICATION.PROTOCOL")
        # and with openssl s_client -alpn http/1.1
        r = run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % p.port("imaps"), "-servername", "localhost",
                 "-alpn", "http/1.1"], input=b"", timeout=15)
        out = (r.stdout + r.stderr).decode("utf-8", "replace")
        self.assertNotEqual(r.returncode, 0, out)
        self.assertRegex(out.lower(), r"no.application.protocol", out)
        fails = p.wait_for(event="end", regex="reason=handshake-failed", count=5)
        self.assertEqual(len(fails), 5)

    def test_tls11_refused(self):
        p = self.postern([("imaps", svc("imap"))])
        cnf = os.path.join(p.dir, "legacy-openssl.cnf")
        with open(cnf, "w") as f:
            f.write(LEGACY_OPENSSL_CNF)
        cmd = ["openssl", "s_client", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-servername", "localhost"]
        envx = {"OPENSSL_CONF": cnf}
        # control: this client does speak TLS 1.1 to a server that allows it
        sport = free_port()
        server = subprocess.Popen(
            ["openssl", "s_server", "-accept", "127.0.0.1:%d" % sport, "-cert", env().cert, "-key", env().key,
             "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, OPENSSL_CONF=cnf),
        )
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", sport), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            r = run(cmd + ["-connect", "127.0.0.1:%d" % sport], input=b"", timeout=15, env_extra=envx)
            control = r.stdout.decode("utf-8", "replace")
            if not re.search(r"New, TLSv1\.[01], Cipher is (?!\(NONE\))", control) or "TLSv1.1" not in control:
                self.skipTest("this OpenSSL cannot speak TLS 1.1 even to a TLS 1.1 server:\n" + control[-1500:])
        finally:
            server.kill()
            server.wait()
        r = run(cmd + ["-connect", "127.0.0.1:%d" % p.port()], input=b"", timeout=15, env_extra=envx)
        out = (r.stdout + r.stderr).decode("utf-8", "replace")
        self.assertRegex(out, r"New, \(NONE\), Cipher is \(NONE\)", out)
        self.assertNotIn("* OK", out)
        self.assertRegex(out.lower(), r"protocol.version|unsupported.protocol|wrong.version", out)
        p.wait_for(event="end", regex="reason=handshake-failed")
        # TLS 1.2 is the default minimum: served
        s = tls_connect(p.port(), max_version=ssl.TLSVersion.TLSv1_2)
        self.assertEqual(s.version(), "TLSv1.2")
        local_port = s.getsockname()[1]
        s.close()
        st, _ = p.wait_session_end(local_port)
        self.assertEqual(st.fields.get("tls"), "TLSv1.2", st.raw)

    def test_tls_min_version_13(self):
        p = self.postern([("imaps", svc("imap", tls_min_version="TLSv1.3"))])
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            tls_connect(p.port(), max_version=ssl.TLSVersion.TLSv1_2)
        s = tls_connect(p.port())
        self.assertEqual(s.version(), "TLSv1.3")
        s.close()

    def test_cipher_settings(self):
        p = self.postern([("imaps", svc("imap", ciphers="ECDHE-ECDSA-AES128-GCM-SHA256",
                                        ciphersuites="TLS_CHACHA20_POLY1305_SHA256"))])
        s = tls_connect(p.port())
        self.assertEqual(s.cipher()[0], "TLS_CHACHA20_POLY1305_SHA256")
        s.close()
        s = tls_connect(p.port(), max_version=ssl.TLSVersion.TLSv1_2)
        self.assertEqual(s.cipher()[0], "ECDHE-ECDSA-AES128-GCM-SHA256")
        local_port = s.getsockname()[1]
        s.close()
        st, _ = p.wait_session_end(local_port)
        self.assertEqual(st.fields.get("cipher"), "ECDHE-ECDSA-AES128-GCM-SHA256", st.raw)

    def test_no_client_renegotiation(self):
        """A TLS 1.2 client asking to renegotiate gets no second handshake."""
        p = self.postern([("imaps", svc("imap"))])
        proc = subprocess.Popen(
            ["openssl", "s_client", "-connect", "127.0.0.1:%d" % p.port(), "-servername", "localhost",
             "-tls1_2", "-msg", "-CAfile", env().ca],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        # after the handshake: a second ServerHello that does not come has no
        # event to wait for, so the pauses after "R" stay
        pause = 0.5 * (2 if ASAN else 1)
        watch = PipeWatch(proc.stdout)
        try:
            watch.wait(rb"^\* OK")  # the session is up (s_client's own lines may sit in its buffer)
            proc.stdin.write(b"R\n")
            proc.stdin.flush()
            time.sleep(pause)
            try:
                proc.stdin.write(b"a NOOP\n")
                proc.stdin.flush()
            except BrokenPipeError:
                pass
            time.sleep(pause)
        finally:
            out = watch.finish(proc)
        self.assertIn("RENEGOTIATING", out, "the client did not try: test invalid\n" + out)
        self.assertEqual(len(re.findall(r"(?m)<<< TLS 1.2, Handshake \[length [0-9a-f]+\], ServerHello$", out)), 1, out)
        self.assertTrue(p.running())
        # postern still serves others
        s = tls_connect(p.port())
        imap_cmd(imap_login(s), "z", "LOGOUT")
        s.close()

    def test_key_update(self):
        """TLS 1.3 KeyUpdate from the client, also with update_requested (the
        server's read then needs a write): the session goes on."""
        p = self.postern([("imaps", svc("imap"))])
        proc = subprocess.Popen(
            ["openssl", "s_client", "-connect", "127.0.0.1:%d" % p.port(), "-servername", "localhost",
             "-tls1_3", "-crlf", "-CAfile", env().ca],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        watch = PipeWatch(proc.stdout)
        try:
            # each line with what s_client prints once it is done: the tagged
            # reply, or KEYUPDATE when it sent one
            since = watch.wait(rb"^\* OK").end()
            for line, done in ((b"a LOGIN alice secret\n", rb"^a OK"), (b"K\n", rb"^KEYUPDATE"),
                               (b"b EXAMINE INBOX\n", rb"^b OK"), (b"k\n", rb"^KEYUPDATE"),
                               (b"c FETCH 2 BODY.PEEK[TEXT]\n", rb"^c OK"), (b"K\n", rb"^KEYUPDATE"),
                               (b"d LOGOUT\n", rb"^d OK")):
                proc.stdin.write(line)
                proc.stdin.flush()
                since = watch.wait(done, since).end()
        finally:
            out = watch.finish(proc)
        self.assertIn("KEYUPDATE", out, "the client did not send a KeyUpdate: test invalid\n" + out)
        for tag in ("a", "b", "c", "d"):
            self.assertRegex(out, r"(?m)^%s OK" % tag, out)
        self.assertIn("Grüße aus Köln", out)

    def test_sni_selects_certificate(self):
        e = env()
        p = self.postern([("imaps", svc("imap", cert=[e.cert, e.other_cert], key=[e.key, e.other_key]))])
        s = tls_connect(p.port(), sni="other.test")
        self.assertIn(("commonName", "other.test"), [x[0] for x in s.getpeercert()["subject"]])
        s.close()
        s = tls_connect(p.port(), sni="localhost")
        self.assertIn(("commonName", "localhost"), [x[0] for x in s.getpeercert()["subject"]])
        local_port = s.getsockname()[1]
        s.close()
        st, _ = p.wait_session_end(local_port)
        self.assertEqual(st.fields.get("sni"), "localhost")
        self.assertTrue(p.find(event="start", regex="sni=other.test"))

    def test_client_certificate_required(self):
        e = env()
        p = self.postern([("imaps", svc("imap", client_ca=e.ca, client_verify="require"))])
        with self.assertRaises((ssl.SSLError, ConnectionError, EOFError)):
            s = tls_connect(p.port())
            # TLS 1.3: the refusal may only show on the first read
            Reader(s).readline()
        s = tls_connect(p.port(), cert=e.client_cert, key=e.client_key)
        imap_cmd(imap_login(s), "z", "LOGOUT")
        s.close()
