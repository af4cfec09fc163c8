"""A resumed TLS session never grants what a full handshake would refuse.

Every service of a postern shares the ticket keys, so a session (TLS 1.2
session id or ticket, TLS 1.3 ticket) must be bound to the service that
issued it and to what gated access there: a client without a certificate
takes a session from an open service, or from before a SIGHUP that turned
client certificates on, and offers it to a `client_verify = require`
service. That service must fall back to a full handshake and refuse it.
Resumption within one service still works: the controls show the clients
really resume, so that "not resumed" means something.

Real clients: openssl s_client (-sess_out/-sess_in, "Reused" or "New") and
Python's ssl module (SSLSocket.session).

Item ids (S8, C9, P5, ...) are those of tests/security-checklist.md.
"""

import os
import shutil
import signal
import socket
import ssl

from harness import PosternTestCase, Reader, client_context, env, run, svc

VERSIONS = (("TLSv1.2", "-tls1_2"), ("TLSv1.3", "-tls1_3"))
GREETING = b"* OK"


def s_client(port, flag, sess_out=None, sess_in=None, cert=False, sni="localhost"):
    """One s_client connection that reads the IMAP greeting and logs out;
    its stdout. A TLS 1.3 ticket arrives after the handshake: -ign_eof
    keeps the client reading until postern closes after LOGOUT."""
    e = env()
    cmd = ["openssl", "s_client", flag, "-connect", "127.0.0.1:%d" % port, "-servername", sni,
           "-CAfile", e.ca, "-verify_return_error", "-ign_eof"]
    if cert:
        cmd += ["-cert", e.client_cert, "-key", e.client_key]
    if sess_out:
        cmd += ["-sess_out", sess_out]
    if sess_in:
        cmd += ["-sess_in", sess_in]
    return run(cmd, input=b"a LOGOUT\r\n", timeout=20).stdout


def mtls(**kw):
    e = env()
    return svc("imap", client_ca=e.ca, client_verify="require", **kw)


