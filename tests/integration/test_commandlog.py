"""The command log and session capture (`log_commands`, `capture_dir`), and
the forwarding rules that come with them (tests/security-checklist.md P6-P9, L1-L2).

The formats are those of the command-log note (C:/S: lines, `{N bytes}`,
`***`, capture files SERVICE-ID-YYYYMMDDTHHMMSSZ.txt). Every test drives
postern with real clients (imaplib, poplib, smtplib) or raw sockets where a
library cannot produce the exact bytes (literals, LITERAL+, continuations,
`*` cancel, pipelining), in front of the run's Dovecot and aiosmtpd, or of a
small recording fake backend where a real server cannot show what it got
(SMTP AUTH over plaintext, COMPRESS=DEFLATE, ID, XCLIENT).

P6 follows the note as revised: forwarding field names in an IMAP ID are
defaced in place ("x-originating-ip" -> "y-originating-ip"), an ID literal
over 1024 bytes is refused; SMTP XCLIENT/XFORWARD and POP3 XCLIENT are
answered locally.

Redaction is checked twice: the expected `C:` lines must be there (a silent
logger cannot pass), and no byte postern wrote (stderr, stdout, the log
file, every capture file) may contain a password, a token, an APOP digest,
or any 8-byte window of a base64 blob the client sent.
"""

import base64
import hashlib
import imaplib
import json
import os
import poplib
import re
import shlex
import smtplib
import socket
import stat
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import harness
from harness import SLOW, PosternTestCase, Reader, env, plain_connect, svc, tls_connect
from starttls_util import FakeBackend, complete_lines, imap_cap_lists, smtp_keywords, smtp_reply

# ---------------------------------------------------------------- secrets

PW = "Zq8-uniq-PW-4711"  # a password no account has: auth fails, it is still sent
GOOD_PW = harness.PASSWORD  # alice's real password, "secret"
TOKEN = "Tok-9f3e-uniq-BEARER"
APOP_TS = "<1896.697170952@dbc.mtview.ca.us>"


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


PLAIN_BAD = b64(b"\0alice\0" + PW.encode())
PLAIN_GOOD = b64(b"\0alice\0" + GOOD_PW.encode())
LOGIN_USER = b64("alice")
LOGIN_PW = b64(PW)
XOAUTH_STR = "user=alice@example.test\x01auth=Bearer %s\x01\x01" % TOKEN
XOAUTH = b64(XOAUTH_STR)
APOP_DIGEST = hashlib.md5((APOP_TS + PW).encode()).hexdigest()

# never in any byte postern writes
PLAIN_SECRETS = [PW, TOKEN, APOP_DIGEST]
# no window of 8 characters of these may appear anywhere either
B64_SECRETS = [PLAIN_BAD, PLAIN_GOOD, LOGIN_USER, LOGIN_PW, XOAUTH]

TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
CAP_NAME_RE = re.compile(r"^([A-Za-z0-9_.]+)-([^-]+)-(\d{8}T\d{6}Z)\.txt$")
CAP_HEAD_RE = re.compile(r"^# postern transcript service=(\S+) session=(\S+) client=(\S+) start=(%s)$" % TS)
CAP_LINE_RE = re.compile(r"^(%s) ([CS]):(?: (.*))?$" % TS)
CAP_END_RE = re.compile(r"^# end reason=(\S+) in=(\d+) out=(\d+)$")


def windows(s, n=8):
    s = s.encode() if isinstance(s, str) else s
    return {s[i : i + n] for i in range(0, len(s) - n + 1)}


# ---------------------------------------------------------------- clients


class Conn:
    """A raw TLS (implicit) or plaintext connection to postern."""

    def __init__(self, port, tls):
        # generous: the CI machine is shared and noisy
        self.sock = tls_connect(port, timeout=20.0) if tls else plain_connect(port, timeout=20.0)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.local_port = self.sock.getsockname()[1]
        self.r = Reader(self.sock)

    def send(self, data):
        self.r.send(data)

    def line(self):
        return self.r.readline()

    def imap(self, tag, cmd=None):
        """Send `tag cmd` (unless cmd is None) and return (all bytes, tagged line)."""
        if cmd is not None:
            self.send("%s %s\r\n" % (tag, cmd))
        resp = harness.imap_response(self.r, tag)
        return resp, resp.rstrip(b"\r\n").split(b"\r\n")[-1]

    def drain(self, timeout=5.0):
        """Read until the peer closes (or resets)."""
        deadline = time.monotonic() + timeout * SLOW
        self.sock.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                if not self.sock.recv(65536):
                    return
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def expect(line, prefix):
    if not line.startswith(prefix):
        raise AssertionError("expected %r..., got %r" % (prefix, line))
    return line


def imap_greet(c):
    expect(c.line(), b"* OK")


def imap_bye(c, tag="z"):
    _, t = c.imap(tag, "LOGOUT")
    expect(t, tag.encode() + b" OK")
    c.drain()


def pop_greet(c):
    expect(c.line(), b"+OK")


def pop_quit(c):
    expect(pop_cmd(c, "QUIT"), b"+OK")
    c.drain()


def pop_cmd(c, cmd):
    c.send(cmd + "\r\n")
    return c.line()


def pop_multiline(c):
    """The rest of a multi-line POP3 reply, terminator included."""
    return c.r.read_until(b"\r\n.\r\n") if not c.r.buf.startswith(b".\r\n") else c.r.read(3)


def smtp_cmd(c, cmd):
    c.send(cmd + "\r\n")
    return smtp_reply(c)


def smtp_greet(c):
    expect(smtp_reply(c)[-1], b"220")
    expect(smtp_cmd(c, "EHLO client.example")[-1], b"250 ")


def smtp_quit(c):
    expect(smtp_cmd(c, "QUIT")[-1], b"221")
    c.drain()


def imaplib_client(port, tls):
    if tls:
        return harness.IMAP4_SSL(port)
    return imaplib.IMAP4("127.0.0.1", port, timeout=10 * SLOW)


def poplib_client(port, tls):
    if tls:
        return harness.POP3_SSL(port)
    return poplib.POP3("127.0.0.1", port, timeout=10 * SLOW)


def smtplib_client(port, tls):
    if tls:
        return harness.SMTP_SSL(port)
    return smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10 * SLOW)


def local_port_of(lib_client):
    return lib_client.sock.getsockname()[1]


# ---------------------------------------------------------------- fake backends


class Fake(FakeBackend):
    """starttls_util's recording fake, with AUTHENTICATE/AUTH continuations,
    ID, COMPRESS, XCLIENT/XFORWARD and BDAT."""

    def stop(self):
        # closing a listening socket does not wake a thread blocked in
        # accept(): connect once so that the accept loop sees _stop
        self._stop = True
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            pass
        super().stop()

    def received(self):
        with self._lock:
            conns = list(self.conns)
        return b"".join(c.data() for c in conns)

    def _imap_command(self, c, tag, cmd, words, readline):
        """The base fake's answers, with AUTHENTICATE's continuation (and
        `*` cancel), ID and COMPRESS."""
        if cmd == "AUTHENTICATE" and len(words) < 4:
            c.send(b"+ \r\n")
            if readline().strip() == b"*":
                c.send(("%s BAD Authentication aborted\r\n" % tag).encode())
                return False
        elif cmd == "ID":
            c.send(('* ID ("name" "fake")\r\n%s OK ID completed\r\n' % tag).encode())
            return False
        elif cmd == "COMPRESS":
            c.send(("%s OK DEFLATE active (the fake does not really compress)\r\n" % tag).encode())
            return False
        return super()._imap_command(c, tag, cmd, words, readline)

    def _smtp_command(self, c, cmd, words, readline, readn):
        """The base fake's answers, with AUTH (continuations, `*` cancel),
        BDAT and XCLIENT."""
        def cont():
            ln = readline()
            if ln.strip() == b"*":
                c.send(b"501 5.7.0 Authentication aborted\r\n")
                return False
            return True

        if cmd == "AUTH":
            mech = words[1].decode().upper() if len(words) > 1 else ""
            ir = len(words) > 2
            if mech == "LOGIN":
                if not ir:
                    c.send(b"334 VXNlcm5hbWU6\r\n")
                    if not cont():
                        return False
                c.send(b"334 UGFzc3dvcmQ6\r\n")
                if not cont():
                    return False
            elif not ir:
                c.send(b"334 \r\n")
                if not cont():
                    return False
            c.send(b"235 2.7.0 Authentication successful\r\n")
        elif cmd == "BDAT":
            n = int(words[1])
            readn(n)
            c.send(("250 2.0.0 %d octets received%s\r\n"
                    % (n, ", message queued" if len(words) > 2 else "")).encode())
        elif cmd == "XCLIENT":
            c.send(b"220 fake.test XCLIENT accepted\r\n")
        else:
            return super()._smtp_command(c, cmd, words, readline, readn)
        return False


FAKE_SMTP_EHLO = ["PIPELINING", "AUTH PLAIN LOGIN XOAUTH2", "XCLIENT ADDR NAME HELO PROTO", "8BITMIME",
                  "XFORWARD ADDR NAME PROTO HELO", "CHUNKING", "SIZE 1000000"]
FAKE_IMAP_CAPS = "IMAP4rev1 COMPRESS=DEFLATE ID LITERAL+ SASL-IR AUTH=PLAIN"
FAKE_IMAP_POSTLOGIN = "IMAP4rev1 ID LITERAL+ IDLE MOVE COMPRESS=DEFLATE"


# ---------------------------------------------------------------- base class


