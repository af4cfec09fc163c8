"""backend_auth = oauth2, end to end: legacy clients (imaplib, poplib,
smtplib, curl) log in to postern with a user name and a local password;
postern decrypts the account's refresh token, gets an access token from
the fake provider (tests/servers/fake_oauth2.py) and logs in to a real
Dovecot whose only passdb is OAuth 2.0 (driver = oauth2, introspection at
the fake) with AUTHENTICATE XOAUTH2 or OAUTHBEARER (IMAP) or AUTH XOAUTH2
(POP3), or to aiosmtpd accepting only XOAUTH2 tokens the fake issued. Cases: the first login
refreshes and the next one uses the cache; a wrong password fails locally
(the provider sees no request); a revoked refresh token; a slow provider
while another session is served; a provider down; the server refusing the
token (its error challenge answered); no token or password in any log or
transcript."""

import imaplib
import poplib
import os
import re
import shutil
import signal
import smtplib
import socket
import tempfile
import threading
import time
import unittest

import clientmode_util
import harness
from harness import PosternTestCase, Reader, curl, env, free_port, plain_connect
from fake_oauth2 import FakeOAuth2
from oauth2_util import OAuth2Dovecot, XOAuth2Smtp, authorize, files_text, secrets_of

USER = "alice"  # Dovecot's user and the provider account
PASSWORD = "local pw of alice"  # the local password, spaces included
REVOKED_USER = "bob"
REVOKED_PASSWORD = "local-pw-of-bob"
PAUSE = 1.1  # after a wrong password, an account's token file stays shut 1 s