class SessionBinding(PosternTestCase):
    def session_file(self, p, name):
        return os.path.join(p.dir, name)

    def assertResumed(self, out, version, why):
        self.assertIn(b"Reused, " + version.encode(), out, why + "\n" + out.decode(errors="replace")[-1500:])
        self.assertIn(GREETING, out, why)

    def assertRefusedWithoutResuming(self, out, why):
        text = out.decode(errors="replace")[-1500:]
        self.assertNotIn(b"Reused,", out, why + ": the session was resumed\n" + text)
        self.assertNotIn(GREETING, out, why + ": the client without a certificate got the greeting\n" + text)

    def test_session_of_another_service_does_not_resume_on_mtls(self):
        """A session from the open service, offered to the mTLS service of
        the same postern: a full handshake, refused without a certificate.
        Controls: it resumes on its own service, and an mTLS session with
        a certificate resumes on the mTLS service."""
        p = self.postern([("open", svc("imap")), ("mtls", mtls())])
        open_port, mtls_port = p.port("open"), p.port("mtls")
        for version, flag in VERSIONS:
            with self.subTest(version=version):
                sess = self.session_file(p, "open-" + version)
                out = s_client(open_port, flag, sess_out=sess)
                self.assertIn(GREETING, out)
                self.assertResumed(s_client(open_port, flag, sess_in=sess), version,
                                   "control: the session does not even resume on its own service")
                self.assertRefusedWithoutResuming(s_client(mtls_port, flag, sess_in=sess),
                                                  "an open service's session on the mTLS service")
                # refusing the session means a full handshake, not a failure
                out = s_client(mtls_port, flag, sess_in=sess, cert=True)
                self.assertIn(b"New, " + version.encode(), out, out.decode(errors="replace")[-1500:])
                self.assertIn(GREETING, out)
                mine = self.session_file(p, "mtls-" + version)
                self.assertIn(GREETING, s_client(mtls_port, flag, sess_out=mine, cert=True))
                self.assertResumed(s_client(mtls_port, flag, sess_in=mine), version,
                                   "control: an mTLS session with a certificate does not resume")

    def test_sni_selected_certificate_keeps_the_binding(self):
        """The mTLS service has two certificates chosen by SNI; whichever
        context serves the handshake, the foreign session is refused, and
        the service's own session resumes under the other name too."""
        e = env()
        two = mtls(cert=[e.cert, e.other_cert], key=[e.key, e.other_key])
        p = self.postern([("open", svc("imap")), ("mtls", two)])
        for version, flag in VERSIONS:
            with self.subTest(version=version):
                sess = self.session_file(p, "open-" + version)
                self.assertIn(GREETING, s_client(p.port("open"), flag, sess_out=sess))
                out = s_client(p.port("mtls"), flag, sess_in=sess, sni="other.test")
                self.assertRefusedWithoutResuming(out, "a foreign session under the second certificate's name")
                mine = self.session_file(p, "mtls-" + version)
                self.assertIn(GREETING, s_client(p.port("mtls"), flag, sess_out=mine, cert=True, sni="other.test"))
                self.assertResumed(s_client(p.port("mtls"), flag, sess_in=mine, sni="other.test"), version,
                                   "control: a session under the second certificate does not resume")

    def test_session_from_before_reload_does_not_resume_once_certificates_are_required(self):
        """Sessions issued while client_verify was off do not resume after a
        SIGHUP that requires client certificates on the same service."""
        p = self.postern([("imaps", svc("imap"))])
        port = p.port()
        sessions = {}
        for version, flag in VERSIONS:
            sessions[version] = self.session_file(p, "before-" + version)
            self.assertIn(GREETING, s_client(port, flag, sess_out=sessions[version]))
        p.write_config([("imaps", mtls(port=port))])
        p.signal(signal.SIGHUP)
        p.wait_for(who="postern", contains="configuration reloaded")
        for version, flag in VERSIONS:
            with self.subTest(version=version):
                self.assertRefusedWithoutResuming(s_client(port, flag, sess_in=sessions[version]),
                                                  "a session from before the reload")

    def test_session_from_before_a_reload_that_replaced_a_cert_dir_certificate_does_not_resume(self):
        """Certificates from a cert_dir bind sessions as cert/key ones do:
        after a SIGHUP that replaced the directory's certificate, a session
        from before gets a full handshake. Control:
        a SIGHUP that changed nothing lets it resume."""
        e = env()
        p = self.postern(start=False)
        d = os.path.join(p.dir, "certs")
        os.mkdir(d)

        def place(cert, key):  # as certbot does: a new file renamed over the old
            for src, name in ((cert, "site.pem"), (key, "site.key")):
                shutil.copy(src, os.path.join(d, ".new"))
                os.rename(os.path.join(d, ".new"), os.path.join(d, name))

        place(e.cert, e.key)
        p.write_config([("imaps", svc("imap", cert=None, key=None, cert_dir=d))])
        p.start()
        port = p.port()
        sessions = {}
        for version, flag in VERSIONS:
            sessions[version] = self.session_file(p, "before-" + version)
            self.assertIn(GREETING, s_client(port, flag, sess_out=sessions[version]))
        reloads = 0
        for replace in (False, True):
            if replace:
                place(e.cert2, e.key2)
            p.signal(signal.SIGHUP)
            reloads += 1
            p.wait_for(who="postern", contains="configuration reloaded", count=reloads)
            for version, flag in VERSIONS:
                with self.subTest(version=version, replaced=replace):
                    out = s_client(port, flag, sess_in=sessions[version])
                    if not replace:
                        self.assertResumed(out, version, "control: no change, yet the session does not resume")
                        continue
                    text = out.decode(errors="replace")[-1500:]
                    self.assertIn(b"New, " + version.encode(), out,
                                  "a session from before the certificate was replaced resumed\n" + text)
                    self.assertIn(GREETING, out, text)

    def test_resumption_never_takes_early_data(self):
        """T3: a resumed TLS 1.3 session carries no 0-RTT allowance, and early
        data a client sends anyway is not taken as commands."""
        p = self.postern([("imaps", svc("imap"))])
        sess = self.session_file(p, "sess")
        out = s_client(p.port(), "-tls1_3", sess_out=sess)
        self.assertIn(b"Max Early Data: 0", out, out.decode(errors="replace")[-1500:])
        early = self.session_file(p, "early")
        with open(early, "wb") as f:
            f.write(b"e1 NOOP\r\n")
        e = env()
        r = run(["openssl", "s_client", "-tls1_3", "-connect", "127.0.0.1:%d" % p.port(), "-servername",
                 "localhost", "-CAfile", e.ca, "-ign_eof", "-sess_in", sess, "-early_data", early],
                input=b"a LOGOUT\r\n", timeout=20)
        self.assertIn(b"Reused, TLSv1.3", r.stdout, "control: the session did not resume")
        self.assertNotIn(b"Early data was accepted", r.stdout)
        self.assertNotIn(b"e1 OK", r.stdout, "early data ran as a command")

    def test_python_client_cannot_carry_a_session_to_the_mtls_service(self):
        """Python's ssl module resumes with SSLSocket.session: a session of
        the open service does not resume on the mTLS service (the handshake
        fails for want of a certificate); it does on the open one."""
        p = self.postern([("open", svc("imap")), ("mtls", mtls())])
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            with self.subTest(version=version.name):
                ctx = client_context(min_version=version, max_version=version)

                def connect(port, session=None):
                    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
                    s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
                    self.addCleanup(s.close)
                    return s

                s = connect(p.port("open"))
                self.assertTrue(Reader(s).readline().startswith(GREETING))
                sess = s.session
                s.close()
                s = connect(p.port("open"), sess)
                self.assertTrue(Reader(s).readline().startswith(GREETING))
                self.assertTrue(s.session_reused, "control: Python did not resume on the open service")
                s.close()
                reused = line = None
                try:
                    s = connect(p.port("mtls"), sess)
                    reused = s.session_reused
                    line = Reader(s).readline()
                except (ssl.SSLError, ConnectionError, EOFError):
                    pass
                self.assertFalse(reused, "the open service's session resumed on the mTLS service")
                self.assertFalse(line, "the client without a certificate got %r" % line)