class LogCase(PosternTestCase):
    """Starts postern with log_commands/capture_dir on the given services, a
    log file and a capture directory of its own."""

    def start(self, services, level="debug", log_format=None, capture=True, log_commands=True, global_=None,
              umask=None, launch=True, logfile=True, **kw):
        d = tempfile.mkdtemp(prefix="cmdlog-", dir=env().tmp)
        os.chmod(d, 0o755)
        self.capdir = os.path.join(d, "capture")
        os.mkdir(self.capdir)
        os.chmod(self.capdir, 0o755)
        self.logfile = os.path.join(d, "postern.log")
        out = []
        for name, s in services:
            s = dict(s)
            if log_commands and "log_commands" not in s:
                s["log_commands"] = "yes"
            if capture and "capture_dir" not in s:
                s["capture_dir"] = self.capdir
            out.append((name, s))
        g = {"log_level": level}
        if logfile:
            g["log"] = self.logfile
        if log_format:
            g["log_format"] = log_format
        g.update(global_ or {})
        p = self.postern(out, g, start=False)
        self.services = dict(out)
        if not launch:
            return p
        old = os.umask(umask) if umask is not None else None
        try:
            p.start(**kw)
        finally:
            if old is not None:
                os.umask(old)
        return p

    def tls_of(self, name):
        return self.services[name].get("tls", "implicit") == "implicit"

    # --- log reading
    def wait_end(self, p, service, port, timeout=10.0):
        deadline = time.monotonic() + timeout * SLOW
        while True:
            for ln in complete_lines(p):
                if ln.sid and ln.service == service and ln.client_port == port and ln.event == "end":
                    return ln
            if time.monotonic() > deadline:
                raise AssertionError("no end line for %s client port %d; log:\n%s"
                                     % (service, port, p.log_text()[-6000:]))
            time.sleep(0.03)

    def session(self, p, service, port):
        """(start line, [C:/S: lines]) of a session."""
        mine = [ln for ln in complete_lines(p) if ln.sid and ln.service == service and ln.client_port == port]
        starts = [ln for ln in mine if ln.event == "start"]
        if not starts:
            raise AssertionError("no start line for %s client port %d:\n%s" % (service, port, p.log_text()[-4000:]))
        sid = starts[-1].sid
        return starts[-1], [ln for ln in mine if ln.sid == sid and ln.event in ("C:", "S:")]

    @staticmethod
    def text(ln):
        return ln.msg[3:] if len(ln.msg) > 3 else ""

    def c_lines(self, lines):
        return [self.text(ln) for ln in lines if ln.event == "C:"]

    def s_lines(self, lines):
        return [ln for ln in lines if ln.event == "S:"]

    def assertCLines(self, lines, expected, exact=True, what=""):
        got = self.c_lines(lines)
        dump = "\n".join(ln.raw for ln in lines)

        def match(e, g):
            return bool(e.search(g)) if hasattr(e, "search") else e == g

        if exact:
            ok = len(got) == len(expected) and all(match(e, g) for e, g in zip(expected, got))
        else:
            it = iter(got)
            ok = all(any(match(e, g) for g in it) for e in expected)
        if not ok:
            raise AssertionError("%s: C: lines %r, expected %s%r; session lines:\n%s"
                                 % (what, got, "" if exact else "(in order, among them) ",
                                    [getattr(e, "pattern", e) for e in expected], dump))
        for ln in lines:
            if ln.event == "C:":
                self.assertEqual(ln.level, "info", "%s: C: lines are info: %s" % (what, ln.raw))

    def assertSLine(self, lines, regex, level, what=""):
        hits = [ln for ln in self.s_lines(lines) if re.search(regex, self.text(ln))]
        if not hits:
            raise AssertionError("%s: no S: line matching %r; session lines:\n%s"
                                 % (what, regex, "\n".join(ln.raw for ln in lines)))
        if level:
            for ln in hits:
                self.assertEqual(ln.level, level, "%s: level of %s" % (what, ln.raw))
        return hits

    # --- what postern wrote
    def outputs(self, p, extra_dirs=()):
        out = {}
        with open(p.stderr_path, "rb") as f:
            out["stderr"] = f.read()
        with open(p.stdout_path, "rb") as f:
            out["stdout"] = f.read()
        if p.logfile and os.path.exists(p.logfile):
            with open(p.logfile, "rb") as f:
                out[p.logfile] = f.read()
        for d in (getattr(self, "capdir", None),) + tuple(extra_dirs):
            if not d or not os.path.isdir(d):
                continue
            for root, _, files in os.walk(d):
                for fn in files:
                    path = os.path.join(root, fn)
                    with open(path, "rb") as f:
                        out[path] = f.read()
        return out

    def assertNoLeak(self, p, plain=(), b64s=(), extra_dirs=()):
        plain = [s.encode() if isinstance(s, str) else s for s in list(PLAIN_SECRETS) + list(plain)]
        wins = {}
        for blob in list(B64_SECRETS) + list(b64s):
            for w in windows(blob):
                wins[w] = blob
        leaks = []
        outs = self.outputs(p, extra_dirs)
        for name, data in outs.items():
            for s in plain:
                i = data.find(s)
                if i >= 0:
                    leaks.append("%s: %r at %d: ...%r..." % (name, s, i, data[max(0, i - 80) : i + 80]))
            for w, blob in wins.items():
                i = data.find(w)
                if i >= 0:
                    leaks.append("%s: %r (from base64 %s) at %d: ...%r..."
                                 % (name, w, blob, i, data[max(0, i - 80) : i + 80]))
        if leaks:
            raise AssertionError("secrets in postern's output:\n" + "\n".join(leaks[:30]))
        return outs

    # --- capture files
    def captures(self, capdir=None):
        """{session id: dict(path, name_service, name_ts, header, lines, end, raw)}"""
        capdir = capdir or self.capdir
        out = {}
        for fn in sorted(os.listdir(capdir)):
            path = os.path.join(capdir, fn)
            with open(path, "rb") as f:
                raw = f.read()
            m = CAP_NAME_RE.match(fn)
            self.assertTrue(m, "capture file name %r is not SERVICE-ID-YYYYMMDDTHHMMSSZ.txt" % fn)
            text = raw.decode("utf-8", "replace")
            rows = text.split("\n")
            self.assertEqual(rows[-1], "", "%s does not end with a newline" % path)
            rows = rows[:-1]
            self.assertGreaterEqual(len(rows), 1, path)
            head = CAP_HEAD_RE.match(rows[0])
            self.assertTrue(head, "%s: header line %r" % (path, rows[0]))
            end = CAP_END_RE.match(rows[-1]) if len(rows) > 1 else None
            body = rows[1:-1] if end else rows[1:]
            lines = []
            for r in body:
                lm = CAP_LINE_RE.match(r)
                self.assertTrue(lm, "%s: not a `TS C: ...`/`TS S: ...` line: %r" % (path, r))
                lines.append((lm.group(1), lm.group(2), lm.group(3) or ""))
            self.assertNotIn(m.group(2), out, "two capture files for session %s" % m.group(2))
            out[m.group(2)] = dict(path=path, name_service=m.group(1), name_ts=m.group(3), header=head,
                                   lines=lines, end=end, raw=raw)
        return out


def run_parallel(fns):
    """Run callables concurrently; return their results in order (re-raising
    the first exception with the callable's name)."""
    with ThreadPoolExecutor(max_workers=max(1, len(fns))) as ex:
        futs = [(name, ex.submit(fn)) for name, fn in fns]
        out = []
        errors = []
        for name, fut in futs:
            try:
                out.append(fut.result(timeout=60))
            except Exception as e:  # noqa: BLE001
                errors.append("%s: %s: %s" % (name, type(e).__name__, e))
        if errors:
            raise AssertionError("client side failed:\n" + "\n".join(errors))
        return out


# ---------------------------------------------------------------- 1. redaction


def F(name, fn, c_lines, s_lines=(), exact=True):
    return dict(name=name, fn=fn, c=c_lines, s=list(s_lines), exact=exact)


def dialogue(greet, read, bye):
    """A protocol's form maker: form(*steps) is an fn(port, tls) -> client
    port that connects, greet(c)s, runs the steps and bye(c)s.

    A step is (send, want[, then]). send: a str is a command line (CRLF
    added), bytes go as they are, None sends nothing. want: read(c, want)
    must start with it; None reads nothing but waits 0.15 s, so that the
    next send is a TCP segment / TLS record of its own. then(c), if given,
    reads the rest of the reply (a POP3 multi-line body)."""

    def form(*steps):
        def fn(port, tls):
            c = Conn(port, tls)
            greet(c)
            for send, want, *then in steps:
                if send is not None:
                    c.send(send + "\r\n" if isinstance(send, str) else send)
                if want is None:
                    time.sleep(0.15)
                    continue
                expect(read(c, want), want)
                for f in then:
                    f(c)
            bye(c)
            return c.local_port
        return fn
    return form


def imap_read(c, want):
    """A continuation request line for want "+...", else the response up to
    the tagged line of want's tag (that line)."""
    if want.startswith(b"+"):
        return c.line()
    return c.imap(want.split(b" ", 1)[0].decode())[1]


imap_form = dialogue(imap_greet, imap_read, imap_bye)
pop_form = dialogue(pop_greet, lambda c, want: c.line(), pop_quit)
smtp_form = dialogue(smtp_greet, lambda c, want: smtp_reply(c)[-1], smtp_quit)


# IMAP forms: fn(port, tls) -> client port. Every form runs in its own
# session, all at once.

