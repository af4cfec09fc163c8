"""postern under valgrind's memcheck: an IMAP, a POP3 (STARTTLS) and an
SMTP session through it, a reload, and a clean stop leave no invalid read
or write, no use of uninitialised memory and no block definitely lost.

The ASan pass of make check runs a sanitized binary, which valgrind cannot
run: there ASan's and LeakSanitizer's own checks (every test) cover this."""
import poplib
import signal
import unittest

import harness
from harness import ASAN, PASSWORD, USER, Memcheck, PosternTestCase, shut_down_after, svc, wait_delivery


@unittest.skipIf(ASAN, "a sanitized binary: its own checks replace valgrind's in this pass")
class UnderMemcheck(PosternTestCase):
    def test_sessions_reload_and_stop_are_clean(self):
        p = self.postern([("imaps", svc("imap")), ("pop3", svc("pop3", tls="starttls")),
                          ("smtps", svc("smtp"))], start=False)
        memcheck = Memcheck(p)
        p.start(timeout=90.0, wrap=memcheck.wrap)

        with shut_down_after(harness.IMAP4_SSL(p.port("imaps"), timeout=60.0)) as c:
            c.login(USER, PASSWORD)
            c.select("INBOX")
            typ, data = c.fetch("1", "(BODY[HEADER.FIELDS (SUBJECT)])")
            self.assertEqual(typ, "OK")
            c.logout()
        p.signal(signal.SIGHUP)
        p.wait_for(contains="configuration reloaded", timeout=60.0)
        pop = poplib.POP3("localhost", p.port("pop3"), timeout=60.0)  # the name TLS checks
        with shut_down_after(pop) as c:
            c.stls(context=harness.client_context())
            c.user(USER)
            c.pass_(PASSWORD)
            self.assertGreater(c.stat()[0], 0)
            c.quit()
        with harness.SMTP_SSL(p.port("smtps"), timeout=60.0) as c:
            c.sendmail("a@client.test", ["b@example.test"],
                       "Subject: memcheck\r\n\r\nvalgrind-marker\r\n")
        wait_delivery(b"valgrind-marker")

        p.signal(signal.SIGTERM)
        memcheck.assertClean(self, p.wait_exit(90.0))


if __name__ == "__main__":
    unittest.main()
