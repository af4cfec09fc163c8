"""Helpers for the client-mode integration tests (backend_tls, PROXY
protocol, accept_proxy_from, backend STARTTLS).

- Pki: a test CA and certificates made with the openssl CLI, once per run:
  good, wrong name, wildcard, partial wildcard, CN-only IP, expired, not yet
  valid, untrusted (second CA), self-signed, and a leaf under an
  intermediate CA (with and without the chain).
- TlsDovecot: a second throwaway Dovecot with TLS (ssl = required): imaps
  and pop3s, STARTTLS/STLS on the plain ports, and PROXY-protocol listeners
  (haproxy = yes, plain and TLS). One per run, started on first use,
  stopped at exit. Its own small mailbox for alice.
- ScriptedServer: a tiny threaded server whose per-connection script can
  speak plaintext and then TLS on the same socket (ssl.MemoryBIO), and
  which records every byte it receives: raw on the wire, plaintext before
  TLS, decrypted after it; also the SNI and the handshake outcome.
- Scripts for fake IMAP/POP3/SMTP servers (implicit TLS, STARTTLS with
  every misbehaviour the checklist names) and PROXY header builders.
- ClientModeCase: StarttlsCase (one postern per class) that also owns
  ScriptedServers, plus assertions on sessions.

Uses harness.py, starttls_util.py and mailserver.py read-only.

Item ids (S8, C9, P5, ...) are those of tests/security-checklist.md.
"""

import atexit
import os
import re
import select
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time

import harness
import mailserver
from harness import SLOW, plain_connect
from starttls_util import StarttlsCase

USER, PASSWORD = "alice", "secret"
KEEP = os.environ.get("POSTERN_KEEP") == "1"

# ---------------------------------------------------------------- temp dir

_TMP = None


def tmpdir():
    """This module's own temp dir (removed at exit unless POSTERN_KEEP=1)."""
    global _TMP
    if _TMP is None:
        _TMP = tempfile.mkdtemp(prefix="pit-cm-", dir="/tmp")
        os.chmod(_TMP, 0o755)
        atexit.register(_cleanup)
    return _TMP


def _cleanup():
    global _DOVECOT
    d, _DOVECOT = _DOVECOT, None
    if d is not None:
        d.stop()
    if _TMP and not KEEP:
        shutil.rmtree(_TMP, ignore_errors=True)
    elif _TMP:
        print("clientmode: kept %s" % _TMP)


# ---------------------------------------------------------------- PKI

LEAF_EXT = (
    "basicConstraints=critical,CA:FALSE\n"
    "keyUsage=critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=serverAuth\n"
)
CA_EXT = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
GOOD_SAN = "DNS:localhost,IP:127.0.0.1,IP:::1,DNS:mail.example.test"

CA_CNF = """\
[ ca ]
default_ca = cm
[ cm ]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/newcerts
serial = {dir}/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[ anything ]
commonName = supplied
[ leaf ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {san}
"""