def imap_imaplib(port, tls):
    m = imaplib_client(port, tls)
    lp = local_port_of(m)
    try:
        m.login("alice", PW)
        raise AssertionError("LOGIN with a wrong password succeeded")
    except imaplib.IMAP4.error:
        pass
    m.logout()
    return lp


IMAP_FORMS = [
    F("login-atom", imap_form(("a1 LOGIN alice %s" % PW, b"a1 NO")), ["a1 LOGIN alice ***", "z LOGOUT"],
      [(r"^\* OK .*Dovecot ready", "debug"), (r"^a1 NO ", "info"), (r"^\* BYE", "debug"), (r"^z OK", "info")]),
    F("login-good", imap_form(("b1 LOGIN alice %s" % GOOD_PW, b"b1 OK"), ("b2 NOOP", b"b2 OK")),
      ["b1 LOGIN alice ***", "b2 NOOP", "z LOGOUT"],
      [(r"^b1 OK ", "info"), (r"^b2 OK", "info")]),
    F("login-quoted", imap_form(('a1 LOGIN alice "%s"' % PW, b"a1 NO")), ["a1 LOGIN alice ***", "z LOGOUT"]),
    F("login-literal", imap_form(("a1 LOGIN alice {%d}" % len(PW), b"+"), (PW, b"a1 NO")),
      ["a1 LOGIN alice ***", "z LOGOUT"],
      [(r"^\+", "debug"), (r"^a1 NO", "info")]),
    # LITERAL+, with the length marker and the password each split across
    # TCP segments / TLS records (P7: literals spanning segments)
    F("login-literal+split",
      imap_form((b"a1 LOGIN alice {1", None), (("6+}\r\n" + PW[:7]).encode(), None), ((PW[7:] + "\r\n").encode(), None),
                (None, b"a1 NO")),
      ["a1 LOGIN alice ***", "z LOGOUT"]),
    F("login-user-literal", imap_form(("a1 LOGIN {5+}\r\nalice %s" % PW, b"a1 NO")),
      ["a1 LOGIN {5 bytes} ***", "z LOGOUT"]),
    F("login-both-literals", imap_form(("a1 LOGIN {5}", b"+"), ("alice {%d}" % len(PW), b"+"), (PW, b"a1 NO")),
      ["a1 LOGIN {5 bytes} ***", "z LOGOUT"]),
    F("authenticate-plain-ir", imap_form(("a2 AUTHENTICATE PLAIN " + PLAIN_BAD, b"a2 NO")),
      ["a2 AUTHENTICATE PLAIN ***", "z LOGOUT"]),
    F("authenticate-plain-cont", imap_form(("a2 AUTHENTICATE PLAIN", b"+"), (PLAIN_BAD, b"a2 NO")),
      ["a2 AUTHENTICATE PLAIN", "***", "z LOGOUT"],
      [(r"^\+", "debug"), (r"^a2 NO", "info")]),
    F("authenticate-login",
      imap_form(("a3 AUTHENTICATE LOGIN", b"+ "), (LOGIN_USER, b"+ "), (LOGIN_PW, b"a3 NO")),
      ["a3 AUTHENTICATE LOGIN", "***", "***", "z LOGOUT"]),
    # `*` after the user name; then a real login and a command: the adapter
    # left the continuation state
    F("authenticate-cancel",
      imap_form(("a3 AUTHENTICATE LOGIN", b"+ "), (LOGIN_USER, b"+ "), ("*", b"a3 BAD"),
                ("a4 AUTHENTICATE PLAIN " + PLAIN_GOOD, b"a4 OK"), ("a5 NOOP", b"a5 OK")),
      ["a3 AUTHENTICATE LOGIN", "***", "*", "a4 AUTHENTICATE PLAIN ***", "a5 NOOP", "z LOGOUT"],
      [(r"^a3 BAD", "info"), (r"^a4 OK", "info")]),
    F("imaplib", imap_imaplib, [re.compile(r"^\w+ LOGIN alice \*\*\*$"), re.compile(r"^\w+ LOGOUT$")],
      exact=False),
    # a command and the LOGIN in one write, the LOGIN ended by a bare LF
    # (Dovecot accepts it)
    F("pipelined-bare-lf", imap_form((("a0 NOOP\r\na1 LOGIN alice %s\n" % PW).encode(), b"a0 OK"), (None, b"a1 NO")),
      ["a0 NOOP", "a1 LOGIN alice ***", "z LOGOUT"]),
    # a quoted password with an escaped quote before the secret part: a
    # redactor that ends the string at the first `"` would print the rest
    F("login-quoted-escape", imap_form(('a1 LOGIN alice "pre\\"%s\\\\"' % PW, b"a1 NO")),
      ["a1 LOGIN alice ***", "z LOGOUT"]),
    F("lowercase-login", imap_form(("a1 login alice " + PW, b"a1 NO")),
      [re.compile(r"^a1 (?i:login) alice \*\*\*$"), "z LOGOUT"]),
    F("lowercase-authenticate", imap_form(("a1 authenticate plain " + PLAIN_BAD, b"a1 NO")),
      [re.compile(r"^a1 (?i:authenticate plain) \*\*\*$"), "z LOGOUT"]),
]


# POP3 forms

def pop_poplib(port, tls):
    m = poplib_client(port, tls)
    lp = local_port_of(m)
    m.user("alice")
    try:
        m.pass_(PW)
        raise AssertionError("PASS with a wrong password succeeded")
    except poplib.error_proto:
        pass
    m.quit()
    return lp


POP3_FORMS = [
    F("user-pass", pop_form(("USER alice", b"+OK"), ("PASS " + PW, b"-ERR")), ["USER alice", "PASS ***", "QUIT"],
      [(r"^-ERR", "info")]),
    F("user-pass-good",
      pop_form(("USER alice", b"+OK"), ("PASS " + GOOD_PW, b"+OK"), ("RETR 1", b"+OK", pop_multiline)),
      ["USER alice", "PASS ***", "RETR 1", "QUIT"],
      [(r"^\+OK.* \{\d+ bytes\}$", "info")]),
    F("poplib", pop_poplib, ["USER alice", "PASS ***", "QUIT"], exact=False),
    F("apop", pop_form(("APOP alice " + APOP_DIGEST, b"-ERR")), ["APOP alice ***", "QUIT"], [(r"^-ERR", "info")]),
    F("auth-plain-ir", pop_form(("AUTH PLAIN " + PLAIN_BAD, b"-ERR")), ["AUTH PLAIN ***", "QUIT"]),
    F("auth-plain-cont", pop_form(("AUTH PLAIN", b"+"), (PLAIN_BAD, b"-ERR")), ["AUTH PLAIN", "***", "QUIT"],
      [(r"^\+(?!OK)", "debug")]),
    F("auth-login", pop_form(("AUTH LOGIN", b"+ "), (LOGIN_USER, b"+ "), (LOGIN_PW, b"-ERR")),
      ["AUTH LOGIN", "***", "***", "QUIT"]),
    F("auth-cancel",
      pop_form(("AUTH LOGIN", b"+ "), (LOGIN_USER, b"+ "), ("*", b"-ERR"), ("AUTH PLAIN " + PLAIN_GOOD, b"+OK"),
               ("STAT", b"+OK")),
      ["AUTH LOGIN", "***", "*", "AUTH PLAIN ***", "STAT", "QUIT"]),
    # PASS takes the rest of the line (RFC 1939 allows spaces in it); the
    # commands in lower case
    F("pass-spaces-lowercase", pop_form(("user alice", b"+OK"), ("pass two words %s" % PW, b"-ERR")),
      ["user alice", re.compile(r"^(?i:pass) \*\*\*$"), "QUIT"]),
    # USER and PASS in one write (POP3 PIPELINING), bare LF line ends
    F("pipelined", pop_form((("USER alice\nPASS %s\n" % PW).encode(), b"+OK"), (None, b"-ERR")),
      ["USER alice", "PASS ***", "QUIT"]),
    F("auth-lowercase", pop_form(("auth plain " + PLAIN_BAD, b"-ERR")),
      [re.compile(r"^(?i:auth plain) \*\*\*$"), "QUIT"]),
]


# SMTP forms (against the recording fake: aiosmtpd refuses AUTH without TLS)

def smtp_lib(mech):
    def fn(port, tls):
        s = smtplib_client(port, tls)
        lp = local_port_of(s)
        s.ehlo("client.test")
        if mech == "XOAUTH2":
            code, _ = s.auth("XOAUTH2", lambda challenge=None: XOAUTH_STR)
        else:
            s.esmtp_features["auth"] = mech  # force the mechanism
            code, _ = s.login("alice", PW)
        if code != 235:
            raise AssertionError("AUTH %s: %s" % (mech, code))
        s.quit()
        return lp
    return fn


