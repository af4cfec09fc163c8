"""OAuth 2.0 authorization and the token store, against the fake provider
(tests/servers/fake_oauth2.py, HTTPS with the test CA): the device grant
(RFC 8628) and the loopback authorization code grant with PKCE (RFC 8252,
RFC 7636) store an encrypted refresh token of mode 0600; oauth2-check uses
it as a login will (refresh, rotation stored); a wrong password fails
locally; revocation, a provider down or slow and an unverifiable
certificate fail as they should; no token ever appears in postern's
output; [oauth2:NAME] errors are reported as FILE:LINE."""

import json
import os
import pwd
import re
import shutil
import ssl
import stat
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import harness
from harness import POSTERN, PipeWatch, PosternTestCase, env, free_port, render_config, run
from fake_oauth2 import FakeOAuth2
from oauth2_util import browser_get

ACCOUNT = "alice@example.com"
PASSWORD = "local-pw-for-alice"


class OAuth2Authorize(PosternTestCase):
    NEEDS_SERVERS = False

    def setUp(self):
        super().setUp()
        e = env()
        self.fake = FakeOAuth2(e.cert, e.key, account=ACCOUNT).start()
        self.addCleanup(self.fake.stop)
        self.dir = tempfile.mkdtemp(prefix="oauth2-", dir=e.tmp)
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.tokens = os.path.join(self.dir, "tokens")
        self.conf = self.write_config()

    def write_config(self, name="postern.ini", ca=None, **over):
        e = env()
        section = {
            "provider": "generic",
            "authorization_url": self.fake.url + "/authorize",
            "device_authorization_url": self.fake.url + "/device",
            "token_url": self.fake.url + "/token",
            "scope": "mail offline_access",
            "client_id": "postern-test",
            "token_dir": self.tokens,
            "ca": ca or e.ca,
            "timeout": "2s",
        }
        section.update(over)
        text = render_config({"shutdown_timeout": "3s"}, [
            ("legacy-imap", {"protocol": "imap", "tls": "off",
                             "listen": "127.0.0.1:%d" % free_port(),
                             "backend": "127.0.0.1:%d" % free_port(),
                             "backend_tls": "implicit", "backend_ca": e.ca}),
            ("oauth2:fake", section),
        ])
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    # ------------------------------------------------------------ helpers

    def start(self, *args, password=PASSWORD, conf=None):
        p = subprocess.Popen([POSTERN, "-c", conf or self.conf] + list(args),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        self.addCleanup(self.reap, p)
        p.stdin.write(password.encode() + b"\n")
        p.stdin.flush()
        return p, PipeWatch(p.stdout)

    @staticmethod
    def reap(p):
        if p.poll() is None:
            p.kill()
        p.wait()

    def finish(self, p, w, expect=0):
        out = w.finish(p, timeout=15)
        self.assertEqual(p.returncode, expect, out)
        self.assertNoToken(out)
        for marker in harness.SANITIZER_MARKERS:
            self.assertNotIn(marker, out)
        return out

    def command(self, *args, password=PASSWORD, expect=0, conf=None):
        p, w = self.start(*args, password=password, conf=conf)
        return self.finish(p, w, expect)

    def assertNoToken(self, text):
        for t in self.fake.issued:
            self.assertNotIn(t, text)
            self.assertNotIn(urllib.parse.quote(t, safe=""), text)

    def token_path(self, account=ACCOUNT):
        return os.path.join(self.tokens, account)

    def authorize_by_device(self):
        p, w = self.start("oauth2-authorize", "fake", ACCOUNT)
        code = w.wait(rb"enter the code (\S+)").group(1).decode()
        # approve only after a poll was answered authorization_pending
        harness.wait_until(lambda: len(self.fake.token_requests()) >= 1, timeout=5)
        status, _, _ = browser_get(self.fake.url + "/device/verify?user_code=" + code)
        self.assertEqual(status, 200)
        return self.finish(p, w)

    # ------------------------------------------------------------ grants

    def test_device_grant_stores_encrypted_token_mode_0600(self):
        out = self.authorize_by_device()
        self.assertIn("stored encrypted in " + self.token_path(), out)
        st = os.stat(self.token_path())
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.tokens).st_mode), 0o700)
        device = "urn:ietf:params:oauth:grant-type:device_code"
        self.assertEqual(self.fake.token_requests(), [device, device])
        # the file holds no token in clear, and the stored one works
        with open(self.token_path(), "rb") as f:
            data = f.read()
        for t in self.fake.issued:
            self.assertNotIn(t.encode(), data)
        self.command("oauth2-check", "fake", ACCOUNT)
        self.assertEqual(self.fake.token_requests()[-1], "refresh_token")

    def test_provider_text_cannot_reach_the_terminal_raw(self):
        self.fake.user_code = "AB\x1b]0;owned\x07CD"
        p, w = self.start("oauth2-authorize", "fake", ACCOUNT)
        w.wait(rb"enter the code AB\?\]0;owned\?CD\n")
        self.assertNotIn(b"\x1b", w.data)
        browser_get(self.fake.url + "/device/verify?user_code=" + urllib.parse.quote(self.fake.user_code))
        self.finish(p, w)

    def test_token_dir_created_and_given_to_the_daemon_user(self):
        nobody = pwd.getpwnam("nobody")
        nested = os.path.join(self.tokens, "a", "b")
        self.tokens = nested
        self.conf = self.write_config(token_dir=nested)
        with open(self.conf) as f:
            text = f.read()
        with open(self.conf, "w") as f:
            f.write(text.replace("[global]\n", "[global]\nuser = nobody\n"))
        self.authorize_by_loopback()
        for d in (nested, os.path.dirname(nested)):
            st = os.stat(d)
            self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid), (0o700, nobody.pw_uid), d)
        st = os.stat(self.token_path())
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid),
                         (0o600, nobody.pw_uid, nobody.pw_gid))
        # a rotated token written by root goes to the daemon's user as well
        self.command("oauth2-check", "fake", ACCOUNT)
        self.assertEqual(os.stat(self.token_path()).st_uid, nobody.pw_uid)

    def test_device_grant_honours_slow_down(self):
        self.fake.slow_down_polls = 1
        p, w = self.start("oauth2-authorize", "fake", ACCOUNT)
        code = w.wait(rb"enter the code (\S+)").group(1).decode()
        # the first poll gets slow_down: the next comes 1 + 5 s later
        harness.wait_until(lambda: len(self.fake.token_requests()) >= 1, timeout=5)
        browser_get(self.fake.url + "/device/verify?user_code=" + code)
        self.finish(p, w)
        polls = [t for path, _, t in self.fake.requests if path == "/token"]
        self.assertEqual(len(polls), 2)
        self.assertGreaterEqual(polls[1] - polls[0], 5.5)

    def test_device_grant_denied_stores_nothing(self):
        p, w = self.start("oauth2-authorize", "fake", ACCOUNT)
        code = w.wait(rb"enter the code (\S+)").group(1).decode()
        browser_get(self.fake.url + "/device/verify?deny=1&user_code=" + code)
        out = self.finish(p, w, expect=2)
        self.assertIn("access_denied", out)
        self.assertFalse(os.path.exists(self.token_path()))

    def loopback_url(self, w):
        url = w.wait(rb"^(https://127\.0\.0\.1:\d+/authorize\?\S+)$").group(1).decode()
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        self.assertEqual(q["code_challenge_method"], "S256")
        self.assertEqual(q["login_hint"], ACCOUNT)
        self.assertRegex(q["redirect_uri"], r"^http://127\.0\.0\.1:\d+/$")
        return url, q

    def authorize_by_loopback(self):
        """The loopback grant, the browser approving at once: the quick way
        to a stored token for the tests of what is done with it (the device
        grant polls once a second)."""
        p, w = self.start("oauth2-authorize", "--loopback", "fake", ACCOUNT)
        url, q = self.loopback_url(w)
        status, location, _ = browser_get(url)
        self.assertEqual(status, 302)
        self.assertTrue(location.startswith(q["redirect_uri"] + "?code="), location)
        status, _, body = browser_get(location)
        self.assertEqual(status, 200)
        self.assertIn(b"authorization received", body)
        return self.finish(p, w)

    def test_loopback_grant_with_pkce(self):
        self.authorize_by_loopback()
        # the fake checked the verifier against the S256 challenge
        self.assertEqual(self.fake.token_requests(), ["authorization_code"])
        self.assertEqual(stat.S_IMODE(os.stat(self.token_path()).st_mode), 0o600)
        self.command("oauth2-check", "fake", ACCOUNT)

    def test_loopback_redirect_with_wrong_state_refused(self):
        p, w = self.start("oauth2-authorize", "--loopback", "fake", ACCOUNT)
        _, q = self.loopback_url(w)
        status, _, _ = browser_get(q["redirect_uri"] + "?code=forged&state=forged")
        self.assertEqual(status, 400)
        out = self.finish(p, w, expect=2)
        self.assertIn("wrong state", out)
        self.assertEqual(self.fake.token_requests(), [])
        self.assertFalse(os.path.exists(self.token_path()))

    # ------------------------------------------------------------ the stored token

    def test_wrong_password_fails_without_asking_the_provider(self):
        self.authorize_by_loopback()
        before = len(self.fake.requests)
        out = self.command("oauth2-check", "fake", ACCOUNT, password="not-the-password",
                           expect=2)
        self.assertIn("wrong password", out)
        self.assertEqual(len(self.fake.requests), before)

    def test_copied_token_file_useless_without_password_or_as_another_account(self):
        self.authorize_by_loopback()
        other = self.token_path("mallory@example.com")
        shutil.copy(self.token_path(), other)
        os.chmod(other, 0o600)
        before = len(self.fake.requests)
        out = self.command("oauth2-check", "fake", "mallory@example.com", expect=2)
        self.assertIn("damaged or not", out)
        self.command("oauth2-check", "fake", ACCOUNT, password="guess-1234", expect=2)
        self.assertEqual(len(self.fake.requests), before)

    def test_rotated_refresh_token_is_stored(self):
        self.authorize_by_loopback()
        # each check rotates; the old token is dead at the fake, so a second
        # check works only if the first stored the new one
        out = self.command("oauth2-check", "fake", ACCOUNT)
        self.assertIn("rotated refresh token is stored", out)
        self.command("oauth2-check", "fake", ACCOUNT)
        self.fake.rotate = False
        out = self.command("oauth2-check", "fake", ACCOUNT)
        self.assertNotIn("rotated", out)
        self.command("oauth2-check", "fake", ACCOUNT)

    def test_revoked_refresh_token_is_permanent(self):
        self.authorize_by_loopback()
        for t in list(self.fake.refresh):
            self.fake.revoke(t)
        out = self.command("oauth2-check", "fake", ACCOUNT, expect=2)
        self.assertIn("invalid_grant", out)
        self.assertIn("authorize the account again", out)

    def test_provider_down_or_slow_is_temporary_and_keeps_the_token(self):
        self.authorize_by_loopback()
        self.fake.fail_next = [503]
        out = self.command("oauth2-check", "fake", ACCOUNT, expect=2)
        self.assertIn("HTTP 503", out)
        self.assertIn("temporary", out)
        self.fake.delay = 4  # longer than timeout = 2s
        t0 = time.monotonic()
        out = self.command("oauth2-check", "fake", ACCOUNT, expect=2)
        self.assertLess(time.monotonic() - t0, 3.5 * harness.SLOW)
        self.assertIn("temporary", out)
        self.assertRegex(out, "(?i)timed? ?out")
        self.fake.delay = 0
        self.command("oauth2-check", "fake", ACCOUNT)

    def test_provider_certificate_is_verified(self):
        self.authorize_by_loopback()
        # trust only a CA that did not sign the fake's certificate
        other_ca = os.path.join(self.dir, "other-ca.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                        os.path.join(self.dir, "other-ca.key"), "-out", other_ca, "-days", "1",
                        "-subj", "/CN=not the test CA"], check=True, capture_output=True)
        conf = self.write_config("other-ca.ini", ca=other_ca)
        before = len(self.fake.token_requests())
        out = self.command("oauth2-check", "fake", ACCOUNT, conf=conf, expect=2)
        self.assertRegex(out, "(?i)certificate")
        self.assertEqual(len(self.fake.token_requests()), before)

    def test_fake_introspection_tells_live_tokens(self):
        """What Dovecot's oauth2 passdb will ask the fake (introspection_url)."""
        access = self.fake.grant(ACCOUNT)["access_token"]
        ctx = ssl.create_default_context(cafile=env().ca)

        def introspect(token):
            req = urllib.request.Request(self.fake.url + "/introspect",
                                         data=urllib.parse.urlencode({"token": token}).encode())
            with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
                return json.loads(r.read())

        self.assertEqual(introspect(access), {"active": True, "username": ACCOUNT,
                                              "exp": introspect(access)["exp"], "scope": "mail"})
        self.fake.revoke(access)
        self.assertEqual(introspect(access), {"active": False})
        self.assertEqual(introspect("at-never-issued"), {"active": False})

    def test_http_url_and_bad_keys_refused_with_file_line(self):
        conf = self.write_config("bad.ini", token_url="http://127.0.0.1:1/token",
                                 client_id=None, colour="blue")
        r = run([POSTERN, "-t", "-c", conf], timeout=10)
        err = r.stderr.decode()
        self.assertEqual(r.returncode, 1, err)
        self.assertRegex(err, re.escape(conf) + r":\d+: token_url: must be an https:// URL")
        self.assertRegex(err, re.escape(conf) + r":\d+: \[oauth2:fake\]: client_id is required")
        self.assertRegex(err, re.escape(conf) + r":\d+: unknown key 'colour' in \[oauth2:fake\]")

    def test_backend_auth_checked_by_postern_t(self):
        with open(self.conf) as f:
            text = f.read()
        for value, error in (("oauth2", r"backend_auth = oauth2: expected passthrough or oauth2:NAME"),
                             ("oauth2:nosuch", r"backend_auth: no section \[oauth2:nosuch\]"),
                             ("oauth2:fake", None)):
            with self.subTest(value=value):
                path = os.path.join(self.dir, "auth.ini")
                with open(path, "w") as f:
                    f.write(text.replace("backend_tls = implicit",
                                         "backend_tls = implicit\nbackend_auth = " + value))
                r = run([POSTERN, "-t", "-c", path], timeout=10)
                if error is None:
                    self.assertEqual(r.returncode, 0, r.stderr)
                else:
                    self.assertEqual(r.returncode, 1)
                    self.assertRegex(r.stderr.decode(), re.escape(path) + r":\d+: " + error)

    def test_unknown_provider_and_account_names(self):
        out = self.command("oauth2-authorize", "nosuch", ACCOUNT, expect=1)
        self.assertIn("no section [oauth2:nosuch]", out)
        out = self.command("oauth2-authorize", "fake", "../escape", expect=1)
        self.assertIn("invalid account name", out)
        out = self.command("oauth2-check", "fake", ACCOUNT, expect=2)
        self.assertIn("oauth2-authorize first", out)
        out = self.command("oauth2-authorize", "fake", ACCOUNT, password="short", expect=2)
        self.assertIn("at least 8", out)
