#!/usr/bin/python3
"""A fake OAuth 2.0 provider for postern's tests: Python's standard library
only, HTTPS with the test certificates (tests/servers/gen-certs.sh).

    fake_oauth2.py --cert server.pem --key server.key [--port 0] [--client-id ID]
                   [--client-secret S] [--account USER] [--ready FILE]

or, from a test, FakeOAuth2(cert, key, ...).start() in a thread of its own.

Endpoints (paths under https://127.0.0.1:PORT):
  POST /device      device authorization (RFC 8628 3.1): device_code,
                    user_code, verification_uri(_complete), interval
  GET  /device/verify?user_code=C[&deny=1][&account=U]
                    the user's browser approving (or denying) a code
  GET  /authorize   authorization request (RFC 6749 4.1, PKCE S256 only):
                    answered at once with a 302 to the loopback redirect_uri
                    with code and state, as a user who consented
  POST /token       grant_type refresh_token, device_code (the RFC 8628
                    URN) and authorization_code (code_verifier checked
                    against the S256 challenge); refresh tokens rotate when
                    rotate is on
  POST /revoke      token revocation (RFC 7009)
  POST /introspect  token introspection (RFC 7662), as Dovecot's oauth2
                    passdb asks: {"active": true, "username": ...}

Behaviour a test sets on the object: delay (seconds before each answer of
/token and /device), fail_next (list of HTTP statuses the next requests of
/token get, e.g. [503]), rotate, expires_in, slow_down_polls (how many
device polls answer slow_down before the usual answers), user_code (the
next device code shown to the user), and the record of
what happened: requests (list of (path, grant_type, time.monotonic())), issued (every token
handed out), revoked. Clients must send client_id (and client_secret when
one is set); a wrong one gets invalid_client.
"""

import argparse
import base64
import hashlib
import http.server
import json
import os
import secrets
import socketserver
import ssl
import sys
import threading
import time
import urllib.parse