SMTP_FORMS = [
    # smtplib sends "ehlo" and "quit" in lower case
    F("smtplib-plain-ir", smtp_lib("PLAIN"), ["ehlo client.test", "AUTH PLAIN ***", "quit"],
      [(r"^235 ", "info"), (r"^250-", "debug"), (r"^250 ", "info")]),
    F("smtplib-login-ir", smtp_lib("LOGIN"), ["ehlo client.test", "AUTH LOGIN ***", "***", "quit"]),
    F("smtplib-xoauth2", smtp_lib("XOAUTH2"), ["ehlo client.test", "AUTH XOAUTH2 ***", "quit"]),
    F("plain-cont", smtp_form(("AUTH PLAIN", b"334"), (PLAIN_BAD, b"235")),
      ["EHLO client.example", "AUTH PLAIN", "***", "QUIT"]),
    F("login-two-prompts", smtp_form(("AUTH LOGIN", b"334 VXNlcm5hbWU6"), (LOGIN_USER, b"334 UGFzc3dvcmQ6"),
                                     (LOGIN_PW, b"235")),
      ["EHLO client.example", "AUTH LOGIN", "***", "***", "QUIT"]),
    F("login-cancel", smtp_form(("AUTH LOGIN", b"334"), (LOGIN_USER, b"334"), ("*", b"501"), ("NOOP", b"250")),
      ["EHLO client.example", "AUTH LOGIN", "***", "*", "NOOP", "QUIT"], [(r"^501 ", "info")]),
    # the AUTH command and its continuation lines in one write, before any
    # 334 (a client that does not wait). Before the replies postern cannot
    # know where the SASL exchange ends: redacting the pipelined NOOP as
    # well is the safe side
    F("pipelined-auth",
      smtp_form((("AUTH LOGIN\r\n%s\r\n%s\r\nNOOP\r\n" % (LOGIN_USER, LOGIN_PW)).encode(), b"334"),
                (None, b"334"), (None, b"235"), (None, b"250")),
      ["EHLO client.example", "AUTH LOGIN", "***", "***", re.compile(r"^(NOOP|\*\*\*)$"), "QUIT"]),
    F("lowercase", smtp_form(("auth plain " + PLAIN_BAD, b"235")),
      ["EHLO client.example", re.compile(r"^(?i:auth plain) \*\*\*$"), "QUIT"]),
]


class Redaction(LogCase):
    """Every credential form of every protocol, through implicit TLS and
    through tls = off (the adapter runs on plaintext too when logging),
    log_level = debug, log file, stderr, capture files."""

    def run_forms(self, p, forms, names):
        jobs, meta = [], []
        for name in names:
            port, tls = p.port(name), self.tls_of(name)
            for f in forms:
                jobs.append(("%s/%s" % (name, f["name"]), (lambda fn=f["fn"], port=port, tls=tls: fn(port, tls))))
                meta.append((name, f))
        ports = run_parallel(jobs)
        for (name, f), port in zip(meta, ports):
            self.wait_end(p, name, port)
        sessions = []
        for (name, f), port in zip(meta, ports):
            start, lines = self.session(p, name, port)
            sessions.append((name, f, port, start, lines))
        p.stop()
        caps = self.captures()
        for name, f, port, start, lines in sessions:
            what = "%s/%s" % (name, f["name"])
            with self.subTest(form=what):
                self.assertCLines(lines, f["c"], f["exact"], what)
                for regex, level in f["s"]:
                    self.assertSLine(lines, regex, level, what)
                cap = caps.get(start.sid)
                self.assertIsNotNone(cap, "%s: no capture file for session %s in %s"
                                     % (what, start.sid, sorted(os.listdir(self.capdir))))
                self.assertEqual([t for _, d, t in cap["lines"] if d == "C"], self.c_lines(lines),
                                 "%s: capture C: lines differ from the log's" % what)
        return sessions

    def test_imap(self):
        p = self.start([("imaps", svc("imap")), ("imap", svc("imap", tls="off"))])
        self.run_forms(p, IMAP_FORMS, ["imaps", "imap"])
        self.assertNoLeak(p)
        # the real password of the logins that succeeded: in no command line
        for name, data in self.outputs(p).items():
            self.assertNotIn(b"alice " + GOOD_PW.encode(), data, name)
            self.assertNotIn(b'"' + GOOD_PW.encode() + b'"', data, name)

    def test_pop3(self):
        p = self.start([("pop3s", svc("pop3")), ("pop3", svc("pop3", tls="off"))])
        self.run_forms(p, POP3_FORMS, ["pop3s", "pop3"])
        self.assertNoLeak(p)
        for name, data in self.outputs(p).items():
            self.assertNotIn(b"PASS " + GOOD_PW.encode(), data, name)

    def test_smtp(self):
        fake = Fake("smtp", ehlo=FAKE_SMTP_EHLO)
        self.addCleanup(fake.stop)
        # this one logs to stderr (the default) rather than to a file
        p = self.start([("smtps", svc("smtp", backend=fake.address)),
                        ("smtp", svc("smtp", tls="off", backend=fake.address))], logfile=False)
        self.run_forms(p, SMTP_FORMS, ["smtps", "smtp"])
        self.assertIn(" C: AUTH PLAIN ***", p.stderr())
        self.assertNoLeak(p)
        # redaction is of the log only: the backend got every credential as sent
        got = fake.received()
        for wire in ("AUTH PLAIN " + PLAIN_BAD, "AUTH LOGIN " + LOGIN_USER, "AUTH XOAUTH2 " + XOAUTH,
                     "\r\n" + PLAIN_BAD + "\r\n", "\r\n" + LOGIN_USER + "\r\n", "\r\n" + LOGIN_PW + "\r\n",
                     "\r\n*\r\n"):
            self.assertIn(wire.encode(), got, "the backend did not get %r unchanged" % wire)


# ---------------------------------------------------------------- 2. log content


