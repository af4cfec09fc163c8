"""Hosting many domains on one service: 2 000 certificates in a cert_dir,
SNI that picks each name's own certificate (exact names, wildcards of one
label, exact before wildcard), the first pair for no or an unknown name
(or the unrecognized_name alert with strict_sni), an RSA and an ECDSA pair
with the same names but other subjects each served to the client that can
use it, reload of one changed file, broken files named, expiry warnings
and metrics. Real clients: openssl s_client and Python's ssl."""
import hashlib
import os
import random
import re
import signal
import ssl
import socket
import time

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from harness import PosternTestCase, cert_fingerprint, env, free_port, imap_cmd, imap_login, run, svc
from sni_pki import Pki, key_pem, write
from test_observability import scrape

N = 2000


def hosted(i):
    return "mail.customer%04d.example.test" % i


def served(port, sni, version=None):
    """The SHA-256 of the leaf postern shows a Python client sending SNI."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version:
        ctx.minimum_version = ctx.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()


def s_client(port, sni, *extra):
    """openssl s_client's run: (return code, output, SHA-256 of the leaf or None)."""
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port]
    if sni is not None:
        cmd += ["-servername", sni]
    else:
        cmd += ["-noservername"]
    r = run(cmd + list(extra), input=b"", timeout=20)
    out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    fp = None
    if m:
        fp = hashlib.sha256(ssl.PEM_cert_to_DER_cert(m.group(0))).hexdigest()
    return r.returncode, out, fp


