"""Helpers for the `tls = starttls` integration tests (issue 3).

- StarttlsCase: a PosternTestCase whose postern is shared by every test of
  the class (started in setUpClass, checked after every test, stopped and
  sanitizer-checked in tearDownClass), to keep the suite fast.
- Client: a raw plaintext connection that can be upgraded to TLS on the same
  socket after the server's STARTTLS/STLS reply, with "read what arrives
  within a quiet period" helpers.
- FakeBackend: tiny scripted IMAP/POP3/SMTP servers that record every byte
  postern forwards to them (P4, S8 "never forwarded"), can push unsolicited
  bytes on demand (P3), and advertise what the real servers of the run do not
  (their own STARTTLS/LOGINDISABLED/STLS, AUTH, PIPELINING, CHUNKING).
- Wire texts fixed by the issue, capability parsers, a ClientHello generator,
  Dovecot log and mailbox helpers.

This module only uses harness.py's public API; it does not change it.

Item ids (S8, C9, P5, ...) are those of tests/security-checklist.md.
"""

import base64
import os
import re
import select
import socket
import ssl
import threading
import time

import harness
from harness import ASAN, SLOW, Postern, PosternTestCase, Reader, client_context, env, plain_connect, svc

# moved to harness; still importable from here for imports written before
client_hello = harness.client_hello
read_to_close = harness.read_to_close

# seconds of silence after which "nothing more comes" (scaled by SLOW)
QUIET = 0.4

# ---------------------------------------------------------------- wire texts (issue 3)

IMAP_BEGIN = b"OK Begin TLS negotiation now"
IMAP_PRIVACY = b"NO [PRIVACYREQUIRED] Use STARTTLS first"
IMAP_ARGS = b"BAD STARTTLS takes no arguments"
IMAP_ACTIVE = b"BAD TLS is already active"

POP3_BEGIN = b"+OK Begin TLS negotiation now"
POP3_REFUSED = b"-ERR Use STLS first (plaintext authentication is disabled)"
POP3_ARGS = b"-ERR STLS takes no arguments"
POP3_ACTIVE = b"-ERR TLS is already active"

SMTP_READY = b"220 2.0.0 Ready to start TLS"
SMTP_530 = b"530 5.7.0 Must issue a STARTTLS command first"
SMTP_ARGS = b"501 5.5.4 No parameters allowed"
SMTP_ACTIVE = b"503 5.5.1 TLS already active"
SMTP_EHLO_FIRST = b"503 5.5.1 EHLO first"
SMTP_TOO_LONG = b"500 5.5.2 Line too long"

LONG_LINE = 70 * 1024  # > 64 KiB


def starttls_svc(protocol, backend=None, **kw):
    """A `tls = starttls` service section (test certificate, Dovecot/SMTP
    backend unless backend= is given)."""
    return svc(protocol, backend=backend, tls="starttls", **kw)


# ---------------------------------------------------------------- shared postern