class LogContent(LogCase):
    def imaplib_session(self, p, name):
        m = imaplib_client(p.port(name), self.tls_of(name))
        lp = local_port_of(m)
        self.assertEqual(m.login("alice", GOOD_PW)[0], "OK")
        typ, data = m.select("INBOX", readonly=True)
        self.assertEqual(typ, "OK")
        typ, data = m.fetch("1", "(BODY.PEEK[])")
        self.assertEqual(typ, "OK")
        body = data[0][1]
        self.assertIn(b"This is the first message.", body)
        m.logout()
        self.wait_end(p, name, lp)
        return lp, len(body)

    def test_untagged_only_at_debug(self):
        for level in ("info", "debug"):
            with self.subTest(log_level=level):
                p = self.start([("imaps", svc("imap"))], level=level, capture=False)
                lp, n = self.imaplib_session(p, "imaps")
                _, lines = self.session(p, "imaps", lp)
                self.assertCLines(lines, [re.compile(r"^\w+ LOGIN alice \*\*\*$"),
                                          re.compile(r"^\w+ SELECT INBOX$|^\w+ EXAMINE INBOX$"),
                                          re.compile(r"^\w+ FETCH 1 \(BODY\.PEEK\[\]\)$"),
                                          re.compile(r"^\w+ LOGOUT$")], exact=False, what=level)
                tagged = self.assertSLine(lines, r"^\w+ OK .*Logged in", "info", level)
                self.assertTrue(tagged)
                self.assertSLine(lines, r"^\w+ OK ", "info", level)
                untagged = [ln for ln in self.s_lines(lines) if re.match(r"^[*+]", self.text(ln))]
                if level == "info":
                    self.assertEqual(untagged, [], "untagged/continuation S: lines at log_level=info")
                else:
                    self.assertSLine(lines, r"^\* \d+ EXISTS$", "debug", level)
                    self.assertSLine(lines, r"^\* 1 FETCH \(.*BODY\[\] \{%d bytes\}.*\)$" % n, "debug", level)
                    for ln in untagged:
                        self.assertEqual(ln.level, "debug", ln.raw)
                p.stop()
                for name, data in self.outputs(p).items():
                    self.assertNotIn(b"This is the first message", data, "message body in %s" % name)
                    self.assertNotIn(b"Subject: Hello 1", data, "message header in %s" % name)

    def test_long_command_is_cut_visibly(self):
        """A command whose log line would pass the limit (here, one with 300
        literals) is logged cut, ending in "...", and framing holds."""
        p = self.start([("imaps", svc("imap"))], capture=False)
        c = Conn(p.port("imaps"), True)
        imap_greet(c)
        parts = "".join("x%03d {1+}\r\ny " % i for i in range(300))
        _, tagged = c.imap("a1", "SEARCH OR " + parts + "ALL")
        self.assertTrue(tagged.startswith(b"a1 "), tagged)
        _, tagged = c.imap("a2", "NOOP")
        self.assertTrue(tagged.startswith(b"a2 OK"), tagged)
        imap_bye(c)
        _, lines = self.session(p, "imaps", c.local_port)
        a1 = [self.text(ln) for ln in lines if re.match(r"^C: a1 ", ln.msg or "")]
        self.assertEqual(len(a1), 1, [ln.raw for ln in lines])
        self.assertTrue(a1[0].endswith("..."), a1[0])
        self.assertLessEqual(len(a1[0]), 1024)
        self.assertTrue(a1[0].startswith("a1 SEARCH OR x000 {1 bytes} x001 {1 bytes}"), a1[0])
        self.assertTrue(any(self.text(ln) == "a2 NOOP" for ln in lines if (ln.msg or "").startswith("C: ")))

    def test_imap_append_and_fetch_literals(self):
        p = self.start([("imaps", svc("imap"))])
        box = "cmdlog%d" % time.monotonic_ns()
        body1 = (b"From: x@example.test\r\nSubject: literal one\r\n\r\n"
                 b"a9 LOGIN x SECRETBODY\r\nz9 LOGOUT\r\n* 99 EXISTS\r\n")
        body2 = b"Subject: literal two\r\n\r\na8 AUTHENTICATE PLAIN SECRETBODY2\r\n"
        c = Conn(p.port("imaps"), True)
        try:
            imap_greet(c)
            expect(c.imap("l1", "LOGIN alice %s" % GOOD_PW)[1], b"l1 OK")
            expect(c.imap("c1", "CREATE %s" % box)[1], b"c1 OK")
            c.send("a5 APPEND %s {%d}\r\n" % (box, len(body1)))
            expect(c.line(), b"+")
            c.send(body1[:30])  # the literal in two segments
            time.sleep(0.1)
            c.send(body1[30:] + b"\r\n")
            expect(c.imap("a5")[1], b"a5 OK")
            c.send(b"a6 APPEND %s {%d+}\r\n" % (box.encode(), len(body2)) + body2 + b"\r\n")
            expect(c.imap("a6")[1], b"a6 OK")
            expect(c.imap("s1", "SELECT %s" % box)[1], b"s1 OK")
            resp, t = c.imap("f1", "FETCH 1:2 BODY.PEEK[]")
            expect(t, b"f1 OK")
            self.assertIn(b"{%d}\r\n" % len(body1) + body1, resp)
            self.assertIn(b"{%d}\r\n" % len(body2) + body2, resp)
            expect(c.imap("e1", "EXAMINE INBOX")[1], b"e1 OK")
            expect(c.imap("d1", "DELETE %s" % box)[1], b"d1 OK")
            imap_bye(c)
        finally:
            c.close()
        self.wait_end(p, "imaps", c.local_port)
        _, lines = self.session(p, "imaps", c.local_port)
        self.assertCLines(lines, ["l1 LOGIN alice ***", "c1 CREATE %s" % box,
                                  "a5 APPEND %s {%d bytes}" % (box, len(body1)),
                                  "a6 APPEND %s {%d bytes}" % (box, len(body2)),
                                  "s1 SELECT %s" % box, "f1 FETCH 1:2 BODY.PEEK[]", "e1 EXAMINE INBOX",
                                  "d1 DELETE %s" % box, "z LOGOUT"])
        self.assertSLine(lines, r"^\* 1 FETCH \(.*\{%d bytes\}.*\)$" % len(body1), "debug")
        self.assertSLine(lines, r"^\* 2 FETCH \(.*\{%d bytes\}.*\)$" % len(body2), "debug")
        self.assertSLine(lines, r"^\+", "debug")  # the continuation request for a5
        p.stop()
        for name, data in self.outputs(p).items():
            self.assertNotIn(b"SECRETBODY", data, "literal content in %s" % name)
            self.assertNotIn(b"a9 LOGIN", data, "literal content logged as a command in %s" % name)
            self.assertNotIn(b"* 99 EXISTS", data, "literal content logged as a reply in %s" % name)

    def test_imap_pipelined_P9(self):
        p = self.start([("imaps", svc("imap"))], capture=False)
        c = Conn(p.port("imaps"), True)
        try:
            imap_greet(c)
            expect(c.imap("l1", "LOGIN alice %s" % GOOD_PW)[1], b"l1 OK")
            cmds = ["e1 EXAMINE INBOX"]
            for i in range(2, 26):
                cmds.append(["p%d NOOP", "p%d FETCH 1 (UID RFC822.SIZE)", "p%d FETCH 2 BODY.PEEK[HEADER]",
                             "p%d STATUS INBOX (MESSAGES)"][i % 4] % i)
            c.send("".join(x + "\r\n" for x in cmds))  # one write
            # Dovecot may complete pipelined commands in any order
            want = {x.split()[0] for x in cmds}
            order, headers = [], 0
            while len(order) < len(cmds):
                ln = c.line()
                m = re.search(rb"\{(\d+)\}\r\n$", ln)
                if m:
                    lit = c.r.read(int(m.group(1)))
                    headers += b"Subject: 8bit:" in lit
                    continue
                tag = ln.split(b" ", 1)[0].decode()
                if tag in want:
                    expect(ln, tag.encode() + b" OK")
                    self.assertNotIn(tag, order)
                    order.append(tag)
            self.assertEqual(headers, sum("HEADER" in x for x in cmds))
            imap_bye(c)
        finally:
            c.close()
        self.wait_end(p, "imaps", c.local_port)
        _, lines = self.session(p, "imaps", c.local_port)
        self.assertCLines(lines, ["l1 LOGIN alice ***"] + cmds + ["z LOGOUT"])
        # every reply logged, in the order the client got them
        tags = [self.text(ln).split()[0] for ln in self.s_lines(lines)
                if re.match(r"^[elpz]\d* (OK|NO|BAD)", self.text(ln))]
        self.assertEqual(tags, ["l1"] + order + ["z"], "tagged S: lines")

    def test_pop3_multiline_sizes(self):
        p = self.start([("pop3s", svc("pop3"))])
        c = Conn(p.port("pop3s"), True)
        try:
            pop_greet(c)
            expect(pop_cmd(c, "USER alice"), b"+OK")
            expect(pop_cmd(c, "PASS " + GOOD_PW), b"+OK")
            list_first = expect(pop_cmd(c, "LIST"), b"+OK")
            list_body = pop_multiline(c)
            retr_first = expect(pop_cmd(c, "RETR 1"), b"+OK")
            retr_body = pop_multiline(c)
            self.assertIn(b"This is the first message.", retr_body)
            expect(pop_cmd(c, "QUIT"), b"+OK")
            c.drain()
        finally:
            c.close()
        self.wait_end(p, "pop3s", c.local_port)
        _, lines = self.session(p, "pop3s", c.local_port)
        self.assertCLines(lines, ["USER alice", "PASS ***", "LIST", "RETR 1", "QUIT"])
        for first, body in ((list_first, list_body), (retr_first, retr_body)):
            status = first.rstrip(b"\r\n").decode()
            hits = self.assertSLine(lines, r"^%s \{\d+ bytes\}$" % re.escape(status), "info")
            n = int(re.search(r"\{(\d+) bytes\}$", self.text(hits[-1])).group(1))
            # the body's size: with or without the terminating ".\r\n"
            self.assertIn(n, (len(body) - 3, len(body)), "%s: {N bytes} for a body of %d bytes (+ .CRLF)"
                          % (hits[-1].raw, len(body) - 3))
        p.stop()
        for name, data in self.outputs(p).items():
            self.assertNotIn(b"This is the first message", data, "RETR body in %s" % name)

    def test_smtp_data_pipelined_P9(self):
        p = self.start([("smtps", svc("smtp"))])
        marker = "BODYSECRET-%d" % time.monotonic_ns()

        def body(n):
            # with a dot line, command-looking lines and credentials
            return ("From: s@example.test\r\nTo: r@example.test\r\nSubject: pipelined %d\r\n\r\n"
                    ".leading dot\r\nMAIL FROM:<evil@example.test>\r\nAUTH PLAIN %s\r\nQUIT\r\n%s-%d\r\n"
                    % (n, PLAIN_BAD, marker, n)).encode()

        def stuffed(b):
            return b"\r\n".join((b"." + ln if ln.startswith(b".") else ln) for ln in b.split(b"\r\n"))

        b1, b2 = body(1), body(2)
        c = Conn(p.port("smtps"), True)
        try:
            expect(smtp_reply(c)[-1], b"220")
            expect(smtp_cmd(c, "EHLO client.example")[-1], b"250 ")
            c.send("MAIL FROM:<s1@example.test>\r\nRCPT TO:<r1@example.test>\r\nRCPT TO:<r2@example.test>\r\nDATA\r\n")
            for want in (b"250", b"250", b"250", b"354"):
                expect(smtp_reply(c)[-1], want)
            c.send(stuffed(b1) + b".\r\nRSET\r\nNOOP\r\n"
                   b"MAIL FROM:<s2@example.test>\r\nRCPT TO:<r3@example.test>\r\nDATA\r\n")
            for want in (b"250", b"250", b"250", b"250", b"250", b"354"):
                expect(smtp_reply(c)[-1], want)
            c.send(stuffed(b2) + b".\r\nQUIT\r\n")
            expect(smtp_reply(c)[-1], b"250")
            expect(smtp_reply(c)[-1], b"221")
            c.drain()
        finally:
            c.close()
        # both messages arrived intact: framing kept
        for i, b in ((1, b1), (2, b2)):
            meta, content = harness.wait_until(
                lambda i=i: next(((m, x) for m, x in env().smtp_messages() if ("%s-%d" % (marker, i)).encode() in x),
                                 None), msg="delivery %d" % i)
            self.assertEqual(content.rstrip(b"\r\n"), b.rstrip(b"\r\n"))
        self.assertEqual(meta["rcpt_tos"], ["r3@example.test"])
        self.wait_end(p, "smtps", c.local_port)
        _, lines = self.session(p, "smtps", c.local_port)
        size = re.compile(r"^\{(\d+) bytes\}$")
        self.assertCLines(lines, ["EHLO client.example", "MAIL FROM:<s1@example.test>", "RCPT TO:<r1@example.test>",
                                  "RCPT TO:<r2@example.test>", "DATA", size, "RSET", "NOOP",
                                  "MAIL FROM:<s2@example.test>", "RCPT TO:<r3@example.test>", "DATA", size, "QUIT"])
        sizes = [int(size.match(t).group(1)) for t in self.c_lines(lines) if size.match(t)]
        for n, b in zip(sizes, (b1, b2)):
            self.assertLessEqual(abs(n - len(stuffed(b))), 5,
                                 "{%d bytes} for a DATA body of %d bytes" % (n, len(stuffed(b))))
        self.assertSLine(lines, r"^354 ", None)
        self.assertSLine(lines, r"^250 ", "info")
        p.stop()
        for name, data in self.outputs(p).items():
            self.assertNotIn(marker.encode(), data, "DATA body in %s" % name)
            self.assertNotIn(b"evil@example.test", data, "DATA body in %s" % name)
            self.assertNotIn(b".leading dot", data, "DATA body in %s" % name)
        self.assertNoLeak(p)

    def test_smtp_bdat(self):
        fake = Fake("smtp", ehlo=FAKE_SMTP_EHLO)
        self.addCleanup(fake.stop)
        p = self.start([("smtps", svc("smtp", backend=fake.address))])
        chunk1 = b"Subject: chunked\r\n\r\nQUIT\r\nRSET\r\nCHUNKSECRET one\r\n"
        chunk2 = b"AUTH PLAIN " + PLAIN_BAD.encode() + b"\r\nCHUNKSECRET two\r\n"
        c = Conn(p.port("smtps"), True)
        try:
            expect(smtp_reply(c)[-1], b"220")
            ehlo = smtp_cmd(c, "EHLO client.example")
            self.assertIn("CHUNKING", smtp_keywords(ehlo))
            expect(smtp_cmd(c, "MAIL FROM:<a@example.test>")[-1], b"250")
            expect(smtp_cmd(c, "RCPT TO:<b@example.test>")[-1], b"250")
            c.send(b"BDAT %d\r\n" % len(chunk1) + chunk1 + b"BDAT %d LAST\r\n" % len(chunk2) + chunk2)
            expect(smtp_reply(c)[-1], b"250 2.0.0 %d octets" % len(chunk1))
            expect(smtp_reply(c)[-1], b"250 2.0.0 %d octets" % len(chunk2))
            expect(smtp_cmd(c, "QUIT")[-1], b"221")
            c.drain()
        finally:
            c.close()
        self.assertIn(b"BDAT %d\r\n" % len(chunk1) + chunk1 + b"BDAT %d LAST\r\n" % len(chunk2) + chunk2,
                      fake.received(), "BDAT chunks not relayed byte for byte")
        self.wait_end(p, "smtps", c.local_port)
        _, lines = self.session(p, "smtps", c.local_port)
        self.assertCLines(lines, ["EHLO client.example", "MAIL FROM:<a@example.test>", "RCPT TO:<b@example.test>",
                                  "BDAT %d" % len(chunk1), "BDAT %d LAST" % len(chunk2), "QUIT"])
        p.stop()
        for name, data in self.outputs(p).items():
            self.assertNotIn(b"CHUNKSECRET", data, "BDAT chunk in %s" % name)
        self.assertNoLeak(p)

    def test_json(self):
        p = self.start([("imaps", svc("imap"))], log_format="json", capture=False)
        c = Conn(p.port("imaps"), True)
        try:
            imap_greet(c)
            expect(c.imap("a1", "AUTHENTICATE PLAIN " + PLAIN_GOOD)[1], b"a1 OK")
            expect(c.imap("a2", "LOGIN alice " + PW)[1], b"a2 BAD")  # already authenticated
            expect(c.imap("a3", "NOOP")[1], b"a3 OK")
            imap_bye(c)
        finally:
            c.close()
        client = "127.0.0.1:%d" % c.local_port

        def objs():
            out = []
            with open(p.logfile, encoding="utf-8") as f:
                text = f.read()
            for raw in text[: text.rfind("\n") + 1].splitlines():
                try:
                    out.append(json.loads(raw))
                except ValueError:
                    raise AssertionError("not a JSON line: %r" % raw)
            return out

        harness.wait_until(lambda: any(o.get("client") == client and o.get("event") == "end" for o in objs()),
                           msg="json end line")
        mine = [o for o in objs() if o.get("client") == client]
        start = [o for o in mine if o.get("event") == "start"][0]
        cmds = [o for o in mine if o.get("event") == "command"]
        replies = [o for o in mine if o.get("event") == "reply"]
        self.assertEqual([o.get("line") for o in cmds],
                         ["a1 AUTHENTICATE PLAIN ***", "a2 LOGIN alice ***", "a3 NOOP", "z LOGOUT"], mine)
        for o in cmds + replies:
            for k in ("ts", "level", "service", "session", "client", "line"):
                self.assertIn(k, o, o)
            self.assertRegex(o["ts"], "^%s$" % TS)
            self.assertEqual(o["service"], "imaps", o)
            self.assertEqual(o["session"], start["session"], o)
            self.assertNotIn("C:", o["line"][:2], o)
        self.assertTrue([o for o in replies if o["line"].startswith("a1 OK") and o["level"] == "info"], replies)
        self.assertTrue([o for o in replies if o["line"].startswith("* BYE") and o["level"] == "debug"], replies)
        self.assertTrue(all(o["level"] == "info" for o in cmds), cmds)
        p.stop()
        self.assertNoLeak(p)