class Pki:
    """Certificates under dir. Attributes are paths; pair(name) gives
    (cert, key). ca: the CA given to postern; ca2: one that is not."""

    NAMES = ("good", "wrongname", "wildcard", "partial", "cnip", "cnonly", "expired", "notyet", "untrusted",
             "selfsigned", "viainter", "viainter_chain")

    def __init__(self, dir):
        self.dir = dir
        os.makedirs(dir, exist_ok=True)
        self._serial = 0x1000
        self._gen()

    def p(self, name):
        return os.path.join(self.dir, name)

    def _ossl(self, *args):
        r = subprocess.run(["openssl", *args], cwd=self.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise RuntimeError("openssl %s: %s" % (" ".join(args), r.stderr.decode(errors="replace")))
        return r.stdout

    def _key(self, name):
        self._ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name + ".key")

    def _root(self, name, cn):
        self._key(name)
        self._ossl("req", "-new", "-x509", "-key", name + ".key", "-subj", "/CN=" + cn, "-days", "30",
                   "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
                   "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", name + ".pem")

    def _signed(self, name, cn, ext, ca="ca"):
        self._key(name)
        self._ossl("req", "-new", "-key", name + ".key", "-subj", "/CN=" + cn, "-out", name + ".csr")
        with open(self.p(name + ".ext"), "w") as f:
            f.write(ext)
        self._serial += 1
        self._ossl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
                   "-set_serial", str(self._serial), "-days", "30", "-sha256", "-extfile", name + ".ext",
                   "-out", name + ".pem")

    def _dated(self, name, start, end):
        """A leaf with the good names, valid from start to end (openssl ca)."""
        cadir = self.p("ca-db")
        os.makedirs(os.path.join(cadir, "newcerts"), exist_ok=True)
        open(os.path.join(cadir, "index.txt"), "w").close()
        with open(os.path.join(cadir, "serial"), "w") as f:
            f.write("%X\n" % (0x5000 + len(name) + int(start[:4])))
        cnf = os.path.join(cadir, "ca.cnf")
        with open(cnf, "w") as f:
            f.write(CA_CNF.format(dir=cadir, san=GOOD_SAN))
        self._key(name)
        self._ossl("req", "-new", "-key", name + ".key", "-subj", "/CN=localhost", "-out", name + ".csr")
        self._ossl("ca", "-batch", "-config", cnf, "-cert", "ca.pem", "-keyfile", "ca.key", "-in", name + ".csr",
                   "-out", name + ".pem", "-startdate", start, "-enddate", end, "-extensions", "leaf", "-notext")

    def _gen(self):
        self._root("ca", "postern client-mode test CA")
        self._root("ca2", "some other CA")
        self._signed("inter", "postern client-mode intermediate", CA_EXT)
        self._signed("good", "localhost", LEAF_EXT + "subjectAltName=" + GOOD_SAN + "\n")
        self._signed("wrongname", "wrong.example.test", LEAF_EXT + "subjectAltName=DNS:wrong.example.test\n")
        self._signed("wildcard", "*.example.test", LEAF_EXT + "subjectAltName=DNS:*.example.test\n")
        self._signed("partial", "m*.example.test", LEAF_EXT + "subjectAltName=DNS:m*.example.test\n")
        # the IP only in the subject CN, not as an iPAddress SAN
        self._signed("cnip", "127.0.0.1", LEAF_EXT + "subjectAltName=DNS:localhost\n")
        # the name only in the subject CN, no subjectAltName at all
        self._signed("cnonly", "localhost", LEAF_EXT)
        self._dated("expired", "20200101000000Z", "20200102000000Z")
        self._dated("notyet", "20990101000000Z", "20990102000000Z")
        self._signed("untrusted", "localhost", LEAF_EXT + "subjectAltName=" + GOOD_SAN + "\n", ca="ca2")
        self._key("selfsigned")
        self._ossl("req", "-new", "-x509", "-key", "selfsigned.key", "-subj", "/CN=localhost", "-days", "30",
                   "-sha256", "-addext", "subjectAltName=" + GOOD_SAN, "-addext", "basicConstraints=critical,CA:FALSE",
                   "-addext", "extendedKeyUsage=serverAuth", "-out", "selfsigned.pem")
        self._signed("viainter", "localhost", LEAF_EXT + "subjectAltName=" + GOOD_SAN + "\n", ca="inter")
        with open(self.p("viainter_chain.pem"), "w") as f:
            f.write(open(self.p("viainter.pem")).read() + open(self.p("inter.pem")).read())
        shutil.copy(self.p("viainter.key"), self.p("viainter_chain.key"))
        for fn in os.listdir(self.dir):
            if fn.endswith((".csr", ".ext")):
                os.unlink(self.p(fn))
        self.ca = self.p("ca.pem")
        self.ca2 = self.p("ca2.pem")
        # sanity: the dated certificates really carry the dates asked for
        out = self._ossl("x509", "-in", "expired.pem", "-noout", "-enddate").decode()
        assert "2020" in out, out

    def pair(self, name):
        return self.p(name + ".pem"), self.p(name + ".key")


_PKI = None


def pki():
    global _PKI
    if _PKI is None:
        _PKI = Pki(os.path.join(tmpdir(), "pki"))
    return _PKI


# ---------------------------------------------------------------- TLS Dovecot

# Dovecot with TLS required; haproxy listeners trust loopback
TLS_DOVECOT_SETTINGS = """\
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_dh = </usr/share/dovecot/dh.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
haproxy_trusted_networks = 127.0.0.0/8 ::1
haproxy_timeout = 5s"""

PORT_NAMES = ("imap", "imaps", "imap_hap", "imaps_hap", "pop3", "pop3s")