class OAuth2Login(PosternTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        e = env()
        cls.dir = tempfile.mkdtemp(prefix="oauth2-login-", dir=e.tmp)
        os.chmod(cls.dir, 0o755)
        cls.tokens = os.path.join(cls.dir, "tokens")
        cls.fake = FakeOAuth2(e.cert, e.key, account=USER).start()
        cert, key = clientmode_util.pki().pair("good")
        cls.dovecot = OAuth2Dovecot(os.path.join(cls.dir, "dovecot"), cert, key, cls.fake)
        try:
            cls.dovecot.prepare()
            cls.dovecot.start()
            cls.smtpd = XOAuth2Smtp(cls.fake, cert, key).start()
            conf = harness.Postern(cls.services(), name="oauth2-authorize").conf
            authorize(conf, "fake", USER, PASSWORD, cls.fake)
            authorize(conf, "fake", REVOKED_USER, REVOKED_PASSWORD, cls.fake)
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "smtpd", None):
            cls.smtpd.stop()
        cls.dovecot.stop()
        cls.fake.stop()
        shutil.rmtree(cls.dir, True)

    @classmethod
    def services(cls, token_url=None, mech="xoauth2", capture=None, timeout="5s", starttls=False):
        def service(protocol, port):
            return {"protocol": protocol, "listen": "127.0.0.1:%d" % free_port(), "tls": "off",
                    "backend": "127.0.0.1:%d" % port, "backend_tls": "starttls" if starttls else "implicit",
                    "backend_ca": clientmode_util.pki().ca, "backend_sni": "localhost",
                    "backend_auth": "oauth2:fake", "log_commands": "yes", "capture_dir": capture}
        provider = {"provider": "generic", "device_authorization_url": cls.fake.url + "/device",
                    "authorization_url": cls.fake.url + "/authorize",
                    "token_url": token_url or cls.fake.url + "/token", "scope": "mail offline_access",
                    "client_id": "postern-test", "token_dir": cls.tokens, "ca": env().ca,
                    "timeout": timeout, "sasl_mechanism": mech}
        ports = cls.dovecot.ports
        return [("legacy", service("imap", ports["imap" if starttls else "imaps"])),
                ("legacy-pop3", service("pop3", ports["pop3" if starttls else "pop3s"])),
                ("legacy-smtp", service("smtp", cls.smtpd.port if hasattr(cls, "smtpd") else free_port())),
                ("oauth2:fake", provider)]

    def setUp(self):
        super().setUp()
        with self.fake.lock:
            self.fake.requests.clear()
        self.fake.delay = 0.0
        self.fake.fail_next = []
        self.fake.expires_in = 3600
        self.capture = tempfile.mkdtemp(prefix="capture-", dir=self.dir)
        os.chmod(self.capture, 0o777)

    def start(self, **kw):
        self.mport = free_port()
        self.p = self.postern(self.services(capture=self.capture, **kw),
                              global_={"metrics": "127.0.0.1:%d" % self.mport})
        return self.p

    def token_metric(self, result, service="legacy", name="postern_oauth2_token_requests_total"):
        """The counter NAME (by default the token requests) of the service
        for result."""
        r = curl(["-s", "--max-time", "5", "http://127.0.0.1:%d/metrics" % self.mport])
        m = re.search(rb'^%s\{service="%s",result="%s"\} (\d+)$'
                      % (name.encode(), service.encode(), result.encode()), r.stdout, re.M)
        self.assertIsNotNone(m, r.stdout[-2000:])
        return int(m.group(1))

    def refreshes(self):
        return self.fake.token_requests().count("refresh_token")

    def imap(self):
        return imaplib.IMAP4("127.0.0.1", self.p.port("legacy"), timeout=15)

    def reauthorize(self):
        """alice authorized again with her usual password (for the cases
        that change or remove her token file)."""
        conf = harness.Postern(self.services(), name="oauth2-authorize").conf
        authorize(conf, "fake", USER, PASSWORD, self.fake)

    def login_during_token_request(self, meanwhile):
        """alice logs in with her password while the provider takes its
        time; MEANWHILE runs once the token request is in flight. Returns
        the login's outcome (its status or error text)."""
        self.fake.delay = 3.0
        result = []

        def login():
            m = self.imap()
            try:
                result.append(m.login(USER, PASSWORD)[0])
            except imaplib.IMAP4.error as e:
                result.append(str(e))
            m.logout()

        t = threading.Thread(target=login)
        t.start()
        harness.wait_until(lambda: self.fake.token_requests(), timeout=5, msg="the token request")
        self.fake.delay = 0.0
        meanwhile()
        t.join(15)
        self.assertFalse(t.is_alive())
        return result[0]

    def assertNoSecrets(self):
        """Nothing in postern's log or the transcripts is a token, a SASL
        message or a password."""
        text = self.p.stderr() + files_text(self.capture)
        self.assertIn(" ***", text)  # the scan reads where credentials were hidden
        for s in secrets_of(self.fake, [USER, REVOKED_USER], [PASSWORD, REVOKED_PASSWORD]):
            self.assertNotIn(s, text)

    # ------------------------------------------------------------ cases

    def test_first_login_refreshes_next_uses_cache_and_mail_is_read(self):
        self.start()
        m = self.imap()
        self.assertNotIn("LOGINDISABLED", m.capabilities)
        self.assertIn("AUTH=PLAIN", m.capabilities)
        self.assertFalse([c for c in m.capabilities if c.startswith("AUTH=") and c != "AUTH=PLAIN"],
                         m.capabilities)
        typ, data = m.login(USER, PASSWORD)
        self.assertEqual(typ, "OK", data)
        typ, data = m.select("INBOX")
        self.assertEqual(typ, "OK", data)
        self.assertEqual(int(data[0]), 3)
        m.logout()
        self.assertEqual(self.refreshes(), 1)
        # the second login, with AUTHENTICATE PLAIN (no initial response)
        m = self.imap()
        typ, _ = m.authenticate("PLAIN", lambda _: b"\0%s\0%s" % (USER.encode(), PASSWORD.encode()))
        self.assertEqual(typ, "OK")
        m.logout()
        # the third, with curl (AUTHENTICATE PLAIN with an initial response)
        r = curl(["-sS", "--max-time", "15", "--url", "imap://127.0.0.1:%d/INBOX" % self.p.port("legacy"),
                  "--user", "%s:%s" % (USER, PASSWORD), "-X", "EXAMINE INBOX"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"3 EXISTS", r.stdout)
        self.assertEqual(self.refreshes(), 1, "the cached access token is used")
        self.assertEqual(self.token_metric("ok"), 1)
        self.p.wait_for(contains="auth user=alice result=ok", count=3)
        self.assertNoSecrets()

    @unittest.skipIf(harness.ASAN, "a sanitized binary: its own checks replace valgrind's in this pass")
    def test_logins_under_memcheck(self):
        """The whole course under valgrind: a wrong password, the first login
        (scrypt, the token request), a cached one, and the stop leave no
        invalid access and no block definitely lost."""
        p = self.p = self.postern(self.services(capture=self.capture), start=False)
        memcheck = harness.Memcheck(p)
        p.start(timeout=90.0, wrap=memcheck.wrap)
        m = imaplib.IMAP4("127.0.0.1", p.port("legacy"), timeout=90)
        with self.assertRaises(imaplib.IMAP4.error):
            m.login(USER, "not the local password")
        m.logout()
        time.sleep(PAUSE)  # the wrong password's pause is not what is under test
        for _ in range(2):
            m = imaplib.IMAP4("127.0.0.1", p.port("legacy"), timeout=90)
            self.assertEqual(m.login(USER, PASSWORD)[0], "OK")
            self.assertEqual(m.select("INBOX")[0], "OK")
            m.logout()
        self.assertEqual(self.refreshes(), 1)
        p.signal(signal.SIGTERM)
        memcheck.assertClean(self, p.wait_exit(90.0))

    def test_process_holding_tokens_cannot_dump_core(self):
        """Run by an unprivileged user (as by a user's own systemd unit),
        the process that holds the tokens is not dumpable: no core file,
        and no other process of that user may read its memory (the kernel
        then gives its /proc files to root)."""
        run = tempfile.mkdtemp(prefix="run-", dir=self.dir)
        os.chown(run, 65534, 65534)  # its pidfile
        p = self.postern(self.services(), {"pidfile": os.path.join(run, "postern.pid")}, start=False)
        p.pidfile = os.path.join(run, "postern.pid")
        os.chmod(p.conf, 0o644)
        p.start(wrap=lambda argv: ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                   *argv])
        with open("/proc/%d/status" % p.pid) as f:
            uid = re.search(r"(?m)^Uid:\s+(\d+)", f.read()).group(1)
        self.assertEqual(uid, "65534", "postern runs as nobody")
        self.assertEqual(os.stat("/proc/%d/mem" % p.pid).st_uid, 0,
                         "the process holding tokens stays dumpable")

    def test_expired_token_refreshed_and_rotated_token_stored(self):
        path = os.path.join(self.tokens, USER)
        with open(path, "rb") as f:
            before = f.read()
        self.fake.expires_in = 1  # renewed halfway through such a short life
        p = self.start()
        m = self.imap()
        m.login(USER, PASSWORD)
        m.logout()
        with open(path, "rb") as f:
            rotated = f.read()
        self.assertNotEqual(rotated, before, "the rotated refresh token is stored")
        time.sleep(1.0)  # the access token's life is what is under test
        m = self.imap()
        m.login(USER, PASSWORD)
        m.logout()
        self.assertEqual(self.refreshes(), 2)
        p.stop()
        # a new process has no cache: the stored (rotated) token still works,
        # while the fake forgot every refresh token it rotated away
        self.fake.expires_in = 3600
        self.start()
        m = self.imap()
        self.assertEqual(m.login(USER, PASSWORD)[0], "OK")
        m.logout()
        self.assertEqual(self.refreshes(), 3)
        self.assertNoSecrets()

    def test_commands_pipelined_after_login_wait_for_it(self):
        p = self.start()
        s = plain_connect(p.port("legacy"))
        r = Reader(s)
        r.readline()
        r.send('a1 LOGIN %s "%s"\r\na2 SELECT INBOX\r\na3 LOGOUT\r\n' % (USER, PASSWORD))
        self.assertRegex(harness.imap_response(r, "a1"), rb"(?m)^a1 OK ")
        resp = harness.imap_response(r, "a2")
        self.assertIn(b"* 3 EXISTS", resp)
        self.assertRegex(resp, rb"(?m)^a2 OK ")
        self.assertRegex(harness.imap_response(r, "a3"), rb"(?m)^a3 OK ")
        s.close()

    def test_reload_starts_with_an_empty_cache(self):
        self.start()
        m = self.imap()
        m.login(USER, PASSWORD)
        m.logout()
        self.p.signal(signal.SIGHUP)
        self.p.wait_for(contains="configuration reloaded")
        m = self.imap()
        self.assertEqual(m.login(USER, PASSWORD)[0], "OK")
        m.logout()
        self.assertEqual(self.refreshes(), 2, "the reloaded configuration knows no token")

    def test_workers_share_the_token_file(self):
        """Each worker process has its own cache; a token one of them
        rotated and stored is read by the others."""
        self.mport = free_port()
        self.p = self.postern(self.services(capture=self.capture),
                              global_={"workers": "2", "metrics": "127.0.0.1:%d" % self.mport})
        for i in range(8):
            m = self.imap()
            self.assertEqual(m.login(USER, PASSWORD)[0], "OK", i)
            m.logout()
        self.assertIn(self.refreshes(), (1, 2))
        self.assertEqual(self.token_metric("refused"), 0)

    def test_reauthorization_during_a_token_request_is_not_undone(self):
        """The administrator authorizes alice again with a new local
        password (the old one leaked) while a login with the old one waits
        for its token request: the provider's rotated refresh token is not
        written over the new file under the old password, and that login
        is told to try again."""
        new_password = "new local pw of alice"
        self.addCleanup(self.reauthorize)
        self.start()
        conf = harness.Postern(self.services(), name="oauth2-authorize").conf
        outcome = self.login_during_token_request(
            lambda: authorize(conf, "fake", USER, new_password, self.fake))
        self.p.stop()
        self.start()  # a new process knows only the file
        m = self.imap()
        try:
            self.assertEqual(m.login(USER, new_password)[0], "OK")
        except imaplib.IMAP4.error as e:
            self.fail("the new password no longer opens the file: %s" % e)
        m.logout()
        self.assertIn("UNAVAILABLE", outcome)

    def test_token_file_removed_during_a_token_request_stays_removed(self):
        """The administrator removes alice's token file while a login
        waits for its token request: the rotated refresh token does not
        bring it back."""
        self.addCleanup(self.reauthorize)
        self.start()
        path = os.path.join(self.tokens, USER)
        outcome = self.login_during_token_request(lambda: os.unlink(path))
        self.assertFalse(os.path.exists(path), "the removed token file was written again")
        self.assertIn("UNAVAILABLE", outcome)
        self.p.wait_for(contains="token file of account alice was replaced or removed meanwhile")
        self.assertEqual(self.token_metric("failed", name="postern_auth_total"), 0)

    def send_password_and_leave(self, delay=2.0):
        """alice's client sends LOGIN and goes away while the provider
        (rotating refresh tokens, answering after DELAY seconds) holds the
        token request postern sent for it. Returns the token file's
        content before."""
        with open(os.path.join(self.tokens, USER), "rb") as f:
            before = f.read()
        # The provider's late answer rotates the refresh token sent, which
        # a process that stopped first never stores: alice authorizes
        # again for the later tests (after the delay is undone).
        self.addCleanup(self.reauthorize)
        self.addCleanup(setattr, self.fake, "delay", 0.0)
        self.fake.delay = delay
        s = plain_connect(self.p.port("legacy"))
        Reader(s).readline()
        s.sendall(b'a1 LOGIN %s "%s"\r\n' % (USER.encode(), PASSWORD.encode()))
        harness.wait_until(lambda: self.fake.token_requests(), timeout=5, msg="the token request")
        s.close()
        return before

    def wait_token_file_changed(self, before):
        def changed():
            with open(os.path.join(self.tokens, USER), "rb") as f:
                return f.read() != before
        harness.wait_until(changed, timeout=8, msg="the rotated refresh token stored")

    def test_rotated_token_of_a_client_gone_before_a_reload_is_stored(self):
        """The client leaves and a reload replaces the configuration while
        the provider answers: the rotating provider has invalidated the
        refresh token sent, so its answer is stored all the same, and a
        login of the new configuration meanwhile waits for that request
        rather than sending the old refresh token again (which the
        provider would refuse as revoked)."""
        self.start()
        before = self.send_password_and_leave()
        self.p.signal(signal.SIGHUP)
        self.p.wait_for(contains="configuration reloaded")
        m = self.imap()
        self.assertEqual(m.login(USER, PASSWORD)[0], "OK")
        m.logout()
        self.assertEqual(self.refreshes(), 1, "the new configuration's login joined the request")
        self.wait_token_file_changed(before)
        self.p.stop()
        self.start()  # a new process knows only the file
        m = self.imap()
        self.assertEqual(m.login(USER, PASSWORD)[0], "OK")
        m.logout()
        self.assertEqual(self.token_metric("refused"), 0)
        self.assertNoSecrets()

    def test_rotated_token_of_a_request_in_flight_at_stop_is_stored(self):
        """The client leaves and postern is told to stop while the
        provider answers: the process stores the rotated refresh token
        before it exits."""
        self.start()
        before = self.send_password_and_leave()
        first = self.p
        first.stop()
        self.wait_token_file_changed(before)
        first.wait_for(contains="rotated refresh token stored")
        self.start()
        m = self.imap()
        self.assertEqual(m.login(USER, PASSWORD)[0], "OK")
        m.logout()
        self.assertNoSecrets()
        for s in secrets_of(self.fake, [USER], [PASSWORD]):
            self.assertNotIn(s, first.stderr())

    def test_stop_waits_for_a_token_request_five_seconds_at_most(self):
        """A provider slower than that: the process exits within five
        seconds of its sessions' end all the same (a master's workers are
        killed ten seconds after shutdown_timeout), and says what may be
        lost."""
        self.start(timeout="30s")
        with open(os.path.join(self.tokens, USER), "rb") as before:
            content = before.read()
        # The provider answers long after the cap: an exit before its
        # answer is the cap's doing, however slow the machine.
        self.send_password_and_leave(delay=40.0)
        t0 = time.monotonic()
        self.p.signal(signal.SIGTERM)
        self.assertEqual(self.p.wait_exit(timeout=30.0), 0)
        self.assertLess(time.monotonic() - t0, 20.0)
        self.p.wait_for(contains="stopping without the answer of 1 token request(s)")
        with open(os.path.join(self.tokens, USER), "rb") as after:
            self.assertEqual(after.read(), content, "nothing half-written")

    def test_second_stop_signal_ends_the_wait_for_a_token_request(self):
        """"Stop now" (a second SIGTERM) is obeyed while the process waits
        for a token request."""
        self.start(timeout="30s")
        self.send_password_and_leave(delay=40.0)
        self.p.signal(signal.SIGTERM)
        self.p.wait_for(contains="shutting down")  # the first one was taken
        t0 = time.monotonic()
        self.p.signal(signal.SIGTERM)
        self.assertEqual(self.p.wait_exit(timeout=30.0), 0)
        # well before the five seconds the first signal alone would wait
        self.assertLess(time.monotonic() - t0, 4.0)
        self.p.wait_for(contains="stopping without the answer of 1 token request(s)")

    def test_login_with_literals(self):
        """Old clients send a password with special characters as a
        literal: a synchronising one from imaplib (its login() always
        quotes, so the literal goes the way its APPEND and AUTHENTICATE
        send theirs: "{N}", "+", the bytes), and LITERAL+ for both the user
        name and the password from a raw socket. The password is never
        logged."""
        special = 'p"a\\ss {8}%'
        self.addCleanup(self.reauthorize)
        conf = harness.Postern(self.services(), name="oauth2-authorize").conf
        authorize(conf, "fake", USER, special, self.fake)
        self.start()
        m = self.imap()
        m.literal = special.encode()
        typ, data = m._simple_command("LOGIN", USER)
        self.assertEqual(typ, "OK", data)
        m.state = "AUTH"
        typ, data = m.select("INBOX")
        self.assertEqual((typ, int(data[0])), ("OK", 3), data)
        m.logout()
        s = plain_connect(self.p.port("legacy"))
        r = Reader(s)
        r.readline()
        r.send(b"b1 LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\nb2 SELECT INBOX\r\nb3 LOGOUT\r\n"
               % (len(USER), USER.encode(), len(special), special.encode()))
        self.assertRegex(harness.imap_response(r, "b1"), rb"(?m)^b1 OK ")
        self.assertIn(b"* 3 EXISTS", harness.imap_response(r, "b2"))
        harness.imap_response(r, "b3")
        s.close()
        self.p.wait_for(contains="auth user=alice result=ok", count=2)
        text = self.p.stderr() + files_text(self.capture)
        self.assertIn("b1 LOGIN {5 bytes} ***", text)
        self.assertNotIn(special, text)
        self.assertNotIn("ss {8}", text)
        self.assertNoSecrets()

    def test_wrong_password_fails_locally(self):
        self.start()
        m = self.imap()
        with self.assertRaises(imaplib.IMAP4.error) as cm:
            m.login(USER, "not the password")
        self.assertIn("AUTHENTICATIONFAILED", str(cm.exception))
        m.logout()
        self.assertEqual(self.fake.requests, [], "nothing was asked of the provider")
        self.p.wait_for(contains="auth user=alice result=failed")
        self.assertEqual(self.token_metric("failed", name="postern_auth_total"), 1)
        # guessing is paused: for a second every attempt, even with the right
        # password, gets a temporary failure, unchecked and not counted as a
        # failed login (fail2ban would ban the owner for a guesser's tries)
        for password in (PASSWORD, "another guess"):
            m = self.imap()
            with self.assertRaises(imaplib.IMAP4.error) as cm:
                m.login(USER, password)
            self.assertIn("[UNAVAILABLE]", str(cm.exception))
        self.assertEqual(self.fake.requests, [])
        self.assertEqual(self.token_metric("failed", name="postern_auth_total"), 1)
        self.assertEqual(len(self.p.find(contains="auth user=alice result=failed")), 1)
        time.sleep(PAUSE)
        # after a good login, a wrong one still fails, from the cache
        m.login(USER, PASSWORD)
        m.logout()
        m = self.imap()
        with self.assertRaises(imaplib.IMAP4.error):
            m.login(USER, PASSWORD + "x")
        m.login(USER, PASSWORD)  # no pause once the password is known
        m.logout()
        self.assertEqual(self.refreshes(), 1)
        self.p.wait_for(contains="auth user=alice result=failed", count=2)
        self.assertEqual(self.token_metric("failed", name="postern_auth_total"), 2)
        self.assertNoSecrets()

    def test_revoked_refresh_token_tells_the_admin(self):
        self.start()
        for t, account in list(self.fake.refresh.items()):
            if account == REVOKED_USER:
                self.fake.revoke(t)
        m = self.imap()
        with self.assertRaises(imaplib.IMAP4.error) as cm:
            m.login(REVOKED_USER, REVOKED_PASSWORD)
        self.assertIn("AUTHENTICATIONFAILED", str(cm.exception))
        m.logout()
        self.assertEqual(self.refreshes(), 1)
        self.assertEqual(self.token_metric("refused"), 1)
        self.p.wait_for(contains="authorize it again with 'postern oauth2-authorize fake bob'")
        self.assertNoSecrets()

    def test_slow_provider_does_not_hold_other_sessions(self):
        self.start()
        self.fake.delay = 3.0
        result = {}

        def slow_login():
            m = self.imap()
            t0 = time.monotonic()
            result["login"] = m.login(USER, PASSWORD)[0]
            result["took"] = time.monotonic() - t0
            m.logout()

        # a client that gives up while the token request runs: its login is
        # forgotten, the others' goes on
        quitter = plain_connect(self.p.port("legacy"))
        r = Reader(quitter)
        r.readline()
        r.send("q1 LOGIN %s \"%s\"\r\n" % (USER, PASSWORD))
        harness.wait_until(lambda: self.fake.token_requests(), timeout=5, msg="the token request")
        t = threading.Thread(target=slow_login)
        t.start()
        quitter.close()
        t0 = time.monotonic()
        other = self.imap()  # served while the token request waits
        other.noop()
        other.logout()
        served = time.monotonic() - t0
        t.join(20)
        self.assertLess(served, 1.5, "another session waited for the provider")
        self.assertEqual(result.get("login"), "OK", result)
        self.assertGreater(result["took"], 1.5)
        self.assertEqual(self.refreshes(), 1, "one token request for both logins")

    def test_provider_down_is_a_temporary_failure(self):
        port = free_port()  # nothing listens there
        self.start(token_url="https://127.0.0.1:%d/token" % port)
        m = self.imap()
        t0 = time.monotonic()
        with self.assertRaises(imaplib.IMAP4.error) as cm:
            m.login(USER, PASSWORD)
        self.assertIn("UNAVAILABLE", str(cm.exception))
        self.assertLess(time.monotonic() - t0, 5)
        m.logout()
        self.p.wait_for(contains="oauth2: token request for account alice failed")

    def test_provider_timeout_is_a_temporary_failure(self):
        self.start(timeout="1s")
        self.fake.delay = 2.5
        self.fake.fail_next = [503]  # its late answer must not rotate alice's token away
        m = self.imap()
        t0 = time.monotonic()
        with self.assertRaises(imaplib.IMAP4.error) as cm:
            m.login(USER, PASSWORD)
        self.assertIn("UNAVAILABLE", str(cm.exception))
        self.assertLess(time.monotonic() - t0, 2.4, "the section's timeout ends the wait")
        m.logout()
        self.assertEqual(self.token_metric("temporary"), 1)

    def test_provider_error_is_a_temporary_failure(self):
        self.start()
        self.fake.fail_next = [503]
        m = self.imap()
        with self.assertRaises(imaplib.IMAP4.error) as cm:
            m.login(USER, PASSWORD)
        self.assertIn("UNAVAILABLE", str(cm.exception))
        m.logout()
        self.assertEqual(self.token_metric("temporary"), 1)
        self.assertEqual(self.token_metric("ok"), 0)

    def test_server_refusing_the_token_gets_its_challenge_answered(self):
        for mech in ("xoauth2", "oauthbearer"):
            with self.subTest(mech=mech):
                p = self.start(mech=mech)
                m = self.imap()
                m.login(USER, PASSWORD)
                m.logout()
                with self.fake.lock:  # the cached access token no longer works
                    self.fake.access.clear()
                s = plain_connect(p.port("legacy"))
                r = Reader(s)
                r.readline()
                r.send("a1 LOGIN %s \"%s\"\r\n" % (USER, PASSWORD))
                resp = harness.imap_response(r, "a1")
                self.assertRegex(resp, rb"(?m)^a1 NO ")
                self.assertNotIn(b"+ ", resp, "the challenge is postern's to answer")
                r.send("a2 NOOP\r\n")  # the session goes on
                self.assertRegex(harness.imap_response(r, "a2"), rb"(?m)^a2 OK")
                s.close()
                p.wait_for(contains="auth user=alice result=failed")
                self.assertNoSecrets()
                p.stop()

    def test_backend_starttls(self):
        """The same logins when postern reaches Dovecot with STARTTLS/STLS."""
        self.start(starttls=True)
        m = self.imap()
        self.assertIn("AUTH=PLAIN", m.capabilities)
        self.assertNotIn("LOGINDISABLED", m.capabilities)
        self.assertEqual(m.login(USER, PASSWORD)[0], "OK")
        self.assertEqual(m.select("INBOX")[0], "OK")
        m.logout()
        m = self.pop3()
        m.user(USER)
        self.assertTrue(m.pass_(PASSWORD).startswith(b"+OK"))
        self.assertEqual(m.stat()[0], 3)
        m.quit()
        self.assertEqual(self.refreshes(), 1)
        self.assertNoSecrets()

    # ------------------------------------------------------------ POP3

    def pop3(self):
        return poplib.POP3("127.0.0.1", self.p.port("legacy-pop3"), timeout=15)

    def test_pop3_user_pass_and_auth_plain(self):
        self.start()
        m = self.pop3()
        caps = m.capa()
        self.assertEqual(caps.get("SASL"), ["PLAIN"], caps)
        self.assertIn("USER", caps)
        m.user(USER)
        self.assertTrue(m.pass_(PASSWORD).startswith(b"+OK"))
        self.assertEqual(m.stat()[0], 3)
        m.quit()
        # curl logs in with AUTH PLAIN and an initial response, from the cache
        r = curl(["-sS", "--max-time", "15", "--url", "pop3://127.0.0.1:%d/1" % self.p.port("legacy-pop3"),
                  "--user", "%s:%s" % (USER, PASSWORD)])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"client mode 1", r.stdout)
        self.assertEqual(self.refreshes(), 1)
        self.assertEqual(self.token_metric("ok", "legacy-pop3"), 1)
        self.p.wait_for(contains="auth user=alice result=ok", count=2)
        self.assertNoSecrets()

    def test_pop3_wrong_password_and_provider_failure(self):
        self.start()
        m = self.pop3()
        m.user(USER)
        with self.assertRaises(poplib.error_proto) as cm:
            m.pass_("wrong")
        self.assertIn(b"-ERR [AUTH]", cm.exception.args[0])
        self.assertEqual(self.fake.requests, [])
        with self.assertRaises(poplib.error_proto) as cm:  # the pause: not checked
            m.pass_(PASSWORD)
        self.assertIn(b"-ERR [SYS/TEMP]", cm.exception.args[0])
        time.sleep(PAUSE)
        self.fake.fail_next = [503]
        with self.assertRaises(poplib.error_proto) as cm:
            m.pass_(PASSWORD)
        self.assertIn(b"-ERR [SYS/TEMP]", cm.exception.args[0])
        self.assertTrue(m.pass_(PASSWORD).startswith(b"+OK"))  # the provider is back
        m.quit()
        self.p.wait_for(contains="auth user=alice result=failed")

    # ------------------------------------------------------------ SMTP

    def smtp(self):
        return smtplib.SMTP("127.0.0.1", self.p.port("legacy-smtp"), timeout=15)

    def test_smtp_auth_plain_and_login_send_mail(self):
        self.start()
        s = self.smtp()
        s.ehlo()
        self.assertEqual(s.esmtp_features.get("auth", "").split(), ["PLAIN", "LOGIN"])
        s.login(USER, PASSWORD)  # AUTH PLAIN with an initial response
        s.sendmail("alice@example.test", ["bob@example.test"], b"Subject: via oauth2\r\n\r\nhello\r\n")
        s.quit()
        s = self.smtp()
        s.ehlo()
        s.user, s.password = USER, PASSWORD
        code, _ = s.auth("LOGIN", s.auth_login)  # the user name as initial response, then 334
        self.assertEqual(code, 235)
        s.quit()
        self.assertEqual(self.smtpd.messages[-1][0], USER)
        self.assertIn(b"hello", self.smtpd.messages[-1][1])
        self.assertEqual(self.refreshes(), 1)
        self.p.wait_for(contains="auth user=alice result=ok", count=2)
        self.assertNoSecrets()

    def test_smtp_failures(self):
        self.start()
        s = self.smtp()
        s.ehlo()
        s.user, s.password = USER, "wrong"
        with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:
            s.auth("PLAIN", s.auth_plain)  # login() would go on with LOGIN
        self.assertEqual(cm.exception.smtp_code, 535)
        self.assertIn(b"5.7.8", cm.exception.smtp_error)
        self.assertEqual(self.fake.requests, [])
        s.user, s.password = USER, PASSWORD
        with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:  # the pause: not checked
            s.auth("PLAIN", s.auth_plain)
        self.assertEqual(cm.exception.smtp_code, 454)
        time.sleep(PAUSE)
        self.fake.fail_next = [503]
        with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:
            s.auth("PLAIN", s.auth_plain)  # login() would go on with LOGIN
        self.assertEqual(cm.exception.smtp_code, 454)
        self.assertIn(b"4.7.0", cm.exception.smtp_error)
        s.login(USER, PASSWORD)
        s.quit()
        # the server refuses the cached token: its challenge is answered empty
        with self.fake.lock:
            self.fake.access.clear()
        answers = len(self.smtpd.challenge_answers)
        s = self.smtp()
        s.ehlo()
        s.user, s.password = USER, PASSWORD
        with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:
            s.auth("PLAIN", s.auth_plain)
        self.assertEqual(cm.exception.smtp_code, 535)
        self.assertEqual(self.smtpd.challenge_answers[answers:], [b""])
        s.noop()  # the session goes on
        s.quit()
        self.assertNoSecrets()