class StarttlsCase(PosternTestCase):
    """One postern for all tests of the class. Subclasses define
    make_services(cls) -> [(name, section dict)] and may start fake backends
    there with cls.fake(...)."""

    GLOBAL = None
    _shared = None
    _fakes = ()

    @classmethod
    def make_services(cls):
        raise NotImplementedError

    @classmethod
    def fake(cls, kind, **kw):
        b = FakeBackend(kind, **kw)
        cls._fakes.append(b)
        return b

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._fakes = []
        cls._shared = None
        try:
            cls._services = cls.make_services()
            cls._start_shared()
        except BaseException:
            cls._stop_fakes()
            raise

    @classmethod
    def _start_shared(cls):
        p = Postern(cls._services, cls.GLOBAL, name="postern-" + cls.__name__)
        cls._shared = p
        p.start()

    @classmethod
    def _stop_fakes(cls):
        for b in cls._fakes:
            b.stop()
        cls._fakes = []

    @classmethod
    def tearDownClass(cls):
        p, cls._shared = cls._shared, None
        try:
            if p is not None and p.proc is not None:
                if p.proc.poll() is None:
                    p.stop(expect=0)
                else:
                    p._close_files()
                if ASAN:
                    rep = p.sanitizer_report()
                    if rep:
                        raise AssertionError("sanitizer report in postern's stderr:\n" + rep[-8000:])
        finally:
            cls._stop_fakes()

    def setUp(self):
        super().setUp()
        cls = type(self)
        if cls._shared is None or not cls._shared.running():
            # a previous test of the class crashed it (and failed): carry on
            # with a fresh one so that one crash is reported once
            cls._start_shared()
        self.p = cls._shared
        self._posterns.append(self.p)
        self.addCleanup(self._check_shared, self.p)

    def _check_shared(self, p):
        if ASAN:
            rep = p.sanitizer_report()
            if rep:
                raise AssertionError("sanitizer report in postern's stderr:\n" + rep[-8000:])
        if not p.running():
            raise AssertionError(
                "postern exited (status %s) during the test:\n%s" % (p.proc.returncode, p.stderr()[-6000:])
            )

    def port(self, name):
        return self.p.port(name)

    def client(self, name, **kw):
        c = Client(self.port(name), **kw)
        self.addCleanup(c.close)
        return c

    # --- log assertions (on complete lines only: harness.parse_log also
    # returns a line postern is still writing, e.g. "end in=0 o")
    def session_lines(self, client_port, event=None):
        return [ln for ln in complete_lines(self.p)
                if ln.sid and ln.client_port == client_port and (event is None or ln.event == event)]

    def assertSessionEnd(self, p, client_port, reason=None, timeout=5.0):
        deadline = time.monotonic() + timeout * SLOW
        while True:
            ends = [ln for ln in complete_lines(p) if ln.sid and ln.client_port == client_port and ln.event == "end"]
            if ends:
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    "no end line for client port %d within %ss; log:\n%s" % (client_port, timeout, p.log_text()[-6000:])
                )
            time.sleep(0.03)
        return super().assertSessionEnd(p, client_port, reason=reason, timeout=timeout)

    def assertDiscardLogged(self, client_port, nbytes, timeout=5.0):
        """postern logged a line containing `discarded` and the byte count
        for the session from client_port."""
        deadline = time.monotonic() + timeout * SLOW
        pat = re.compile(r"(?<![0-9])%d(?![0-9])" % nbytes)
        while True:
            lines = [ln for ln in self.session_lines(client_port) if "discarded" in ln.msg]
            if any(pat.search(ln.msg) for ln in lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(
                    "no log line with 'discarded' and %d for client port %d; session lines:\n%s"
                    % (nbytes, client_port, "\n".join(ln.raw for ln in self.session_lines(client_port)))
                )
            time.sleep(0.03)

    def assertStarttlsLogged(self, client_port, timeout=5.0):
        """start tls=off at accept, then an info `starttls tls=TLSv1.3 cipher=…`."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            st = self.session_lines(client_port, "start")
            up = self.session_lines(client_port, "starttls")
            if st and up:
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    "no start+starttls lines for client port %d; log:\n%s" % (client_port, self.p.log_text()[-4000:])
                )
            time.sleep(0.03)
        st, up = st[-1], up[-1]
        self.assertEqual(st.fields.get("tls"), "off", st.raw)
        self.assertNotIn("cipher", st.fields, st.raw)
        self.assertEqual(up.level, "info", up.raw)
        self.assertEqual(up.fields.get("tls"), "TLSv1.3", up.raw)
        self.assertRegex(up.fields.get("cipher", ""), r"^TLS_\w+$", up.raw)
        self.assertEqual(up.sid, st.sid, up.raw)
        return st, up


def complete_lines(p):
    """postern's parsed log lines, without a last line still being written."""
    text = p.log_text()
    return harness.parse_log(text[: text.rfind("\n") + 1])


# ---------------------------------------------------------------- client


class Client:
    """A plaintext connection that can switch to TLS on the same socket."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.sock = plain_connect(port, host, timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.raw = self.sock
        self.timeout = timeout * SLOW
        self.r = Reader(self.sock)
        self.local_port = self.sock.getsockname()[1]
        self.tls = False

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self):
        return self.r.readline()

    def lines(self, n):
        return [self.r.readline() for _ in range(n)]

    def cmd(self, data):
        """send, then read one line."""
        self.send(data)
        return self.line()

    def quiet(self, timeout=QUIET):
        """Whatever is buffered plus whatever arrives until `timeout`
        seconds pass without a byte (EOF also ends it)."""
        out = bytes(self.r.buf)
        self.r.buf.clear()
        self.sock.settimeout(timeout * SLOW)
        try:
            while True:
                try:
                    chunk = self.sock.recv(65536)
                except (socket.timeout, TimeoutError):
                    break
                except (ConnectionError, ssl.SSLError, OSError):
                    break
                if not chunk:
                    break
                out += chunk
        finally:
            try:
                self.sock.settimeout(self.timeout)
            except OSError:
                pass
        return out

    def raw_pending(self):
        """Bytes already waiting unread on the TCP socket (not consumed)."""
        r, _, _ = select.select([self.raw], [], [], 0)
        if not r:
            return b""
        t = self.raw.gettimeout()
        self.raw.setblocking(False)
        try:
            return self.raw.recv(65536, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            return b""
        finally:
            self.raw.settimeout(t)

    def starttls(self, sni="localhost", ctx=None):
        """Upgrade after the STARTTLS/STLS OK has been read: nothing else may
        have arrived in plaintext after it (P3)."""
        assert not self.tls, "TLS already active"
        if self.r.buf:
            raise AssertionError("plaintext after the STARTTLS reply: %r" % bytes(self.r.buf))
        extra = self.raw_pending()
        if extra:
            raise AssertionError("plaintext after the STARTTLS reply: %r" % extra[:300])
        ctx = ctx or client_context()
        self.sock = ctx.wrap_socket(self.raw, server_hostname=sni)
        self.sock.settimeout(self.timeout)
        self.r = Reader(self.sock)
        self.tls = True
        return self.sock

    def closed_by_peer(self, timeout):
        return harness.closed_by_peer(self.sock, timeout * SLOW)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        try:
            self.raw.close()
        except OSError:
            pass


# ---------------------------------------------------------------- protocol helpers


def imap_response(c, tag):
    """Lines up to and including the tagged one (following literals)."""
    return harness.imap_response(c.r, tag)


def imap_lines(resp):
    return [ln for ln in resp.split(b"\r\n") if ln]


def imap_tagged(resp, tag):
    """The tagged line for tag (without CRLF)."""
    for ln in imap_lines(resp):
        if ln.startswith(tag.encode() + b" "):
            return ln
    raise AssertionError("no tagged %s line in %r" % (tag, resp[-500:]))


CAP_LIST_RE = re.compile(rb"\[CAPABILITY ([^\]]*)\]|^\* CAPABILITY ?(.*)$", re.M | re.I)


def imap_cap_lists(data):
    """Every capability list in data (greeting/tagged codes and untagged
    CAPABILITY responses), each as a list of items in order."""
    out = []
    for m in CAP_LIST_RE.finditer(data):
        body = m.group(1) if m.group(1) is not None else m.group(2)
        out.append(body.rstrip(b"\r").decode().split())
    return out


def smtp_reply(c):
    """One (possibly multi-line) SMTP reply: list of lines without CRLF."""
    lines = []
    while True:
        ln = c.line()
        if not re.match(rb"^\d{3}[ -]", ln):
            raise AssertionError("not an SMTP reply line: %r (so far %r)" % (ln, lines))
        lines.append(ln.rstrip(b"\r\n"))
        if ln[3:4] == b" ":
            return lines


def smtp_keywords(lines):
    """EHLO keywords (upper case, first word) of a 250 reply, greeting line skipped."""
    return [ln[4:].split(b" ")[0].decode().upper() for ln in lines[1:]]


def check_smtp_multiline(tc, lines):
    for ln in lines[:-1]:
        tc.assertTrue(ln.startswith(b"250-"), lines)
    tc.assertTrue(lines[-1].startswith(b"250 "), lines)


def pop3_multiline(c):
    """Lines of a POP3 multi-line response body after its +OK line, until '.'."""
    out = []
    while True:
        ln = c.line()
        if ln == b".\r\n":
            return out
        out.append(ln.rstrip(b"\r\n"))


def pop3_capa(c):
    first = c.cmd(b"CAPA\r\n")
    if not first.startswith(b"+OK"):
        raise AssertionError("CAPA: %r" % first)
    return pop3_multiline(c)


def pop3_capa_names(lines):
    return [ln.split(b" ")[0].decode().upper() for ln in lines]


def sasl_plain(user, password):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()


# ---------------------------------------------------------------- Dovecot


class DovecotLog:
    """Read Dovecot's log from a point on (to see what reached it)."""

    def __init__(self):
        self.path = env().servers.dovecot.log
        self.offset = os.path.getsize(self.path) if os.path.exists(self.path) else 0

    def text(self):
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read().decode("utf-8", "replace")

    def wait_contains(self, needle, timeout=3.0):
        deadline = time.monotonic() + timeout * SLOW
        while time.monotonic() < deadline:
            if needle in self.text():
                return True
            time.sleep(0.05)
        return False


def dovecot_direct(user, password):
    """A logged-in plaintext Client straight to Dovecot (no postern)."""
    c = Client(env().imap_port)
    greet = c.line()
    assert greet.startswith(b"* OK"), greet
    c.send("l LOGIN %s %s\r\n" % (user, password))
    resp = imap_response(c, "l")
    assert imap_tagged(resp, "l").startswith(b"l OK"), resp
    return c


def mailbox_messages(user, password, mailbox="INBOX"):
    """Number of messages in the mailbox, and the raw text of all of them,
    read straight from Dovecot."""
    c = dovecot_direct(user, password)
    try:
        c.send("s EXAMINE %s\r\n" % mailbox)
        resp = imap_response(c, "s")
        n = int(re.search(rb"\* (\d+) EXISTS", resp).group(1))
        text = b""
        if n:
            c.send("f FETCH 1:* BODY.PEEK[]\r\n")
            text = imap_response(c, "f")
        c.send("z LOGOUT\r\n")
        imap_response(c, "z")
        return n, text
    finally:
        c.close()


def direct_greeting(port):
    c = Client(port)
    try:
        return c.line()
    finally:
        c.close()


# ---------------------------------------------------------------- fake backends

IMAP_FAKE_CAPS = "IMAP4rev1 STARTTLS LOGINDISABLED AUTH=PLAIN AUTH=LOGIN ID LITERAL+ SASL-IR"
IMAP_FAKE_POSTLOGIN = "IMAP4rev1 ID LITERAL+ IDLE MOVE"
POP3_FAKE_CAPA = ["CAPA", "TOP", "UIDL", "STLS", "RESP-CODES", "PIPELINING", "USER", "SASL PLAIN LOGIN"]
SMTP_FAKE_EHLO = ["PIPELINING", "AUTH PLAIN LOGIN", "STARTTLS", "8BITMIME", "AUTH=PLAIN LOGIN", "CHUNKING",
                  "SIZE 1000000"]


class FakeConn:
    def __init__(self, sock):
        self.sock = sock
        self.received = bytearray()
        self.lock = threading.Lock()
        self.closed = False

    def data(self):
        with self.lock:
            return bytes(self.received)

    def send(self, data):
        with self.lock:
            if self.closed:
                return
            try:
                self.sock.sendall(data)
            except OSError:
                pass


class FakeBackend(harness.FakeServer):
    """A scripted plaintext mail server on 127.0.0.1 (one thread per
    connection) that records everything it receives.

    kind 'imap': greeting `* OK [CAPABILITY caps] fake imap ready`; CAPABILITY
      answers `* CAPABILITY caps` and `TAG OK [CAPABILITY caps] …`; LOGIN and
      AUTHENTICATE succeed with `TAG OK [CAPABILITY postlogin] Logged in`;
      synchronizing literals get `+ go`; anything else `TAG OK CMD done`.
    kind 'pop3': `+OK fake pop3 ready`; CAPA lists capa; anything else `+OK CMD done`.
    kind 'smtp': `220 fake.test ESMTP`; EHLO lists ehlo; DATA reads the body
      to `.`; anything else `250 2.0.0 CMD ok`; QUIT closes.
    """

    def __init__(self, kind, caps=IMAP_FAKE_CAPS, postlogin=IMAP_FAKE_POSTLOGIN, capa=POP3_FAKE_CAPA,
                 ehlo=SMTP_FAKE_EHLO, greeting=None):
        self.kind = kind
        self.caps, self.postlogin, self.capa, self.ehlo = caps, postlogin, capa, ehlo
        if greeting is None:
            greeting = {
                "imap": "* OK [CAPABILITY %s] fake imap ready\r\n" % caps,
                "pop3": "+OK fake pop3 ready\r\n",
                "smtp": "220 fake.test ESMTP fake\r\n",
            }[kind]
        self.greeting = greeting.encode() if isinstance(greeting, str) else greeting
        self.name = "fake %s backend" % kind
        self.listen()

    def make_conn(self, sock):
        return FakeConn(sock)

    def close_conn(self, c):
        with c.lock:
            c.closed = True
        super().close_conn(c)

    def serve(self, c):
        buf = bytearray()

        def fill():
            try:
                d = c.sock.recv(65536)
            except OSError:
                d = b""
            if not d:
                raise EOFError
            with c.lock:
                c.received += d
            buf.extend(d)

        def readline():
            while b"\n" not in buf:
                fill()
            i = buf.index(b"\n")
            ln = bytes(buf[: i + 1])
            del buf[: i + 1]
            return ln

        def readn(n):
            while len(buf) < n:
                fill()
            d = bytes(buf[:n])
            del buf[:n]
            return d

        try:
            c.send(self.greeting)
            handler = getattr(self, "_" + self.kind)
            handler(c, readline, readn)
        except (EOFError, OSError):
            pass
        finally:
            with c.lock:
                c.closed = True
            try:
                c.sock.close()
            except OSError:
                pass

    def _imap(self, c, readline, readn):
        while True:
            words = read_imap_command(c, readline, readn).split()
            if not words:
                continue
            tag = words[0].decode("latin-1")
            cmd = words[1].decode("latin-1").upper() if len(words) > 1 else ""
            if self._imap_command(c, tag, cmd, words, readline):
                return

    def _imap_command(self, c, tag, cmd, words, readline):
        """Answer one IMAP command (words: the whole command, split); True
        once the session is over (LOGOUT)."""
        if cmd == "CAPABILITY":
            c.send(("* CAPABILITY %s\r\n%s OK [CAPABILITY %s] Capability done\r\n" % (self.caps, tag, self.caps)).encode())
        elif cmd in ("LOGIN", "AUTHENTICATE"):
            c.send(("%s OK [CAPABILITY %s] Logged in\r\n" % (tag, self.postlogin)).encode())
        elif cmd == "LOGOUT":
            c.send(("* BYE fake logging out\r\n%s OK Logout done\r\n" % tag).encode())
            return True
        else:
            c.send(("%s OK %s done\r\n" % (tag, cmd or "?")).encode())
        return False

    def _pop3(self, c, readline, readn):
        while True:
            line = readline()
            cmd = line.split(None, 1)[0].decode("latin-1").upper() if line.strip() else ""
            if cmd == "CAPA":
                c.send(("+OK capability list follows\r\n" + "".join(x + "\r\n" for x in self.capa) + ".\r\n").encode())
            elif cmd == "QUIT":
                c.send(b"+OK fake bye\r\n")
                return
            else:
                c.send(("+OK %s done\r\n" % cmd).encode())

    def _smtp(self, c, readline, readn):
        while True:
            words = readline().split()
            cmd = words[0].decode("latin-1").upper() if words else ""
            if self._smtp_command(c, cmd, words, readline, readn):
                return

    def _smtp_command(self, c, cmd, words, readline, readn):
        """Answer one SMTP command (words: the line, split); True once the
        session is over (QUIT)."""
        if cmd == "EHLO":
            ext = ["fake.test"] + list(self.ehlo)
            text = "".join("250%s%s\r\n" % ("-" if i < len(ext) - 1 else " ", x) for i, x in enumerate(ext))
            c.send(text.encode())
        elif cmd == "HELO":
            c.send(b"250 fake.test\r\n")
        elif cmd == "DATA":
            c.send(b"354 go ahead\r\n")
            while readline() not in (b".\r\n", b".\n"):
                pass
            c.send(b"250 2.0.0 queued\r\n")
        elif cmd == "QUIT":
            c.send(b"221 2.0.0 fake bye\r\n")
            return True
        else:
            c.send(("250 2.0.0 %s ok\r\n" % cmd).encode())
        return False


def read_imap_command(c, readline, readn):
    """One IMAP command as a fake backend gets it: a line, followed through
    its literals to the end of the command ("+ go" sent for each
    synchronizing {N}, none for a LITERAL+ {N+})."""
    line = readline()
    while True:
        m = re.search(rb"\{(\d+)(\+?)\}\r?\n$", line)
        if not m:
            return line
        if not m.group(2):
            c.send(b"+ go\r\n")
        line += readn(int(m.group(1)))
        line += readline()


# ---------------------------------------------------------------- TLS by hand


def tls_records(data):
    """Split data into complete TLS records [(type, body)]; returns (records,
    bytes consumed). Raises AssertionError on anything that is not a TLS
    record header (plaintext on the wire)."""
    recs, i = [], 0
    while i + 5 <= len(data):
        typ, major, length = data[i], data[i + 1], int.from_bytes(data[i + 3 : i + 5], "big")
        if typ not in (20, 21, 22, 23) or major != 3 or length > 18432:
            raise AssertionError("not a TLS record at offset %d: %r" % (i, bytes(data[i : i + 60])))
        if i + 5 + length > len(data):
            break
        recs.append((typ, bytes(data[i + 5 : i + 5 + length])))
        i += 5 + length
    if 0 < len(data) - i < 5 and data[i] not in (20, 21, 22, 23):
        raise AssertionError("not a TLS record at offset %d: %r" % (i, bytes(data[i:])))
    return recs, i


class TlsByHand:
    """A TLS client driven step by step over a raw socket (ssl.MemoryBIO), so
    that a test can look at every byte the server sends during the
    handshake and check it is all TLS records."""

    def __init__(self, raw, sni="localhost"):
        self.raw = raw
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = client_context().wrap_bio(self.inc, self.out, server_hostname=sni)
        self.wire = bytearray()  # every byte received, for record checks

    def flush(self):
        data = self.out.read()
        if data:
            self.raw.sendall(data)

    def step(self):
        """Advance the handshake; True when complete."""
        try:
            self.obj.do_handshake()
            self.flush()
            return True
        except ssl.SSLWantReadError:
            self.flush()
            return False

    def receive(self, quiet=QUIET):
        """Read what the server sends until `quiet` s of silence; check it is
        TLS records only; feed it to the TLS object. Returns the bytes."""
        got = bytearray()
        self.raw.settimeout(quiet * SLOW)
        while True:
            try:
                chunk = self.raw.recv(65536)
            except (socket.timeout, TimeoutError):
                break
            if not chunk:
                break
            got += chunk
        self.wire += got
        tls_records(self.wire)  # raises on plaintext
        self.inc.write(bytes(got))
        return bytes(got)

    def handshake(self, timeout=5.0):
        deadline = time.monotonic() + timeout * SLOW
        while not self.step():
            if time.monotonic() > deadline:
                raise AssertionError("TLS handshake did not complete")
            self.receive(0.1)
        return self

    def write(self, data):
        self.obj.write(data)
        self.flush()

    def read_until(self, marker, timeout=5.0):
        buf = bytearray()
        deadline = time.monotonic() + timeout * SLOW
        while marker not in buf:
            try:
                while True:
                    buf += self.obj.read(65536)
            except ssl.SSLWantReadError:
                pass
            if marker in buf:
                break
            if time.monotonic() > deadline:
                raise AssertionError("no %r inside TLS; got %r" % (marker, bytes(buf[-500:])))
            self.receive(0.1)
        return bytes(buf)