def tls_dovecot_users():
    msgs = [
        mailserver.text_message(1, "client mode 1", b"First message, fetched through TLS.\n"),
        mailserver.eightbit_message(),
        mailserver.big_message(size=1024 * 1024, seed=7),
    ]
    return [(USER, PASSWORD, msgs)]


class TlsDovecot(mailserver.Dovecot):
    """Dovecot with ssl = required; ports in self.ports[name] (PORT_NAMES)."""

    def __init__(self, dir, cert, key):
        super().__init__(dir, tls_dovecot_users())
        self.cert, self.key = cert, key
        self.ports = {}
        self.v6 = harness.have_ipv6()

    def _free(self):
        for _ in range(50):
            port = mailserver.free_port()
            if port not in self.ports.values() and (not self.v6 or mailserver.port_free(port, "::1")):
                return port
        raise RuntimeError("no port free on both 127.0.0.1 and ::1")

    what = "TLS Dovecot"
    greeting = "Dovecot TLS ready."
    instance = "postern-cm"

    def auth(self):
        """How users log in: the passwords of its users file."""
        return mailserver.DOVECOT_PASSWORD_AUTH.format(dir=self.dir)

    def config(self):
        """mailserver's Dovecot template with TLS required and the
        PORT_NAMES listeners, on fresh ports."""
        self.ports = {}
        for n in PORT_NAMES:
            self.ports[n] = self._free()
        listen = "127.0.0.1, ::1" if self.v6 else "127.0.0.1"
        p = self.ports
        lst = mailserver.dovecot_listener
        imap = (lst("imap", p["imap"], listen) + lst("imaps", p["imaps"], listen, ssl=True)
                + lst("imap_haproxy", p["imap_hap"], "127.0.0.1", haproxy=True)
                + lst("imaps_haproxy", p["imaps_hap"], "127.0.0.1", ssl=True, haproxy=True))
        pop3 = lst("pop3", p["pop3"], listen) + lst("pop3s", p["pop3s"], listen, ssl=True)
        return mailserver.DOVECOT_CONF.format(
            instance="%s-%d" % (self.instance, os.getpid()), dir=self.dir, listen=listen,
            tls=TLS_DOVECOT_SETTINGS.format(cert=self.cert, key=self.key), auth=self.auth(),
            greeting=self.greeting,
            imap_listeners=imap, pop3_listeners=pop3)

    def wait_ready(self, timeout):
        mailserver.wait_greeting(("127.0.0.1", self.ports["imap"]), b"* OK", timeout, self.proc)
        mailserver.wait_greeting(("127.0.0.1", self.ports["pop3"]), b"+OK", timeout, self.proc)

    def log_size(self):
        try:
            return os.path.getsize(self.log)
        except OSError:
            return 0

    def log_since(self, offset):
        with open(self.log, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def wait_log(self, offset, regex, timeout=5.0):
        """The first match of regex in the log after offset (waits)."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            m = re.search(regex, self.log_since(offset))
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError("no %r in Dovecot's log; new lines:\n%s" % (regex, self.log_since(offset)[-3000:]))
            time.sleep(0.05)


_DOVECOT = None


def tls_dovecot():
    """The run's TLS Dovecot (started on first use, with pki().good)."""
    global _DOVECOT
    if _DOVECOT is None:
        cert, key = pki().pair("good")
        d = TlsDovecot(os.path.join(tmpdir(), "dovecot"), cert, key)
        d.prepare()
        d.start()
        # stopped with the run's servers, all signalled at once (the exit
        # handler's stop is then a no-op)
        _DOVECOT = harness.env().share(d)
    return _DOVECOT


def server_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def verified_context(ca=None):
    """A client context that trusts pki().ca."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca or pki().ca)
    return ctx


def _direct(port_name, fetch, n):
    """fetch(sock, n) over a verified TLS connection straight to the TLS
    Dovecot's port_name (no postern)."""
    d = tls_dovecot()
    raw = socket.create_connection(("127.0.0.1", d.ports[port_name]), timeout=10 * SLOW)
    s = verified_context().wrap_socket(raw, server_hostname="localhost")
    try:
        return fetch(s, n)
    finally:
        s.close()


def imap_direct_fetch(seq):
    """Raw untagged FETCH BODY.PEEK[] of message seq, straight from the TLS
    Dovecot over imaps."""
    return _direct("imaps", harness.imap_fetch_raw, seq)


def pop3_direct_retr(n):
    """Raw RETR n, straight from the TLS Dovecot over pop3s."""
    return _direct("pop3s", harness.pop3_retr_raw, n)


# ---------------------------------------------------------------- scripted servers


class TlsFailed(Exception):
    pass


class Conn:
    """One connection of a ScriptedServer. Plaintext first; start_tls()
    switches to TLS on the same socket. Records:
      raw     every byte received on the wire
      plain   bytes received before TLS (plaintext phase)
      app     bytes received inside TLS (decrypted)
      sni     the server name the peer sent (None: no SNI)
      handshake  None (no TLS attempted), "ok", or the error text
      tls_at  the offset in raw at which TLS started (len(raw) then)
    and `log` (what the script did, for failure messages)."""

    def __init__(self, sock, server):
        self.sock = sock
        self.server = server
        self.raw = bytearray()
        self.plain = bytearray()
        self.app = bytearray()
        self.sni = None
        self.handshake = None
        self.tls_at = None
        self.obj = None
        self.inc = self.out = None
        self.buf = bytearray()  # unread input of the current phase
        self.closed = False
        self.eof = False
        self.done = threading.Event()
        self.log = []
        self.premature = []  # notes by scripts that saw input too early
        self.proxy_header = None
        self.after_header = 0
        sock.settimeout(server.timeout)

    # --- wire
    def _recv_raw(self, timeout=None):
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            d = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            if timeout is not None:
                self.sock.settimeout(self.server.timeout)
            return None
        except OSError:
            d = b""
        if timeout is not None:
            self.sock.settimeout(self.server.timeout)
        if not d:
            self.eof = True
        self.raw += d
        return d

    def _flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def send(self, data):
        """Plaintext before TLS, encrypted after."""
        if isinstance(data, str):
            data = data.encode()
        if self.obj is None:
            self.sock.sendall(data)
        else:
            self.obj.write(data)
            self._flush()

    def send_split(self, parts, gap=0.15):
        """Send parts as separate TCP segments, gap seconds apart; notes in
        self.premature if the peer sent anything before the last part."""
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i, part in enumerate(parts):
            self.send(part)
            if i < len(parts) - 1:
                time.sleep(gap * SLOW)
                r, _, _ = select.select([self.sock], [], [], 0)
                if r or self.buf:
                    self.premature.append("input before part %d of %d" % (i + 2, len(parts)))

    # --- input of the current phase
    def _fill(self):
        if self.obj is None:
            d = self._recv_raw()
            if not d:
                raise EOFError
            self.plain += d
            self.buf += d
            return
        while True:
            try:
                d = self.obj.read(65536)
                if not d:
                    raise EOFError
                self.app += d
                self.buf += d
                return
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                raise EOFError
            r = self._recv_raw()
            if not r:
                raise EOFError
            self.inc.write(r)

    def readline(self):
        while b"\n" not in self.buf:
            self._fill()
        i = self.buf.index(b"\n")
        line = bytes(self.buf[: i + 1])
        del self.buf[: i + 1]
        return line

    def read_proxy_header(self):
        """If the input starts with a PROXY v1 line or a v2 header, read it
        (plaintext) and return its bytes; else None (input kept)."""
        while True:
            b = bytes(self.buf)
            if b.startswith(b"PROXY ") or (len(b) < 6 and b"PROXY "[: len(b)] == b):
                if b"\n" in b:
                    return self.readline()
            elif b.startswith(V2_SIG) or (len(b) < 12 and V2_SIG[: len(b)] == b):
                if len(b) >= 16:
                    n = 16 + struct.unpack("!H", b[14:16])[0]
                    if len(b) >= n:
                        del self.buf[:n]
                        return b[:n]
            else:
                return None
            if len(b) > 300:
                return None
            self._fill()

    def wait_input(self, timeout):
        """Read whatever arrives within timeout seconds (plain phase only
        consumes; returns the bytes)."""
        deadline = time.monotonic() + timeout
        got = bytearray(self.buf)
        self.buf.clear()
        while time.monotonic() < deadline and not self.eof:
            d = self._recv_raw(max(0.01, deadline - time.monotonic()))
            if d is None:
                break
            if self.obj is None:
                self.plain += d
            got += d
        return bytes(got)

    def drain(self, timeout=10.0):
        """Read and record until EOF (or timeout)."""
        deadline = time.monotonic() + timeout * SLOW
        while not self.eof and time.monotonic() < deadline:
            d = self._recv_raw(0.2)
            if d and self.obj is None:
                self.plain += d

    # --- TLS
    def start_tls(self, ctx=None):
        """Server side handshake. Bytes already buffered are fed to TLS
        (a real server would do the same with a pipelined ClientHello)."""
        ctx = ctx or self.server.ctx
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        if self.buf:
            self.inc.write(bytes(self.buf))
            self.buf.clear()
        self.tls_at = len(self.raw)
        obj = ctx.wrap_bio(self.inc, self.out, server_side=True)
        self.server._by_obj[id(obj)] = self
        self.obj = obj
        try:
            while True:
                try:
                    obj.do_handshake()
                    self._flush()
                    break
                except ssl.SSLWantReadError:
                    self._flush()
                    d = self._recv_raw()
                    if not d:
                        raise TlsFailed("EOF during the handshake")
                    self.inc.write(d)
        except (ssl.SSLError, OSError, TlsFailed) as e:
            try:
                self._flush()
            except OSError:
                pass
            self.handshake = str(e) or e.__class__.__name__
            self.log.append("handshake failed: %s" % self.handshake)
            raise TlsFailed(self.handshake)
        self.handshake = "ok"
        self.log.append("handshake ok %s" % obj.version())

    def rst(self):
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
        self.closed = True

    def close(self):
        if not self.closed:
            try:
                self.sock.close()
            except OSError:
                pass
            self.closed = True


class ScriptedServer(harness.FakeServer):
    """Listens on 127.0.0.1 (and ::1 with the same port when hosts says so);
    runs script(conn) in a thread per connection; records conns."""

    def __init__(self, script, cert=None, key=None, hosts=("127.0.0.1",), name="fake", timeout=10.0):
        self.script = script
        self.name = name
        self.timeout = timeout * SLOW
        self.ctx = None
        self._by_obj = {}
        if cert:
            self.ctx = server_context(cert, key)
            self.ctx.sni_callback = self._sni
        self.listen(hosts)

    def _sni(self, obj, name, ctx):
        c = self._by_obj.get(id(obj))
        if c is not None:
            c.sni = name
        return None

    def make_conn(self, sock):
        return Conn(sock, self)

    def serve(self, c):
        try:
            self.script(c)
        except (EOFError, OSError, TlsFailed, ssl.SSLError) as e:
            c.log.append("script ended: %r" % e)
        finally:
            c.close()
            c.done.set()

    def close_conn(self, c):
        try:
            c.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        c.close()


# ---------------------------------------------------------------- fake protocol servers

GREETING = {
    "imap": b"* OK fake imap over tls ready\r\n",
    "pop3": b"+OK fake pop3 over tls ready\r\n",
    "smtp": b"220 fake.test ESMTP fake over tls\r\n",
}


def serve_simple(c, kind, caps="IMAP4rev1 AUTH=PLAIN IDLE XPOSTTLS", capa=("USER", "TOP", "UIDL", "XPOSTTLS"),
                 ehlo=("PIPELINING", "AUTH PLAIN LOGIN", "8BITMIME", "XPOSTTLS")):
    """Answer commands on c in its current phase until QUIT/LOGOUT or EOF:
    IMAP tags get OK; POP3 +OK; SMTP 250 (DATA reads to the dot)."""
    while True:
        line = c.readline()
        words = line.split()
        if kind == "imap":
            if len(words) < 2:
                c.send(b"* BAD empty\r\n")
                continue
            tag, cmd = words[0], words[1].upper()
            if cmd == b"CAPABILITY":
                c.send(b"* CAPABILITY " + caps.encode() + b"\r\n" + tag + b" OK Capability done\r\n")
            elif cmd == b"LOGIN":
                c.send(tag + b" OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n")
            elif cmd == b"LOGOUT":
                c.send(b"* BYE fake logging out\r\n" + tag + b" OK Logout done\r\n")
                return
            else:
                c.send(tag + b" OK " + cmd + b" done\r\n")
        elif kind == "pop3":
            cmd = words[0].upper() if words else b""
            if cmd == b"CAPA":
                c.send(b"+OK capa\r\n" + b"".join(x.encode() + b"\r\n" for x in capa) + b".\r\n")
            elif cmd == b"QUIT":
                c.send(b"+OK fake bye\r\n")
                return
            else:
                c.send(b"+OK " + cmd + b" done\r\n")
        else:
            cmd = words[0].upper() if words else b""
            if cmd in (b"EHLO", b"HELO"):
                ext = [b"fake.test"] + [x.encode() for x in ehlo]
                c.send(b"".join(b"250" + (b"-" if i < len(ext) - 1 else b" ") + x + b"\r\n" for i, x in enumerate(ext)))
            elif cmd == b"DATA":
                c.send(b"354 go ahead\r\n")
                while c.readline() not in (b".\r\n", b".\n"):
                    pass
                c.send(b"250 2.0.0 queued\r\n")
            elif cmd == b"AUTH":
                c.send(b"235 2.7.0 Authentication successful\r\n")
            elif cmd == b"QUIT":
                c.send(b"221 2.0.0 fake bye\r\n")
                return
            else:
                c.send(b"250 2.0.0 " + cmd + b" ok\r\n")


def implicit_tls_script(kind, greeting=None, delay=0.0, **caps):
    """Implicit TLS server: (delay,) handshake, greeting, simple answers
    (caps: serve_simple's caps/capa/ehlo)."""

    def script(c):
        if delay:
            time.sleep(delay * SLOW)
        c.start_tls()
        c.send(greeting if greeting is not None else GREETING[kind])
        serve_simple(c, kind, **caps)

    return script


def plaintext_script(kind, greeting=None):
    """A plaintext server where TLS was expected (a MitM stripping TLS)."""

    def script(c):
        c.send(greeting if greeting is not None else GREETING[kind])
        serve_simple(c, kind)

    return script


def silent_script(c):
    """Accepts, never answers; records until EOF."""
    c.drain(30.0)


def rst_script(c):
    """Reads the first bytes (the ClientHello), then resets."""
    c._recv_raw()
    c.rst()


def record_script(greeting=b"* OK fake imap ready\r\n", tls=False, header=True):
    """Reads a PROXY header if one comes first (conn.proxy_header, or
    None), then (after a server handshake when tls) sends greeting and
    answers IMAP-like: `TAG CMD ...` gets `TAG OK CMD done`, LOGOUT a BYE
    and close. Records everything."""

    def script(c):
        if header:
            c.proxy_header = c.read_proxy_header()
        c.after_header = len(c.raw) - len(c.buf)
        if tls:
            c.start_tls()
        if greeting:
            c.send(greeting)
        while True:
            line = c.readline()
            words = line.split()
            if len(words) >= 2 and words[1].upper() == b"LOGOUT":
                c.send(b"* BYE bye\r\n" + words[0] + b" OK bye\r\n")
                return
            if len(words) >= 2 and re.match(rb"^[A-Za-z0-9.]+$", words[0]):
                c.send(words[0] + b" OK " + words[1] + b" done\r\n")

    return script


# ---------------------------------------------------------------- STARTTLS fakes

TLS_ALERT = b"\x15\x03\x03\x00\x02\x02\x28"  # fatal handshake_failure

STARTTLS_DEFAULTS = {
    "imap": dict(
        greeting=b"* OK fake imap ready\r\n",
        caps_pre="IMAP4rev1 STARTTLS LOGINDISABLED XPRETLS",
        caps_post="IMAP4rev1 AUTH=PLAIN IDLE XPOSTTLS",
        tls_reply=lambda tag: tag + b" OK Begin TLS negotiation now\r\n",
    ),
    "pop3": dict(
        greeting=b"+OK fake pop3 ready <1234.5678@fake.test>\r\n",
        caps_pre=("USER", "STLS", "XPRETLS"),
        caps_post=("USER", "TOP", "UIDL", "XPOSTTLS"),
        tls_reply=b"+OK Begin TLS negotiation now\r\n",
    ),
    "smtp": dict(
        greeting=b"220 fake.test ESMTP fake\r\n",
        caps_pre=("PIPELINING", "STARTTLS", "XPRETLS"),
        caps_post=("PIPELINING", "AUTH PLAIN LOGIN", "8BITMIME", "XPOSTTLS"),
        tls_reply=b"220 2.0.0 Ready to start TLS\r\n",
    ),
}


def starttls_script(kind, greeting=None, greeting_parts=None, pre=b"", caps_pre=None, caps_post=None,
                    cap_extra=b"", cap_split=None, tls_reply=None, inject=b"", after_ok="tls",
                    close_after_greeting=False):
    """A fake IMAP/POP3/SMTP server that offers STARTTLS/STLS in plaintext
    and then speaks TLS on the same socket.

    greeting / greeting_parts: the greeting (parts: sent as separate
      segments); close_after_greeting: close right after it (C12).
    pre: sent right after the greeting (C5 untagged junk).
    caps_pre / caps_post: capabilities before / after TLS (IMAP: string;
      POP3 CAPA and SMTP EHLO: sequences of lines).
    cap_extra: prepended to the pre-TLS capability response (C5).
    cap_split: a function bytes -> [parts] to send the pre-TLS capability
      response in segments (C11); conn.premature notes early input.
    tls_reply: the STARTTLS reply (IMAP: callable tag -> bytes).
    inject: sent in the same segment right after tls_reply (C4).
    after_ok: 'tls' (handshake), 'close' (C13), 'alert' (read the
      ClientHello, answer with a TLS alert, close; C13), 'plain' (keep
      talking plaintext, for refusals: anything postern sends then is
      recorded).
    Records conn.pre_cmds (every line received before TLS)."""
    d = STARTTLS_DEFAULTS[kind]
    greeting = d["greeting"] if greeting is None else greeting
    caps_pre = d["caps_pre"] if caps_pre is None else caps_pre
    caps_post = d["caps_post"] if caps_post is None else caps_post
    tls_reply = d["tls_reply"] if tls_reply is None else tls_reply

    def send_caps(c, data):
        if cap_split:
            c.send_split(cap_split(data))
        else:
            c.send(data)

    def script(c):
        c.pre_cmds = []
        if greeting_parts:
            c.send_split(greeting_parts)
        else:
            c.send(greeting)
        if pre:
            c.send(pre)
        if close_after_greeting:
            c.wait_input(0.5 * SLOW)
            return
        while True:
            line = c.readline()
            c.pre_cmds.append(line)
            words = line.split()
            if kind == "imap":
                if len(words) < 2:
                    c.send(b"* BAD what\r\n")
                    continue
                tag, cmd = words[0], words[1].upper()
            else:
                tag, cmd = b"", (words[0].upper() if words else b"")
            if cmd in (b"STARTTLS", b"STLS"):
                reply = tls_reply(tag) if callable(tls_reply) else tls_reply
                c.send(reply + inject)
                if after_ok == "plain":
                    continue
                if after_ok == "close":
                    return
                if after_ok == "alert":
                    c._recv_raw()
                    c.send_raw(TLS_ALERT)
                    return
                c.start_tls()
                break
            if kind == "imap":
                if cmd == b"CAPABILITY":
                    send_caps(c, cap_extra + b"* CAPABILITY " + caps_pre.encode() + b"\r\n" + tag
                              + b" OK Pre-login capabilities listed\r\n")
                elif cmd == b"LOGOUT":
                    c.send(b"* BYE bye\r\n" + tag + b" OK Logout\r\n")
                    return
                else:
                    c.send(tag + b" OK " + cmd + b" done in plaintext\r\n")
            elif kind == "pop3":
                if cmd == b"CAPA":
                    send_caps(c, cap_extra + b"+OK capability list follows\r\n"
                              + b"".join(x.encode() + b"\r\n" for x in caps_pre) + b".\r\n")
                elif cmd == b"QUIT":
                    c.send(b"+OK bye\r\n")
                    return
                else:
                    c.send(b"+OK " + cmd + b" done in plaintext\r\n")
            else:
                if cmd == b"EHLO":
                    ext = [b"fake.test greets you"] + [x.encode() for x in caps_pre]
                    send_caps(c, cap_extra + b"".join(b"250" + (b"-" if i < len(ext) - 1 else b" ") + x + b"\r\n"
                                                      for i, x in enumerate(ext)))
                elif cmd == b"QUIT":
                    c.send(b"221 bye\r\n")
                    return
                else:
                    c.send(b"250 " + cmd + b" done in plaintext\r\n")
        if kind == "imap":
            serve_simple(c, kind, caps=caps_post)
        elif kind == "pop3":
            serve_simple(c, kind, capa=caps_post)
        else:
            serve_simple(c, kind, ehlo=caps_post)

    return script


def split_lines(data):
    """Every line a segment; long lines also cut in the middle."""
    out = []
    for ln in data.splitlines(keepends=True):
        if len(ln) > 6:
            out += [ln[: len(ln) // 2], ln[len(ln) // 2:]]
        else:
            out.append(ln)
    return out


# ---------------------------------------------------------------- PROXY headers

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1(src, dst):
    """src, dst: (host, port)."""
    fam = "TCP6" if ":" in src[0] else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src[0], dst[0], src[1], dst[1])).encode()


def proxy_v2(src, dst, tlvs=b"", command=0x1):
    """PROXY v2: command 1 = PROXY, 0 = LOCAL (then no addresses unless
    src is given)."""
    if src is None:
        return V2_SIG + bytes([0x20 | command, 0x00]) + struct.pack("!H", len(tlvs)) + tlvs
    v6 = ":" in src[0]
    fam = 0x21 if v6 else 0x11
    f = socket.AF_INET6 if v6 else socket.AF_INET
    body = (socket.inet_pton(f, src[0]) + socket.inet_pton(f, dst[0]) + struct.pack("!HH", src[1], dst[1]))
    body += tlvs
    return V2_SIG + bytes([0x20 | command, fam]) + struct.pack("!H", len(body)) + body


def fmt_addr(host, port):
    """How postern's log shows an address."""
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


# ---------------------------------------------------------------- shared postern + assertions


class ClientModeCase(StarttlsCase):
    """One postern per class (StarttlsCase); cls.server(...) starts a
    ScriptedServer owned by the class."""

    @classmethod
    def server(cls, script, **kw):
        s = ScriptedServer(script, **kw)
        cls._fakes.append(s)
        return s

    @classmethod
    def _start_shared(cls):
        """As StarttlsCase's, but a listen port that another socket took
        since free_port() picked it (fake servers bind port 0 too) gets a
        new port and another try."""
        for attempt in range(4):
            try:
                return super()._start_shared()
            except AssertionError as e:
                p = cls._shared
                if p is not None:
                    p.kill()
                cls._shared = None
                if "Address already in use" not in str(e) or attempt == 3:
                    raise
                for _, d in cls._services:
                    host = d["listen"].rsplit(":", 1)[0]
                    d["listen"] = "%s:%d" % (host, harness.free_port(host.strip("[]")))

    def connect(self, name, source=None, host="127.0.0.1"):
        s = plain_connect(self.port(name), host=host, timeout=5.0, source=source)
        self.addCleanup(s.close)
        return s

    def session(self, client_port, timeout=5.0):
        """(start line, end line, every line) of the session from client_port,
        once it has ended."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            lines = self.session_lines(client_port)
            starts = [ln for ln in lines if ln.event == "start"]
            if starts:  # the latest session from the port: ports get reused
                lines = [ln for ln in lines if ln.sid == starts[-1].sid]
            ends = [ln for ln in lines if ln.event == "end"]
            if ends:
                return (starts[-1] if starts else None), ends[-1], lines
            if time.monotonic() > deadline:
                raise AssertionError("no end line for client port %d; log:\n%s"
                                     % (client_port, self.p.log_text()[-5000:]))
            time.sleep(0.03)

    def assertTlsFailureLogged(self, client_port, why_regex, timeout=5.0):
        """A warn line of the session with `TLS failed` and the reason, and
        the end line with reason=backend-tls-failed."""
        start, end, lines = self.session(client_port, timeout)
        self.assertEqual(end.fields.get("reason"), "backend-tls-failed", end.raw)
        warns = [ln for ln in lines if ln.level == "warn" and "TLS failed" in ln.msg]
        self.assertTrue(warns, "no warn line with 'TLS failed' for the session:\n%s"
                        % "\n".join(ln.raw for ln in lines))
        self.assertTrue(any(re.search(why_regex, ln.msg) for ln in warns),
                        "no %r in the TLS failure line(s):\n%s" % (why_regex, "\n".join(ln.raw for ln in warns)))
        return start, end, lines


def read_for(sock, seconds):
    """Whatever arrives within `seconds` (no EOF needed)."""
    deadline = time.monotonic() + seconds
    out = bytearray()
    sock.settimeout(0.05)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            continue
        except (ConnectionError, OSError):
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


CREDENTIAL_MARKERS = (b"LOGIN", b"AUTHENTICATE", b"USER ", b"PASS ", b"APOP", b"AUTH ", PASSWORD.encode(), b"XSECRET")


def credential_bytes(data):
    """The credential-bearing markers found in data (case-insensitive)."""
    up = bytes(data).upper()
    return [m for m in CREDENTIAL_MARKERS if m.upper() in up]
