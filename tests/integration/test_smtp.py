"""SMTP through postern (tls = implicit -> aiosmtpd plaintext): curl
smtps://, smtplib.SMTP_SSL; the SMTP server receives the mail intact."""

import os
import time

import harness

from harness import PosternTestCase, curl, svc, wait_delivery


class Smtp(PosternTestCase):
    def start_smtps(self, **kw):
        p = self.postern([("smtps", svc("smtp", **kw))])
        return p, p.port("smtps")

    def test_curl_send(self):
        p, port = self.start_smtps()
        marker = b"curl-smtps-%d" % time.monotonic_ns()
        msg = os.path.join(p.dir, "mail.txt")
        with open(msg, "wb") as f:
            f.write(b"From: a@example.test\r\nTo: b@example.test\r\nSubject: via curl\r\n\r\n" + marker + b"\r\n")
        r = curl(["--resolve", "localhost:%d:127.0.0.1" % port, "smtps://localhost:%d" % port,
                  "--mail-from", "a@example.test", "--mail-rcpt", "b@example.test", "-T", msg])
        self.assertEqual(r.returncode, 0, r.stderr)
        meta, content = wait_delivery(marker)
        self.assertEqual(meta["mail_from"], "a@example.test")
        self.assertEqual(meta["rcpt_tos"], ["b@example.test"])
        self.assertIn(b"Subject: via curl", content)
        end = p.wait_for(event="end", service="smtps")[0]
        self.assertGreater(int(end.fields["in"]), len(marker), end.raw)
        st = p.find(event="start", service="smtps")[0]
        self.assertEqual(st.fields.get("sni"), "localhost")

    def test_smtplib_send(self):
        p, port = self.start_smtps()
        marker = b"smtplib-%d" % time.monotonic_ns()
        # 8-bit body and a 1 MB attachment-ish body with dot lines
        body = ("Grüße, 日本語\r\n".encode() + b".leading dot line\r\n" + (b"x" * 998 + b"\r\n") * 1000 + marker + b"\r\n")
        msg = b"From: s@example.test\r\nTo: r1@example.test, r2@example.test\r\nSubject: smtplib\r\n" \
              b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body
        c = harness.SMTP_SSL(port)
        code, banner = c.ehlo("client.test")
        self.assertEqual(code, 250)
        local_port = c.sock.getsockname()[1]
        refused = c.sendmail("s@example.test", ["r1@example.test", "r2@example.test"], msg)
        self.assertEqual(refused, {})
        c.quit()
        meta, content = wait_delivery(marker)
        self.assertEqual(meta["rcpt_tos"], ["r1@example.test", "r2@example.test"])
        self.assertEqual(content, msg)
        _, end = self.assertSessionEnd(p, local_port)
        self.assertGreater(int(end.fields["in"]), len(msg), end.raw)
