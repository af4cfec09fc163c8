"""Session tickets (ticket_keys): resumption with the nginx 80-byte key
files, across two instances sharing them (a fleet), across SIGHUP with the
random key, key rotation by file order, and bad key files at -t."""

import os
import re
import signal
import socket
import ssl

from harness import POSTERN, PosternTestCase, Reader, client_context, run, svc

VERSIONS = (("TLSv1.3", ssl.TLSVersion.TLSv1_3), ("TLSv1.2", ssl.TLSVersion.TLSv1_2))


def key_file(path, seed):
    """An 80-byte key: name (16), HMAC key (32), AES key (32)."""
    data = bytes((seed * 7 + i) & 0xFF for i in range(80))
    with open(path, "wb") as f:
        f.write(data)
    return path


_contexts = {}


def handshake(port, version, session=None):
    """A full IMAP greeting over TLS; returns (ssl session, reused?). The
    greeting is read so that a TLS 1.3 ticket has arrived. Python resumes a
    session only from the context that made it: one context per version."""
    ctx = _contexts.get(version)
    if ctx is None:
        ctx = _contexts[version] = client_context(min_version=version, max_version=version)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    line = Reader(s).readline()
    assert line.startswith(b"* OK"), line
    reused, sess = s.session_reused, s.session
    s.close()
    return sess, reused


class Tickets(PosternTestCase):
    def test_resume_with_key_files(self):
        p = self.postern(start=False)
        k1 = key_file(os.path.join(p.dir, "k1"), 1)
        k2 = key_file(os.path.join(p.dir, "k2"), 2)
        p.write_config([("imaps", svc("imap"))], {"ticket_keys": "%s %s" % (k1, k2)})
        p.start()
        for name, version in VERSIONS:
            with self.subTest(version=name):
                sess, reused = handshake(p.port(), version)
                self.assertFalse(reused)
                _, reused = handshake(p.port(), version, sess)
                self.assertTrue(reused, "%s session not resumed" % name)

    def test_tls13_resumption_brings_a_new_ticket(self):
        """A TLS 1.3 client uses a ticket once: after resuming it needs a new
        one, or its next connection is a full handshake (with key files and
        with the random key)."""
        for keys in (True, False):
            with self.subTest(key_files=keys):
                p = self.postern(start=False)
                g = {"ticket_keys": key_file(os.path.join(p.dir, "k"), 4)} if keys else {}
                p.write_config([("imaps", svc("imap"))], g)
                p.start()
                sess = os.path.join(p.dir, "sess")
                base = ["openssl", "s_client", "-tls1_3", "-connect", "127.0.0.1:%d" % p.port(),
                        "-servername", "localhost", "-ign_eof"]
                first = run(base + ["-sess_out", sess], input=b"a LOGOUT\r\n", timeout=20)
                self.assertIn(b"New Session Ticket", first.stdout)
                again = run(base + ["-sess_in", sess], input=b"a LOGOUT\r\n", timeout=20)
                self.assertIn(b"Reused, TLSv1.3", again.stdout)
                self.assertIn(b"New Session Ticket", again.stdout,
                              "no new ticket after a TLS 1.3 resumption")

    def test_fleet_shares_keys(self):
        """A ticket from one instance resumes on another with the same files,
        and not on one with other keys."""
        a = self.postern(start=False)
        k1 = key_file(os.path.join(a.dir, "k1"), 1)
        other = key_file(os.path.join(a.dir, "other"), 9)
        a.write_config([("imaps", svc("imap"))], {"ticket_keys": k1})
        a.start()
        b = self.postern([("imaps", svc("imap"))], {"ticket_keys": k1})
        c = self.postern([("imaps", svc("imap"))], {"ticket_keys": other})
        for name, version in VERSIONS:
            with self.subTest(version=name):
                sess, _ = handshake(a.port(), version)
                _, reused = handshake(b.port(), version, sess)
                self.assertTrue(reused, "%s ticket of instance A not resumed on B" % name)
                _, reused = handshake(c.port(), version, sess)
                self.assertFalse(reused, "%s ticket resumed under another key" % name)

    def test_random_key_survives_reload(self):
        p = self.postern([("imaps", svc("imap"))])
        sessions = {name: handshake(p.port(), v)[0] for name, v in VERSIONS}
        p.signal(signal.SIGHUP)
        p.wait_for(who="postern", contains="configuration reloaded")
        for name, version in VERSIONS:
            with self.subTest(version=name):
                _, reused = handshake(p.port(), version, sessions[name])
                self.assertTrue(reused, "%s session lost by SIGHUP" % name)

    def test_rotation_by_file_order(self):
        """[k1] issues; [k2 k1] still resumes k1's tickets; [k2] does not."""
        p = self.postern(start=False)
        k1 = key_file(os.path.join(p.dir, "k1"), 1)
        k2 = key_file(os.path.join(p.dir, "k2"), 2)
        p.write_config([("imaps", svc("imap"))], {"ticket_keys": k1})
        p.start()
        port = p.port()
        old = {name: handshake(port, v)[0] for name, v in VERSIONS}

        def reload(keys):
            n = len(p.find(who="postern", contains="configuration reloaded"))
            p.write_config([("imaps", svc("imap", port=port))], {"ticket_keys": keys})
            p.signal(signal.SIGHUP)
            p.wait_for(who="postern", contains="configuration reloaded", count=n + 1)

        reload("%s %s" % (k2, k1))
        for name, version in VERSIONS:
            with self.subTest(version=name, keys="k2 k1"):
                _, reused = handshake(port, version, old[name])
                self.assertTrue(reused, "%s ticket of the older key not resumed" % name)
        reload(k2)
        for name, version in VERSIONS:
            with self.subTest(version=name, keys="k2"):
                _, reused = handshake(port, version, old[name])
                self.assertFalse(reused, "%s ticket of a removed key resumed" % name)

    def test_bad_key_files(self):
        p = self.postern(start=False)
        short = os.path.join(p.dir, "short")
        with open(short, "wb") as f:
            f.write(b"x" * 79)
        good = key_file(os.path.join(p.dir, "good"), 3)
        text = (
            "[global]\n"
            "ticket_keys = %s\n"          # 2
            "ticket_keys = %s\n"          # 3
            "[imaps]\nprotocol = imap\nlisten = 127.0.0.1:1\ntls = off\nbackend = 127.0.0.1:2\n"
        )
        for keys, line, want in (((good, short), 3, "exactly 80 bytes"),
                                 (("/nonexistent/key", good), 2, "cannot read /nonexistent/key")):
            with self.subTest(keys=keys):
                p.write_config(config_text=text % keys)
                r = run([POSTERN, "-t", "-c", p.conf], timeout=10)
                err = r.stderr.decode()
                self.assertEqual(r.returncode, 1, err)
                self.assertRegex(err, r"(?m)^%s:%d: ticket_keys: .*%s" % (re.escape(p.conf), line,
                                                                          re.escape(want)))