# ---------------------------------------------------------------- 3. capture_dir, L2


def ts_compact(ts):
    """2026-11-21T22:40:01.050Z -> 20261121T224001Z"""
    return ts[:19].replace("-", "").replace(":", "") + "Z"


class Capture(LogCase):
    def test_L2_start_warnings(self):
        """A loud warn line at start for log_commands and for capture_dir,
        before any session."""
        for kind in ("log_commands", "capture_dir"):
            with self.subTest(kind=kind):
                p = self.start([("imaps", svc("imap"))], level="warn", log_commands=kind == "log_commands",
                               capture=kind == "capture_dir")
                text = p.log_text()
                warns = [w for w in p.find(level="warn") if w.who == "postern"]
                if kind == "log_commands":
                    hits = [w for w in warns if "log_commands" in w.msg]
                else:
                    hits = [w for w in warns if self.capdir in w.msg and "capture" in w.msg]
                self.assertTrue(hits, "no warn line about %s at start:\n%s" % (kind, text[-3000:]))
                other = "capture_dir" if kind == "log_commands" else "log_commands"
                self.assertFalse([w for w in warns if other in w.msg and kind not in w.msg],
                                 "a warning about %s, which is off:\n%s" % (other, text[-3000:]))
                p.stop()

    def test_capture_file_format_and_mode(self):
        keylog = os.path.join(env().tmp, "cmdlog-keys-%d.log" % time.monotonic_ns())
        # umask 0: postern must ask for 0600 itself, not rely on the umask
        p = self.start([("imaps", svc("imap"))], level="info", global_={"keylog": keylog}, umask=0)
        c = Conn(p.port("imaps"), True)
        try:
            imap_greet(c)
            expect(c.imap("a1", "LOGIN alice {%d+}\r\n%s" % (len(GOOD_PW), GOOD_PW))[1], b"a1 OK")
            expect(c.imap("a2", "EXAMINE INBOX")[1], b"a2 OK")
            resp, t = c.imap("a3", "FETCH 1 BODY.PEEK[]")
            expect(t, b"a3 OK")
            n = int(re.search(rb"\{(\d+)\}\r\n", resp).group(1))
            imap_bye(c)
        finally:
            c.close()
        end = self.wait_end(p, "imaps", c.local_port)
        start, lines = self.session(p, "imaps", c.local_port)
        p.stop()

        caps = self.captures()
        self.assertEqual(list(caps), [start.sid], "one capture file, named by the session id of the start line")
        cap = caps[start.sid]
        st = os.stat(cap["path"])
        self.assertTrue(stat.S_ISREG(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600, "capture file mode %o" % stat.S_IMODE(st.st_mode))
        self.assertTrue(os.path.exists(keylog), "keylog file not created")
        self.assertEqual(stat.S_IMODE(os.stat(keylog).st_mode), 0o600, "keylog mode")
        h = cap["header"]
        self.assertEqual(cap["name_service"], "imaps")
        self.assertEqual(h.group(1), "imaps")
        self.assertEqual(h.group(2), start.sid)
        self.assertEqual(h.group(3), "127.0.0.1:%d" % c.local_port)
        self.assertEqual(cap["name_ts"], ts_compact(h.group(4)), "file name time vs header start=")
        self.assertLessEqual(abs(time.mktime(time.strptime(h.group(4)[:19], "%Y-%m-%dT%H:%M:%S"))
                                 - time.mktime(time.strptime(start.ts[:19], "%Y-%m-%dT%H:%M:%S"))), 1,
                             "header start=%s vs start line %s" % (h.group(4), start.ts))
        # every line, both directions, debug ones too although log_level = info
        cl = [t for _, d, t in cap["lines"] if d == "C"]
        sl = [t for _, d, t in cap["lines"] if d == "S"]
        self.assertEqual(cl, ["a1 LOGIN alice ***", "a2 EXAMINE INBOX", "a3 FETCH 1 BODY.PEEK[]", "z LOGOUT"])
        self.assertEqual(cl, self.c_lines(lines))
        self.assertEqual(cap["lines"][0][1], "S", "the greeting comes first")
        self.assertRegex(sl[0], r"^\* OK .*Dovecot ready")
        self.assertTrue([t for t in sl if re.match(r"^\* \d+ EXISTS$", t)], sl)
        self.assertTrue([t for t in sl if re.match(r"^\* 1 FETCH \(.*BODY\[\] \{%d bytes\}.*\)$" % n, t)], sl)
        self.assertTrue([t for t in sl if t.startswith("a1 OK")], sl)
        self.assertTrue([t for t in sl if t.startswith("* BYE")], sl)
        self.assertFalse([ln for ln in self.s_lines(lines) if self.text(ln).startswith("*")],
                         "untagged lines in the log at log_level=info")
        stamps = [s for s, _, _ in cap["lines"]]
        self.assertEqual(stamps, sorted(stamps), "timestamps go backwards")
        self.assertGreaterEqual(stamps[0], h.group(4))
        self.assertIsNotNone(cap["end"], "no `# end reason=...` last line:\n%s" % cap["raw"][-500:].decode())
        self.assertEqual(cap["end"].group(1), end.fields["reason"])
        self.assertEqual(cap["end"].group(2), end.fields["in"])
        self.assertEqual(cap["end"].group(3), end.fields["out"])
        self.assertNotIn(b"This is the first message", cap["raw"])
        self.assertNotIn(GOOD_PW.encode() + b"\r", cap["raw"])
        self.assertNotIn(b"alice " + GOOD_PW.encode(), cap["raw"])

    def test_one_file_per_session_every_protocol(self):
        """Each service's own transcripts, named by service; a service
        without capture_dir/log_commands captures and logs nothing (L2:
        scoped per listener); capture_dir alone captures but logs no C:."""
        p = self.start([("imaps", svc("imap")), ("pop3s", svc("pop3")), ("smtps", svc("smtp")),
                        ("caponly", svc("imap", tls="off", log_commands="no")),
                        ("quiet", svc("imap", log_commands="no", capture_dir=None))],
                       log_commands=True)

        def imap(name):
            m = imaplib_client(p.port(name), self.tls_of(name))
            lp = local_port_of(m)
            m.login("alice", GOOD_PW)
            m.noop()
            m.logout()
            return name, lp

        def pop3():
            m = poplib_client(p.port("pop3s"), True)
            lp = local_port_of(m)
            m.user("alice")
            m.pass_(GOOD_PW)
            m.stat()
            m.quit()
            return "pop3s", lp

        def smtp():
            s = smtplib_client(p.port("smtps"), True)
            lp = local_port_of(s)
            s.ehlo("client.test")
            s.noop()
            s.quit()
            return "smtps", lp

        results = run_parallel([("imaps1", lambda: imap("imaps")), ("imaps2", lambda: imap("imaps")),
                                ("pop3s", pop3), ("smtps", smtp), ("caponly", lambda: imap("caponly")),
                                ("quiet", lambda: imap("quiet"))])
        sessions = {}
        for name, lp in results:
            self.wait_end(p, name, lp)
            sessions[(name, lp)] = self.session(p, name, lp)
        p.stop()
        caps = self.captures()
        self.assertEqual(len(caps), 5, "one file per captured session: %s" % sorted(os.listdir(self.capdir)))
        for (name, lp), (start, lines) in sessions.items():
            with self.subTest(service=name, port=lp):
                if name == "quiet":
                    self.assertNotIn(start.sid, caps)
                    self.assertEqual(lines, [], "C:/S: lines of a service without log_commands")
                    continue
                cap = caps.get(start.sid)
                self.assertIsNotNone(cap, "no capture for %s session %s" % (name, start.sid))
                self.assertEqual(cap["name_service"], name)
                self.assertEqual(cap["header"].group(1), name)
                self.assertEqual(cap["header"].group(3), "127.0.0.1:%d" % lp)
                self.assertIsNotNone(cap["end"])
                cl = [t for _, d, t in cap["lines"] if d == "C"]
                self.assertTrue(cl, "no C: lines in %s" % cap["path"])
                if name == "caponly":
                    self.assertEqual(self.c_lines(lines), [], "capture_dir alone put C: lines in the log")
                    self.assertTrue([t for t in cl if re.match(r"^\w+ LOGIN alice \*\*\*$", t)], cl)
                else:
                    self.assertEqual(cl, self.c_lines(lines))
                self.assertEqual(stat.S_IMODE(os.stat(cap["path"]).st_mode), 0o600)
        self.assertNoLeak(p)

    def test_capture_dir_not_a_directory(self):
        d = tempfile.mkdtemp(prefix="cmdlog-bad-", dir=env().tmp)
        regular = os.path.join(d, "file")
        with open(regular, "w") as f:
            f.write("a regular file\n")
        under_file = os.path.join(regular, "sub")   # ENOTDIR even for root
        missing = os.path.join(d, "missing", "dir")  # ENOENT
        p = self.start([("underfile", svc("imap", capture_dir=under_file)),
                        ("missing", svc("imap", capture_dir=missing))], level="info", log_commands=False)

        def session(name):
            m = imaplib_client(p.port(name), True)
            lp = local_port_of(m)
            self.assertEqual(m.login("alice", GOOD_PW)[0], "OK")
            self.assertEqual(m.noop()[0], "OK")
            m.logout()
            return name, lp

        results = run_parallel([("a", lambda: session("underfile")), ("b", lambda: session("underfile")),
                                ("c", lambda: session("missing"))])
        for name, lp in results:
            end = self.wait_end(p, name, lp)
            self.assertIn(end.fields.get("reason"), ("client-closed", "backend-closed"), end.raw)
        for name, path, n in (("underfile", under_file, 2), ("missing", missing, 1)):
            warns = [ln for ln in p.find(level="warn") if ln.service == name and "capture" in ln.msg]
            self.assertGreaterEqual(len(warns), n, "%s: want a warn line per session about the capture_dir:\n%s"
                                    % (name, p.log_text()[-3000:]))
        self.assertFalse(os.path.exists(missing), "postern created the missing capture_dir")
        self.assertTrue(os.path.isfile(regular))
        with open(regular) as f:
            self.assertEqual(f.read(), "a regular file\n")

    def test_capture_never_follows_a_symlink(self):
        """Capture files are created exclusively: a symlink planted under
        the name the next session will use is neither followed nor
        replaced (session ids are predictable enough to aim at; if the
        aim misses, the test says so and skips)."""
        p = self.start([("imaps", svc("imap"))], level="info", log_commands=False)
        target = os.path.join(os.path.dirname(self.capdir), "target")
        with open(target, "w") as f:
            f.write("untouched\n")

        def session():
            m = harness.IMAP4_SSL(p.port("imaps"))
            lp = local_port_of(m)
            self.assertEqual(m.login("alice", GOOD_PW)[0], "OK")
            m.logout()
            self.wait_end(p, "imaps", lp)
            return self.session(p, "imaps", lp)[0]

        first = session()
        try:
            sid = int(first.sid, 16)
        except ValueError:
            self.skipTest("session id %r is not hexadecimal" % first.sid)
        planted = set()
        now = time.time()
        for k in range(1, 4):
            for dt in range(0, 3):
                name = "imaps-%0*x-%s.txt" % (len(first.sid), sid + k,
                                               time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now + dt)))
                os.symlink(target, os.path.join(self.capdir, name))
                planted.add(name)
        second = session()
        name = "imaps-%s-%s.txt" % (second.sid, ts_compact(second.ts))
        if name not in planted:
            self.skipTest("could not predict the capture file name (%s)" % name)
        path = os.path.join(self.capdir, name)
        self.assertTrue(os.path.islink(path), "the planted symlink %s was replaced" % path)
        with open(target) as f:
            self.assertEqual(f.read(), "untouched\n", "postern wrote through a symlink")
        warns = [ln for ln in p.find(level="warn") if ln.sid == second.sid and "capture" in ln.msg]
        self.assertTrue(warns, "no warn line for the refused capture file:\n%s" % p.log_text()[-3000:])

    def test_capture_disk_full(self):
        """A write error (ENOSPC on a 16 KiB tmpfs, mounted in a private
        mount namespace for postern alone) stops the capture with one warn
        line; the session goes on, the command log too."""
        self.require_private_mount_ns()
        p = self.start([("imaps", svc("imap"))], level="info", launch=False)
        script = ("set -e; mount -t tmpfs -o size=16k,mode=0755 tmpfs %s; "
                  "dd if=/dev/zero of=%s/fill bs=4096 count=3 2>/dev/null; exec \"$@\""
                  % (shlex.quote(self.capdir), shlex.quote(self.capdir)))
        p.start(wrap=harness.private_mount_ns(script))
        c = Conn(p.port("imaps"), True)
        nnoop = 150  # about 9 KB of transcript: more than the one free page
        try:
            imap_greet(c)
            expect(c.imap("a1", "LOGIN alice " + GOOD_PW)[1], b"a1 OK")
            for i in range(nnoop):
                expect(c.imap("n%d" % i, "NOOP")[1], b"n%d OK" % i)
            imap_bye(c)
        finally:
            c.close()
        self.wait_end(p, "imaps", c.local_port)
        start, lines = self.session(p, "imaps", c.local_port)
        # the command log goes on after the capture stopped
        self.assertCLines(lines, ["a1 LOGIN alice ***"] + ["n%d NOOP" % i for i in range(nnoop)] + ["z LOGOUT"])
        stopped = [ln for ln in p.find(level="warn", contains="capture stopped") if ln.sid == start.sid]
        self.assertEqual(len(stopped), 1, "want exactly one `capture stopped` warn line:\n%s" % p.log_text()[-3000:])
        # the tmpfs is only visible in postern's namespace
        inside = "/proc/%d/root%s" % (p.pid, self.capdir)
        files = [f for f in os.listdir(inside) if f != "fill"]
        self.assertEqual(len(files), 1, files)
        with open(os.path.join(inside, files[0]), "rb") as f:
            data = f.read()
        self.assertTrue(data.startswith(b"# postern transcript service=imaps session=%s " % start.sid.encode()),
                        data[:200])
        self.assertNotIn(b"# end reason=", data)
        self.assertIn(b"C: a1 LOGIN alice ***", data)


