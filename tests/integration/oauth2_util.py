"""Helpers for the backend_auth = oauth2 integration tests: a TLS Dovecot
whose only passdb is OAuth 2.0 (driver = oauth2, tokens checked at the fake
provider's introspection endpoint), a token file made the way an admin
makes it (postern oauth2-authorize, the loopback grant, the test playing
the user's browser), and the secrets a log or a transcript must never hold."""

import base64
import http.client
import json
import os
import ssl
import subprocess
import time
import urllib.parse

import clientmode_util
import harness
import mailserver
from harness import POSTERN, PipeWatch, env

# Dovecot's passdb: only OAuth 2.0 tokens, checked by introspection (POST)
OAUTH2_PASSDB = """\
auth_mechanisms = xoauth2 oauthbearer
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {conf}
}}"""

OAUTH2_CONF_EXT = """\
introspection_mode = post
introspection_url = {url}/introspect
force_introspection = yes
username_attribute = username
tls_ca_cert_file = {ca}
timeout_msecs = 5000
"""


class OAuth2Dovecot(clientmode_util.TlsDovecot):
    """The client-mode TLS Dovecot (same template, same users: alice) with
    an OAuth 2.0 passdb asking FAKE (a FakeOAuth2) about every token."""

    what = "OAuth 2.0 Dovecot"
    instance = "postern-oauth2"

    def __init__(self, dir, cert, key, fake):
        super().__init__(dir, cert, key)
        self.fake = fake

    def auth(self):
        conf = os.path.join(self.dir, "dovecot-oauth2.conf.ext")
        with open(conf, "w") as f:
            f.write(OAUTH2_CONF_EXT.format(url=self.fake.url, ca=env().ca))
        os.chmod(conf, 0o644)
        return OAUTH2_PASSDB.format(conf=conf)


def browser_get(url):
    """GET url (https or the loopback redirect's http) as a browser trusting
    the test CA would, following no redirect: (status, Location, body)."""
    u = urllib.parse.urlsplit(url)
    if u.scheme == "https":
        c = http.client.HTTPSConnection(u.hostname, u.port, timeout=10,
                                        context=ssl.create_default_context(cafile=env().ca))
    else:
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request("GET", u.path + ("?" + u.query if u.query else ""))
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, r.getheader("Location"), body


def authorize(conf, provider, account, password, fake):
    """postern -c conf oauth2-authorize --loopback provider account, the
    local password typed in, the browser sent to FAKE's authorization page
    (which approves the account of the login hint) and back to postern;
    returns postern's output (it must succeed). The loopback grant, as it
    takes no time: the device grant polls once a second."""
    p = subprocess.Popen([POSTERN, "-c", conf, "oauth2-authorize", "--loopback", provider, account],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        p.stdin.write(password.encode() + b"\n")
        p.stdin.flush()
        w = PipeWatch(p.stdout)
        url = w.wait(rb"^(https://\S+/authorize\?\S+)$").group(1).decode()
        assert url.startswith(fake.url + "/authorize?"), url
        status, location, _ = browser_get(url)
        assert status == 302, status
        status, _, _ = browser_get(location)
        assert status == 200, status
        out = w.finish(p, timeout=15)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, out
    return out


def secrets_of(fake, users, passwords):
    """Every string that must never appear in a log or a transcript: the
    tokens the fake issued (raw and URL-encoded), the SASL messages built
    from the access tokens, and the local passwords."""
    out = list(passwords)
    for t in fake.issued:
        out += [t, urllib.parse.quote(t, safe="")]
        for u in users:
            out.append(base64.b64encode(b"user=%s\x01auth=Bearer %s\x01\x01" % (u.encode(), t.encode())).decode())
    return out


def files_text(*dirs):
    """Everything written under dirs (logs, transcripts), as text."""
    out = []
    for d in dirs:
        for root, _, names in os.walk(d):
            for n in names:
                with open(os.path.join(root, n), "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
    return "\n".join(out)


class XOAuth2Smtp:
    """aiosmtpd on 127.0.0.1 with implicit TLS (cert, key) that accepts
    only AUTH XOAUTH2 with an access token FAKE issued to the user named
    in it and still valid; any other token gets the error challenge, and
    535 after the client's answer (kept in challenge_answers). Accepted
    messages are kept in messages. start() / stop()."""

    def __init__(self, fake, cert, key):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.fake = fake
        self.messages = []
        self.challenge_answers = []
        self.port = harness.free_port()
        outer = self

        class Handler:
            async def auth_XOAUTH2(self, server, args):
                blob = args[1].encode() if len(args) > 1 else await server.challenge_auth("")
                fields = base64.b64decode(blob).split(b"\x01") if len(args) > 1 else []
                user = next((f[5:] for f in fields if f.startswith(b"user=")), b"").decode()
                token = next((f[12:] for f in fields if f.startswith(b"auth=Bearer ")), b"").decode()
                with outer.fake.lock:
                    a = outer.fake.access.get(token)
                if a and a[0] == user and a[1] > time.time():
                    return AuthResult(success=True, auth_data=user)
                status = json.dumps({"status": "401", "schemes": "bearer", "scope": "mail"})
                outer.challenge_answers.append(await server.challenge_auth(status))
                return AuthResult(success=False, handled=False)

            async def handle_DATA(self, server, session, envelope):
                outer.messages.append((session.auth_data, envelope.content))
                return "250 2.0.0 Ok: queued"

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, ssl_context=ctx,
                                     auth_require_tls=False, auth_exclude_mechanism=["LOGIN", "PLAIN"])

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()