class SniHosting(PosternTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pki = Pki()
        cls.dir = os.path.join(env().tmp, "sni-hosting-certs")
        os.makedirs(cls.dir, exist_ok=True)
        cls.fp = {}
        t0 = time.monotonic()
        for i in range(N):
            chain, key, fp = cls.pki.leaf([hosted(i)])
            base = os.path.join(cls.dir, "c%04d" % i)
            if i % 2:  # NAME.pem with NAME.key beside it
                write(base + ".pem", chain)
                write(base + ".key", key)
            else:  # combined, HAProxy's format
                write(base + ".pem", chain + key)
            cls.fp[hosted(i)] = fp
        for tag, names in (("wild", ["*.wild.example.test"]), ("exact", ["exact.wild.example.test"])):
            chain, key, fp = cls.pki.leaf(names)
            write(os.path.join(cls.dir, "w-%s.pem" % tag), chain + key)
            cls.fp[tag] = fp
        cls.generated_in = time.monotonic() - t0

    def hosting(self, global_=None, **kw):
        e = env()
        s = svc("imap", cert=e.cert, key=e.key, cert_dir=self.dir, **kw)
        return self.postern([("imaps", s)], global_)

    def default_fp(self):
        return cert_fingerprint(env().cert)

    def test_2000_certificates_each_name_gets_its_own(self):
        self.assertLess(self.generated_in, 60, "generating the certificates took too long")
        p = self.hosting()
        port = p.port()
        for i in (0, N - 1, random.randrange(N)):
            self.assertEqual(served(port, hosted(i)), self.fp[hosted(i)], hosted(i))
            rc, out, fp = s_client(port, hosted(i).upper())
            self.assertEqual(fp, self.fp[hosted(i)], out[-2000:])

    def test_wildcard_serves_one_label_and_exact_beats_it(self):
        p = self.hosting()
        port = p.port()
        self.assertEqual(served(port, "x.wild.example.test"), self.fp["wild"])
        self.assertEqual(served(port, "exact.wild.example.test"), self.fp["exact"])
        self.assertEqual(served(port, "a.b.wild.example.test"), self.default_fp())
        self.assertEqual(served(port, "wild.example.test"), self.default_fp())

    def test_unknown_name_and_no_sni_get_the_first_pair(self):
        p = self.hosting()
        port = p.port()
        self.assertEqual(served(port, "unknown.example.test"), self.default_fp())
        rc, out, fp = s_client(port, None)
        self.assertEqual(fp, self.default_fp(), out[-2000:])
        # a session on it works end to end
        s = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        s.check_hostname, s.verify_mode = False, ssl.CERT_NONE
        c = s.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=hosted(7))
        imap_cmd(imap_login(c), "z", "LOGOUT")
        c.close()

    def test_strict_sni_refuses_unknown_name_with_unrecognized_name(self):
        """Checklist T4: no certificate for a client that names none of it."""
        mport = free_port()
        p = self.hosting({"metrics": "127.0.0.1:%d" % mport}, strict_sni="yes")
        port = p.port()
        rc, out, fp = s_client(port, "unknown.example.test")
        self.assertIsNone(fp, out[-2000:])
        self.assertRegex(out, r"unrecognized name|alert number 112")
        with self.assertRaises(ssl.SSLError) as cm:
            served(port, None)
        self.assertIn("UNRECOGNIZED_NAME", str(cm.exception))
        self.assertEqual(served(port, hosted(3)), self.fp[hosted(3)])
        p.wait_for(contains="TLS handshake refused (strict_sni): no certificate for unknown.example.test")
        p.wait_for(contains="TLS handshake refused (strict_sni): no server name sent")
        m = scrape(mport)
        self.assertEqual(m.get("postern_refused_total", service="imaps", reason="unknown_server_name"), 2)
        self.assertEqual(m.get("postern_certificates", service="imaps"), N + 3)


    def dual_pairs(self, where):
        """An RSA and an ECDSA pair for the same names, other subjects:
        [(cert, key, fingerprint)] RSA first."""
        out = []
        for tag, key in (("rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
                         ("ecdsa", ec.generate_private_key(ec.SECP256R1()))):
            chain, kp, fp = self.pki.leaf(["dual.example.test", "dual2.example.test"], cn="%s subject" % tag,
                                          key=key)
            cert, keyf = os.path.join(where, tag + ".pem"), os.path.join(where, tag + ".key")
            write(cert, chain)
            write(keyf, kp)
            out.append((cert, keyf, fp))
        return out

    def test_rsa_and_ecdsa_with_same_names_and_other_subjects_each_served(self):
        e = env()
        p = self.postern(start=False)
        (rc_, rk, rfp), (ec_, ek, efp) = self.dual_pairs(p.dir)
        p.write_config([("imaps", svc("imap", cert=[e.cert, rc_, ec_], key=[e.key, rk, ek]))])
        p.start()
        port = p.port()
        for version in ("-tls1_2", "-tls1_3"):
            for sni in ("dual.example.test", "DUAL2.example.test."):
                rc, out, fp = s_client(port, sni, version, "-sigalgs", "ECDSA+SHA256")
                self.assertEqual(fp, efp, "%s %s: not the ECDSA certificate\n%s" % (version, sni, out[-2000:]))
                rc, out, fp = s_client(port, sni, version, "-sigalgs", "RSA-PSS+SHA256:RSA+SHA256")
                self.assertEqual(fp, rfp, "%s %s: not the RSA certificate\n%s" % (version, sni, out[-2000:]))
        # the pair as the default (no SNI, an unknown name): both served too
        p.stop()
        p.write_config([("imaps", svc("imap", cert=[rc_, ec_], key=[rk, ek]))])
        p.start()
        port = p.port()
        for version in ("-tls1_2", "-tls1_3"):
            for sni in (None, "unknown.example.test"):
                rc, out, fp = s_client(port, sni, version, "-sigalgs", "ECDSA+SHA256")
                self.assertEqual(fp, efp, "%s %s: not the ECDSA certificate\n%s" % (version, sni, out[-2000:]))
                rc, out, fp = s_client(port, sni, version, "-sigalgs", "RSA-PSS+SHA256:RSA+SHA256")
                self.assertEqual(fp, rfp, "%s %s: not the RSA certificate\n%s" % (version, sni, out[-2000:]))

    def test_reload_serves_the_replaced_file_and_an_old_session_keeps_working(self):
        e = env()
        p = self.postern(start=False)
        d = os.path.join(p.dir, "certs")
        os.mkdir(d)
        fps = {}
        for i in range(3):
            chain, key, fps[i] = self.pki.leaf([hosted(i)])
            write(os.path.join(d, "c%d.pem" % i), chain + key)
        p.write_config([("imaps", svc("imap", cert=e.cert, key=e.key, cert_dir=d))])
        p.start()
        port = p.port()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        old = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=hosted(1))
        self.assertEqual(hashlib.sha256(old.getpeercert(binary_form=True)).hexdigest(), fps[1])
        r = imap_login(old)
        chain, key, new_fp = self.pki.leaf([hosted(1)], key=ec.generate_private_key(ec.SECP256R1()))
        write(os.path.join(d, "c1.pem"), chain + key)
        p.signal(signal.SIGHUP)
        p.wait_for(contains="configuration reloaded")
        self.assertEqual(served(port, hosted(1)), new_fp)
        self.assertEqual(served(port, hosted(2)), fps[2])
        self.assertEqual(hashlib.sha256(old.getpeercert(binary_form=True)).hexdigest(), fps[1])
        imap_cmd(r, "n", "NOOP")  # raises unless OK
        # a reload that fails (the directory is gone) changes nothing
        os.rename(d, d + ".gone")
        p.signal(signal.SIGHUP)
        p.wait_for(level="error", contains="reload refused")
        self.assertEqual(served(port, hosted(1)), new_fp)
        self.assertEqual(served(port, hosted(2)), fps[2])
        imap_cmd(r, "z", "LOGOUT")
        old.close()

    def broken_dir(self, where):
        """A directory with two good pairs and three broken files."""
        d = os.path.join(where, "certs")
        os.mkdir(d)
        fps = []
        for i in range(2):
            chain, key, fp = self.pki.leaf([hosted(i)])
            write(os.path.join(d, "good%d.pem" % i), chain + key)
            fps.append(fp)
        chain, key, _ = self.pki.leaf(["mismatch.example.test"])
        write(os.path.join(d, "mismatch.pem"), chain)
        write(os.path.join(d, "mismatch.key"), key_pem(ec.generate_private_key(ec.SECP256R1())))
        chain, key, _ = self.pki.leaf(["expired.example.test"], expired_days=3)
        write(os.path.join(d, "expired.pem"), chain + key)
        write(os.path.join(d, "garbage.pem"), b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        return d, fps

    def test_broken_files_are_named_fail_check_and_are_skipped_at_start(self):
        e = env()
        p = self.postern(start=False)
        d, fps = self.broken_dir(p.dir)
        p.write_config([("imaps", svc("imap", cert=e.cert, key=e.key, cert_dir=d))])
        r = run([os.environ["POSTERN"], "-t", "-c", "postern.ini"], timeout=20, cwd=p.dir)
        err = r.stderr.decode()
        self.assertEqual(r.returncode, 1, err)
        for f, why in (("mismatch.key", "does not match"), ("expired.pem", "expired on"),
                       ("garbage.pem", "no certificate")):
            self.assertRegex(err, re.escape(os.path.join(d, f)) + r": [^\n]*" + why, err)
        p.start()
        port = p.port()
        # at the start, before the log is set up, on stderr (the journal);
        # at a reload, in the log; skipped either way
        for f in ("mismatch.key", "expired.pem", "garbage.pem"):
            self.assertIn(os.path.join(d, f) + ": ", p.stderr())
        p.signal(signal.SIGHUP)
        p.wait_for(contains="configuration reloaded")
        for f in ("mismatch.key", "expired.pem", "garbage.pem"):
            self.assertTrue(p.find(level="error", regex=re.escape(os.path.join(d, f)) + r": .*; skipped"), f)
        self.assertEqual(served(port, hosted(1)), fps[1])
        self.assertEqual(served(port, "mismatch.example.test"), cert_fingerprint(e.cert))

    def test_expiring_certificates_are_warned_and_counted(self):
        e = env()
        mport = free_port()
        p = self.postern(start=False)
        d = os.path.join(p.dir, "certs")
        os.mkdir(d)
        for i, days in enumerate((5, 10, 90)):
            chain, key, _ = self.pki.leaf([hosted(i)], days=days)
            write(os.path.join(d, "c%d.pem" % i), chain + key)
        p.write_config([("imaps", svc("imap", cert=e.cert, key=e.key, cert_dir=d))],
                       {"metrics": "127.0.0.1:%d" % mport})
        p.start()
        warned = [os.path.join(d, "c%d.pem" % i) + ": warning: the certificate for " + hosted(i) + " expires on"
                  for i in (0, 1)]
        count = "imaps: warning: 2 certificates expire within 14 days"
        for text in warned + [count]:  # at the start, on stderr (the journal)
            self.assertIn(text, p.stderr())
        p.signal(signal.SIGHUP)
        p.wait_for(contains="configuration reloaded")
        for text in warned + [count]:  # at a reload, in the log
            p.wait_for(level="warn", contains=text)
        self.assertNotIn(os.path.join(d, "c2.pem"), p.stderr())
        m = scrape(mport)
        self.assertEqual(m.get("postern_certificates", service="imaps"), 4)
        self.assertEqual(m.get("postern_certificates_expiring", service="imaps", within="14d"), 2)
        soonest = m.get("postern_certificate_expiry_soonest_seconds", service="imaps")
        self.assertAlmostEqual(soonest, time.time() + 5 * 86400, delta=3600)