# ---------------------------------------------------------------- 4. COMPRESS


class Compress(LogCase):
    def test_compress_hidden_and_refused(self):
        fake = Fake("imap", caps=FAKE_IMAP_CAPS, postlogin=FAKE_IMAP_POSTLOGIN)
        self.addCleanup(fake.stop)
        p = self.start([("logged", svc("imap", backend=fake.address)),
                        ("captured", svc("imap", tls="off", backend=fake.address, log_commands="no")),
                        ("plain", svc("imap", backend=fake.address, log_commands="no", capture_dir=None))],
                       capture=True)
        for name in ("logged", "captured", "plain"):
            with self.subTest(service=name):
                n0 = fake.count()
                c = Conn(p.port(name), self.tls_of(name))
                try:
                    greet = c.line()
                    resp1, t1 = c.imap("c1", "CAPABILITY")
                    resp2, t2 = c.imap("l1", "LOGIN alice " + GOOD_PW)
                    seen = greet + resp1 + resp2
                    lists = imap_cap_lists(seen)
                    self.assertEqual(len(lists), 4, seen)  # greeting, untagged, two tagged codes
                    if name == "plain":
                        # control: without logging/capture COMPRESS=DEFLATE passes
                        self.assertTrue(all("COMPRESS=DEFLATE" in x for x in lists), lists)
                        imap_bye(c)
                        continue
                    for x in lists:
                        self.assertNotIn("COMPRESS=DEFLATE", x, seen)
                        self.assertIn("IMAP4rev1", x)
                        self.assertIn("ID", x)
                        self.assertIn("LITERAL+", x)
                    self.assertNotIn(b"COMPRESS", seen)
                    _, t = c.imap("z1", "COMPRESS DEFLATE")
                    expect(t, b"z1 NO")
                    # still plaintext IMAP afterwards
                    expect(c.imap("n1", "NOOP")[1], b"n1 OK NOOP done")
                    imap_bye(c)
                finally:
                    c.close()
                got = fake.conn(n0).data()
                self.assertIn(b"n1 NOOP\r\n", got)
                self.assertNotIn(b"COMPRESS", got.upper(), "COMPRESS reached the backend")
                self.assertNotIn(b"z1 ", got)