class FakeOAuth2:
    def __init__(self, cert, key, host="127.0.0.1", port=0, client_id="postern-test",
                 client_secret=None, account="alice@example.com"):
        self.client_id = client_id
        self.client_secret = client_secret
        self.account = account
        self.delay = 0.0
        self.fail_next = []
        self.rotate = True
        self.expires_in = 3600
        self.interval = 1
        self.slow_down_polls = 0
        self.user_code = None  # the next device user_code, instead of a random one
        self.requests = []
        self.issued = []
        self.revoked = set()
        self.lock = threading.Lock()
        self.devices = {}   # device_code -> dict(user_code, state, account, last_poll)
        self.codes = {}     # authorization code -> dict(challenge, redirect_uri, account, scope)
        self.refresh = {}   # refresh token -> account
        self.access = {}    # access token -> (account, expiry)
        provider = self

        class Handler(_Handler):
            fake = provider

        self.httpd = _Server((host, port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = "https://127.0.0.1:%d" % self.port
        self.thread = None

    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def token_requests(self):
        return [g for p, g, _ in self.requests if p == "/token"]

    def new_token(self, kind):
        t = "%s-%s" % (kind, secrets.token_urlsafe(24))
        self.issued.append(t)
        return t

    def grant(self, account):
        """A fresh access token (and refresh token) for ACCOUNT."""
        access = self.new_token("at")
        self.access[access] = (account, time.time() + self.expires_in)
        answer = {"access_token": access, "token_type": "Bearer", "expires_in": self.expires_in}
        refresh = self.new_token("rt")
        self.refresh[refresh] = account
        answer["refresh_token"] = refresh
        return answer

    def revoke(self, token):
        with self.lock:
            self.revoked.add(token)
            self.refresh.pop(token, None)
            self.access.pop(token, None)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # a client that hangs up (a timeout under test) is no error


class _Handler(http.server.BaseHTTPRequestHandler):
    fake = None
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body=None, headers=()):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, code):
        self.reply(status, {"error": code, "error_description": "fake: " + code,
                            "error_codes": [70000]})

    def form(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n).decode()
        return {k: v[0] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}

    def client_ok(self, f):
        fake = self.fake
        return f.get("client_id") == fake.client_id and (
            fake.client_secret is None or f.get("client_secret") == fake.client_secret)

    # ---------------------------------------------------------------- GET

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        fake = self.fake
        with fake.lock:
            fake.requests.append((url.path, None, time.monotonic()))
        if url.path == "/authorize":
            return self.authorize(q)
        if url.path == "/device/verify":
            with fake.lock:
                for d in fake.devices.values():
                    if d["user_code"] == q.get("user_code") and d["state"] == "pending":
                        d["state"] = "denied" if q.get("deny") else "approved"
                        d["account"] = q.get("account", fake.account)
                        return self.reply(200, {"approved": d["state"] == "approved"})
            return self.reply(404, {"error": "unknown user_code"})
        self.reply(404, {"error": "not found"})

    def authorize(self, q):
        fake = self.fake
        redirect = q.get("redirect_uri", "")
        r = urllib.parse.urlsplit(redirect)
        # RFC 8252 7.3: a loopback redirect by IP literal, http, any port
        if (q.get("client_id") != fake.client_id or r.scheme != "http"
                or r.hostname != "127.0.0.1" or not r.port):
            return self.reply(400, {"error": "invalid_request"})
        if (q.get("response_type") != "code" or q.get("code_challenge_method") != "S256"
                or len(q.get("code_challenge", "")) != 43 or not q.get("state")):
            return self.reply(400, {"error": "invalid_request"})
        code = secrets.token_urlsafe(16)
        with fake.lock:
            fake.codes[code] = {"challenge": q["code_challenge"], "redirect_uri": redirect,
                                "account": q.get("login_hint") or fake.account}
        sep = "&" if r.query else "?"
        loc = redirect + sep + urllib.parse.urlencode({"code": code, "state": q["state"]})
        self.reply(302, None, [("Location", loc)])

    # ---------------------------------------------------------------- POST

    def do_POST(self):
        fake = self.fake
        path = urllib.parse.urlsplit(self.path).path
        f = self.form()
        with fake.lock:
            fake.requests.append((path, f.get("grant_type"), time.monotonic()))
            fail = fake.fail_next.pop(0) if fake.fail_next and path in ("/token", "/device") else None
        if path in ("/token", "/device") and fake.delay:
            time.sleep(fake.delay)  # the slow provider under test
        if fail:
            return self.reply(fail, {"error": "temporarily_unavailable"})
        if path == "/device":
            return self.device(f)
        if path == "/token":
            return self.token(f)
        if path == "/revoke":
            fake.revoke(f.get("token", ""))
            return self.reply(200, {})
        if path == "/introspect":
            with fake.lock:
                a = fake.access.get(f.get("token", ""))
            if not a or a[1] < time.time():
                return self.reply(200, {"active": False})
            return self.reply(200, {"active": True, "username": a[0], "exp": int(a[1]),
                                    "scope": "mail"})
        self.reply(404, {"error": "not found"})

    def device(self, f):
        fake = self.fake
        if not self.client_ok(f):
            return self.error(401, "invalid_client")
        dc = secrets.token_urlsafe(24)
        uc = fake.user_code or "%04X-%04X" % (secrets.randbelow(65536), secrets.randbelow(65536))
        with fake.lock:
            fake.devices[dc] = {"user_code": uc, "state": "pending", "account": None,
                                "last_poll": 0.0, "scope": f.get("scope")}
        self.reply(200, {"device_code": dc, "user_code": uc,
                         "verification_uri": fake.url + "/device/verify",
                         "verification_uri_complete": fake.url + "/device/verify?user_code=" + uc,
                         "expires_in": 900, "interval": fake.interval})

    def token(self, f):
        fake = self.fake
        if not self.client_ok(f):
            return self.error(401, "invalid_client")
        g = f.get("grant_type")
        with fake.lock:
            if g == "refresh_token":
                rt = f.get("refresh_token", "")
                account = fake.refresh.get(rt)
                if account is None:
                    return self.error(400, "invalid_grant")
                answer = fake.grant(account)
                if fake.rotate:
                    del fake.refresh[rt]
                else:
                    del fake.refresh[answer.pop("refresh_token")]
                return self.reply(200, answer)
            if g == "urn:ietf:params:oauth:grant-type:device_code":
                d = fake.devices.get(f.get("device_code", ""))
                if d is None:
                    return self.error(400, "invalid_grant")
                if fake.slow_down_polls > 0:
                    fake.slow_down_polls -= 1
                    return self.error(400, "slow_down")
                if d["state"] == "pending":
                    return self.error(400, "authorization_pending")
                del fake.devices[f["device_code"]]
                if d["state"] == "denied":
                    return self.error(400, "access_denied")
                return self.reply(200, fake.grant(d["account"]))
            if g == "authorization_code":
                c = fake.codes.pop(f.get("code", ""), None)
                if c is None or c["redirect_uri"] != f.get("redirect_uri"):
                    return self.error(400, "invalid_grant")
                v = f.get("code_verifier", "").encode()
                want = base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip(b"=").decode()
                if not 43 <= len(v) <= 128 or want != c["challenge"]:
                    return self.error(400, "invalid_grant")
                return self.reply(200, fake.grant(c["account"]))
        self.error(400, "unsupported_grant_type")


def main():
    ap = argparse.ArgumentParser(description="fake OAuth 2.0 provider (tests, demo)")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--client-id", default="postern-test")
    ap.add_argument("--client-secret")
    ap.add_argument("--account", default="alice@example.com")
    ap.add_argument("--ready")
    a = ap.parse_args()
    fake = FakeOAuth2(a.cert, a.key, a.host, a.port, a.client_id, a.client_secret, a.account)
    if a.ready:
        with open(a.ready + ".tmp", "w") as f:
            f.write("%d\n" % fake.port)
        os.rename(a.ready + ".tmp", a.ready)
    print("oauth2 listening %s:%d" % (a.host, fake.port), flush=True)
    try:
        fake.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
