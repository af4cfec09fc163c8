"""POP3 through postern (tls = implicit -> Dovecot plaintext): curl pop3s://,
poplib.POP3_SSL, the 20 MB message byte for byte."""

import hashlib

import harness

from harness import (
    BIG_MIN,
    BIG_SEQ,
    PASSWORD,
    USER,
    PosternTestCase,
    curl,
    env,
    pop3_retr_raw,
    svc,
    tls_connect,
)


class Pop3(PosternTestCase):
    def start_pop3s(self, **kw):
        p = self.postern([("pop3s", svc("pop3", **kw))])
        return p, p.port("pop3s")

    def test_curl_list_and_retr(self):
        p, port = self.start_pop3s()
        base = ["--resolve", "localhost:%d:127.0.0.1" % port, "--user", "%s:%s" % (USER, PASSWORD)]
        r = curl(base + ["pop3s://localhost:%d/" % port])
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.decode().split()
        self.assertEqual(r.stdout.decode().splitlines()[0].split()[0], "1", r.stdout)
        self.assertEqual(len(r.stdout.decode().splitlines()), 4, r.stdout)
        self.assertGreater(int(r.stdout.decode().splitlines()[2].split()[1]), BIG_MIN, lines)
        r = curl(base + ["pop3s://localhost:%d/1" % port])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"This is the first message.", r.stdout)
        ends = p.wait_for(event="end", service="pop3s", count=2)
        for end in ends:
            self.assertGreater(int(end.fields["out"]), 50, end.raw)
        starts = p.find(event="start", service="pop3s")
        self.assertEqual(len(starts), 2)
        self.assertEqual(starts[0].fields.get("sni"), "localhost")

    def test_poplib(self):
        p, port = self.start_pop3s()
        c = harness.POP3_SSL(port)
        self.assertTrue(c.getwelcome().startswith(b"+OK"))
        c.user(USER)
        c.pass_(PASSWORD)
        count, size = c.stat()
        self.assertEqual(count, 4)
        self.assertGreater(size, BIG_MIN)
        resp, lines, _ = c.list()
        self.assertEqual(len(lines), 4)
        resp, lines, _ = c.retr(2)
        self.assertTrue(resp.startswith(b"+OK"))
        self.assertIn("Grüße aus Köln".encode(), b"\n".join(lines))
        resp, lines, _ = c.uidl()
        self.assertEqual(len(lines), 4)
        local_port = c.sock.getsockname()[1]
        c.quit()
        _, end = self.assertSessionEnd(p, local_port)
        self.assertIn(end.fields["reason"], ("client-closed", "backend-closed"), end.raw)

    def test_big_message_sha256(self):
        sha, size = env().direct_big("pop3")
        self.assertGreater(size, BIG_MIN)
        p, port = self.start_pop3s()
        s = tls_connect(port)
        local_port = s.getsockname()[1]
        data = pop3_retr_raw(s, BIG_SEQ)
        s.close()
        self.assertEqual(len(data), size)
        self.assertEqual(hashlib.sha256(data).hexdigest(), sha)
        _, end = self.assertSessionEnd(p, local_port)
        self.assertGreaterEqual(int(end.fields["out"]), size, end.raw)