# ---------------------------------------------------------------- 5. P6 forwarding data


FORWARD_FIELDS = ["x-originating-ip", "x-originating-port", "x-connected-ip", "x-connected-port", "x-proxy-ttl",
                  "x-session-id", "x-session-ext-id", "x-forward-for", "X-Originating-IP"]


class ForwardingP6(LogCase):
    """Always on (P6), checked with logging off on an implicit-TLS service
    and with log_commands on a tls = off one."""

    VARIANTS = (("nolog", dict(log_commands="no", capture_dir=None)), ("logged", dict(tls="off", log_commands="yes")))

    def services(self, proto, fake):
        return [(n, svc(proto, backend=fake.address, **kw)) for n, kw in self.VARIANTS]

    def test_imap_id(self):
        """Forwarding field names in ID (lines and literals, also split
        across reads) reach the backend defaced in place, "x" -> "y", same
        length; other IDs pass unchanged; an ID literal over 1024 bytes is
        never forwarded: a synchronising one is answered `TAG BAD ID string
        too long`, a LITERAL+ one ends the session with BYE."""
        fake = Fake("imap", caps="IMAP4rev1 ID LITERAL+ AUTH=PLAIN")
        self.addCleanup(fake.stop)
        p = self.start(self.services("imap", fake), capture=False, log_commands=False)
        big = b"v" * 1100
        for name, _ in self.VARIANTS:
            with self.subTest(service=name):
                n0 = fake.count()
                c = Conn(p.port(name), self.tls_of(name))
                try:
                    imap_greet(c)
                    expect(c.imap("i0", 'ID ("x-originating-ip" "1.2.3.4" "name" "x")')[1], b"i0 OK ID completed")
                    for i, field in enumerate(FORWARD_FIELDS, 1):
                        expect(c.imap("i%d" % i, 'ID ("name" "x" "%s" "1.2.3.4")' % field)[1], b"i%d OK" % i)
                    expect(c.imap("b1", 'ID ("name" "thunderbird" "version" "115.0")')[1], b"b1 OK")
                    expect(c.imap("b2", "ID NIL")[1], b"b2 OK")
                    # a field name inside a LITERAL+ literal, split across TCP segments / TLS records
                    for part in ('l1 ID ("name" "x" {16+}\r\nx-orig', 'inating-ip "1.2.3.4")\r\n'):
                        c.send(part)
                        time.sleep(0.15)
                    expect(c.imap("l1")[1], b"l1 OK")
                    # ... and in a synchronising literal
                    c.send('l2 ID ({16}\r\n')
                    expect(c.line(), b"+")
                    c.send('X-Connected-Port "993")\r\n')
                    expect(c.imap("l2")[1], b"l2 OK")
                    # over 1024 bytes: refused locally; a synchronising one is never sent
                    c.send('l4 ID ("name" {%d}\r\n' % len(big))
                    expect(c.line(), b"l4 BAD ID string too long")
                    expect(c.imap("n1", "NOOP")[1], b"n1 OK NOOP done")
                    # a LITERAL+ one has no framing every server agrees on: the session ends
                    c.send(b'l3 ID ("name" {%d+}\r\n' % len(big) + big + b')\r\n')
                    expect(c.line(), b"* BYE ID string too long; the literal of a refused command")
                    c.drain()
                finally:
                    c.close()
                got = fake.conn(n0).data()
                lines = got.split(b"\r\n")
                self.assertIn(b'i0 ID ("y-originating-ip" "1.2.3.4" "name" "x")', lines, got)
                for i, field in enumerate(FORWARD_FIELDS, 1):
                    want = b'i%d ID ("name" "x" "y%s" "1.2.3.4")' % (i, field[1:].encode())
                    self.assertIn(want, lines, "ID naming %s: want %r at the backend:\n%r" % (field, want, got))
                self.assertIn(b'l1 ID ("name" "x" {16+}\r\ny-originating-ip "1.2.3.4")\r\n', got)
                self.assertIn(b'l2 ID ({16}\r\ny-Connected-Port "993")\r\n', got)
                for key in (b"x-originating-", b"x-connected-", b"x-proxy-ttl", b"x-session-", b"x-forward-"):
                    self.assertNotIn(key, got.lower(), "a forwarding field name reached the backend")
                self.assertIn(b'b1 ID ("name" "thunderbird" "version" "115.0")', lines, "benign ID changed")
                self.assertIn(b"b2 ID NIL", lines)
                for bad in (b"l3 ", b"l4 ", big[:100]):
                    self.assertNotIn(bad, got, "an ID with a literal over 1024 bytes reached the backend")
                self.assertIn(b"n1 NOOP", lines)

    def test_smtp_xclient_xforward(self):
        fake = Fake("smtp", ehlo=FAKE_SMTP_EHLO)
        self.addCleanup(fake.stop)
        p = self.start(self.services("smtp", fake), capture=False, log_commands=False)
        for name, _ in self.VARIANTS:
            with self.subTest(service=name):
                n0 = fake.count()
                c = Conn(p.port(name), self.tls_of(name))
                try:
                    expect(smtp_reply(c)[-1], b"220")
                    for ehlo in ("EHLO client.example", "EHLO again.example"):
                        kw = smtp_keywords(smtp_cmd(c, ehlo))
                        self.assertNotIn("XCLIENT", kw)
                        self.assertNotIn("XFORWARD", kw)
                        for keep in ("PIPELINING", "8BITMIME", "AUTH", "SIZE"):
                            self.assertIn(keep, kw, "%s dropped from EHLO: %s" % (keep, kw))
                    for cmd in ("XCLIENT ADDR=1.2.3.4 NAME=spoofed.example", "xclient addr=1.2.3.4",
                                "XFORWARD ADDR=1.2.3.4 NAME=spoofed.example", "XCLIENT"):
                        r = smtp_cmd(c, cmd)
                        self.assertTrue(r[-1].startswith(b"550 5.7.1"), "%s -> %r" % (cmd, r))
                    expect(smtp_cmd(c, "NOOP")[-1], b"250 2.0.0 NOOP ok")
                    expect(smtp_cmd(c, "QUIT")[-1], b"221")
                    c.drain()
                finally:
                    c.close()
                got = fake.conn(n0).data()
                self.assertNotIn(b"XCLIENT", got.upper())
                self.assertNotIn(b"XFORWARD", got.upper())
                self.assertNotIn(b"1.2.3.4", got)
                self.assertIn(b"NOOP\r\n", got)
        # the logged variant logs the refusal as postern's own S: answer
        lines = [ln for ln in complete_lines(p) if ln.service == "logged"]
        self.assertTrue([ln for ln in lines if ln.event == "C:" and "XCLIENT" in ln.msg], "no C: XCLIENT line")
        self.assertTrue([ln for ln in lines if ln.event == "S:" and ln.msg.startswith("S: 550 5.7.1")],
                        "no S: 550 5.7.1 line")

    def test_pop3_xclient(self):
        fake = Fake("pop3", capa=["CAPA", "TOP", "UIDL", "USER", "XCLIENT", "SASL PLAIN"])
        self.addCleanup(fake.stop)
        p = self.start(self.services("pop3", fake), capture=False, log_commands=False)
        for name, _ in self.VARIANTS:
            with self.subTest(service=name):
                n0 = fake.count()
                c = Conn(p.port(name), self.tls_of(name))
                try:
                    pop_greet(c)
                    for cmd in ("XCLIENT ADDR=1.2.3.4", "xclient addr=1.2.3.4"):
                        expect(pop_cmd(c, cmd), b"-ERR")
                    expect(pop_cmd(c, "NOOP"), b"+OK NOOP done")
                    expect(pop_cmd(c, "QUIT"), b"+OK")
                    c.drain()
                finally:
                    c.close()
                got = fake.conn(n0).data()
                self.assertNotIn(b"XCLIENT", got.upper())
                self.assertNotIn(b"1.2.3.4", got)
                self.assertIn(b"NOOP\r\n", got)
