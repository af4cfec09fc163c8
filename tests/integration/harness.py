"""Shared machinery for postern's integration tests.

run.py sets up one environment per run (certificates, a throwaway Dovecot and
SMTP server, reference fetches of the big message straight from Dovecot);
every test starts its own postern with its own config file in its own temp
dir through PosternTestCase.postern(), which stops it again (SIGTERM, exit 0
expected) and, when POSTERN_ASAN=1, fails the test on sanitizer reports.
"""

import contextlib
import hashlib
import os
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "servers"))
import mailserver  # noqa: E402

POSTERN = os.environ.get("POSTERN", os.path.join(ROOT, "build", "postern"))
ASAN = os.environ.get("POSTERN_ASAN") == "1"
# sanitizer builds are slower: scale waits (never the timeouts under test)
SLOW = 3.0 if ASAN else 1.0
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

USER, PASSWORD = "alice", "secret"
BIG_SEQ = 3  # the 20 MB message is message 3 in alice's INBOX
BIG_MIN = 20 * 1024 * 1024

# make test-offline (package builds): install nothing, and skip the tests
# that need Dovecot or aiosmtpd when they are missing.
OFFLINE = os.environ.get("POSTERN_OFFLINE") == "1"

ENV = None
_LIVE = set()  # postern processes not yet reaped, killed by kill_leftovers()


def kill_leftovers():
    """SIGKILL every postern a test started and did not stop (interrupted
    runs); by PID, never by name."""
    for p in list(_LIVE):
        p.kill()


def version():
    with open(os.path.join(ROOT, "GNUmakefile")) as f:
        m = re.search(r"^VERSION\s*:?=\s*(\S+)", f.read(), re.M)
    return m.group(1) if m else None


def have_ipv6():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


free_port = mailserver.free_port
recv_until = mailserver.recv_until


# ------------------------------------------------------------ environment


class Env:
    """Certificates and mail servers shared by all tests of one run."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.shared = []  # run-wide servers of some tests (share())
        self.certs = os.path.join(tmp, "certs")
        subprocess.run(
            [os.path.join(ROOT, "tests", "servers", "gen-certs.sh"), "test", self.certs],
            check=True,
        )
        c = lambda n: os.path.join(self.certs, n)  # noqa: E731
        self.ca = c("ca.pem")
        self.cert, self.key = c("server.pem"), c("server.key")
        self.cert2, self.key2 = c("server2.pem"), c("server2.key")
        self.other_cert, self.other_key = c("other.pem"), c("other.key")
        self.client_cert, self.client_key = c("client.pem"), c("client.key")
        self._direct = {}
        self.missing = missing_servers() if OFFLINE else None
        if self.missing:
            # make test-offline without the servers: only the tests that
            # need none run; backends are ports nobody listens on.
            self.servers = None
            self.imap_port, self.pop3_port, self.smtp_port = free_port(), free_port(), free_port()
            self.imap_socket = os.path.join(tmp, "no-imap.sock")
            return
        try:
            self.servers = mailserver.MailServers(os.path.join(tmp, "servers"), "test").start()
        except Exception as e:
            if not OFFLINE:
                raise
            # installed but unusable here (e.g. not root): as if missing
            self.missing = "working mail servers (%s: %s)" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            self.servers = None
            self.imap_port, self.pop3_port, self.smtp_port = free_port(), free_port(), free_port()
            self.imap_socket = os.path.join(tmp, "no-imap.sock")
            return
        d = self.servers.dovecot
        self.imap_port, self.pop3_port, self.imap_socket = d.imap_port, d.pop3_port, d.imap_socket
        self.smtp_port = self.servers.smtp.port

    def direct_big(self, proto):
        """sha256 and size of the raw FETCH/RETR response for the big message,
        fetched straight from Dovecot (no postern); computed once."""
        if proto not in self._direct:
            if proto == "imap":
                s = socket.create_connection(("127.0.0.1", self.imap_port), timeout=30)
                data = imap_fetch_raw(s, BIG_SEQ)
            else:
                s = socket.create_connection(("127.0.0.1", self.pop3_port), timeout=30)
                data = pop3_retr_raw(s, BIG_SEQ)
            s.close()
            self._direct[proto] = (hashlib.sha256(data).hexdigest(), len(data))
        return self._direct[proto]

    def smtp_messages(self):
        return self.servers.smtp.messages()

    def share(self, server):
        """SERVER (a started mailserver.ServerProcess) serves the rest of the
        run and is stopped with the run's mail servers."""
        self.shared.append(server)
        return server

    def stop(self):
        # every one signalled before any is waited for: a Dovecot takes a
        # second to stop
        for s in self.shared:
            s.terminate()
        if self.servers:
            self.servers.stop()
        for s in self.shared:
            s.stop()
        self.shared = []


def missing_servers():
    """The test servers this machine lacks, as a phrase naming their Debian
    packages; None when all are there."""
    lack = []
    if not (shutil.which("dovecot") or os.path.exists("/usr/sbin/dovecot")):
        lack.append("Dovecot (dovecot-imapd, dovecot-pop3d)")
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        lack.append("aiosmtpd (python3-aiosmtpd)")
    return " and ".join(lack) or None


def setup_env(tmp):
    global ENV
    ENV = Env(tmp)
    return ENV


def env():
    """The run's environment; created on first use when not run by run.py."""
    global ENV
    if ENV is None:
        import atexit

        tmp = tempfile.mkdtemp(prefix="pit-", dir="/tmp")
        os.chmod(tmp, 0o755)
        try:
            setup_env(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

        def _cleanup():
            kill_leftovers()
            ENV.stop()
            shutil.rmtree(tmp, ignore_errors=True)

        atexit.register(_cleanup)
    return ENV


# ------------------------------------------------------------ logs

LOG_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (error|warn|info|debug) (\S+) (.*)$")
FIELD_RE = re.compile(r"(\w+)=(\S*)")


class LogLine:
    def __init__(self, m, raw):
        self.raw = raw
        self.ts, self.level, self.who, rest = m.groups()
        self.service = self.sid = self.addr = None
        if "#" in self.who:
            self.service, self.sid = self.who.split("#", 1)
            self.addr, _, rest = rest.partition(" ")
        self.msg = rest
        self.event = rest.split(" ", 1)[0]
        self.fields = dict(FIELD_RE.findall(rest))

    @property
    def client_port(self):
        if self.addr and ":" in self.addr:
            try:
                return int(self.addr.rsplit(":", 1)[1])
            except ValueError:
                return None
        return None

    def __repr__(self):
        return self.raw


def parse_log(text):
    out = []
    for raw in text.splitlines():
        m = LOG_RE.match(raw)
        if m:
            out.append(LogLine(m, raw))
    return out


# ------------------------------------------------------------ config


def render_config(global_, services):
    """INI text. global_: dict; services: list of (name, dict) or a dict.
    Values that are lists are joined with spaces; None values are left out."""
    lines = []

    def section(name, kv):
        lines.append("[%s]" % name)
        for k, v in kv.items():
            if v is None:
                continue
            if isinstance(v, (list, tuple)):
                v = " ".join(str(x) for x in v)
            lines.append("%s = %s" % (k, v))
        lines.append("")

    if global_:
        section("global", global_)
    items = services.items() if isinstance(services, dict) else (services or [])
    for name, kv in items:
        section(name, kv)
    return "\n".join(lines)


def svc(protocol, port=None, backend=None, tls="implicit", host="127.0.0.1", **kw):
    """A service section dict with the test certificate and the matching
    Dovecot/SMTP backend by default."""
    e = env()
    if port is None:
        port = free_port(host)
    if backend is None:
        backend = {
            "imap": "127.0.0.1:%d" % e.imap_port,
            "pop3": "127.0.0.1:%d" % e.pop3_port,
            "smtp": "127.0.0.1:%d" % e.smtp_port,
            "raw": "127.0.0.1:%d" % e.imap_port,
        }[protocol]
    hostpart = "[%s]" % host if ":" in host else host
    d = {"protocol": protocol, "listen": "%s:%d" % (hostpart, port), "tls": tls}
    if tls != "off":
        d["cert"] = e.cert
        d["key"] = e.key
    d["backend"] = backend
    d.update(kw)
    return d


def listen_port(service_dict, i=0):
    addrs = service_dict["listen"]
    if isinstance(addrs, (list, tuple)):
        addrs = " ".join(addrs)
    return int(addrs.split()[i].rsplit(":", 1)[1])


# ------------------------------------------------------------ postern process


class Postern:
    """One postern process with its own directory, config file and stderr."""

    def __init__(self, services=None, global_=None, config_text=None, rlimit_nofile=None, name="postern"):
        e = env()
        self.dir = tempfile.mkdtemp(prefix="%s-" % name, dir=e.tmp)
        os.chmod(self.dir, 0o755)
        self.conf = os.path.join(self.dir, "postern.ini")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.stdout_path = os.path.join(self.dir, "stdout.log")
        self.pidfile = os.path.join(self.dir, "postern.pid")
        self.rlimit_nofile = rlimit_nofile
        self.proc = None
        self.expect_exit = 0
        self.exit_observed = False
        self.services = services
        self.global_ = None
        self.logfile = None
        self.write_config(services, global_, config_text)

    def write_config(self, services=None, global_=None, config_text=None):
        """(Re)write the config file; with services, the [global] section gets
        a pidfile and a short shutdown_timeout unless global_ sets them."""
        if config_text is None:
            g = {"pidfile": self.pidfile, "shutdown_timeout": "3s"}
            g.update(global_ or {})
            self.global_ = g
            self.services = services
            config_text = render_config(g, services)
            log = g.get("log")
            self.logfile = log if log and log.startswith("/") else None
        tmp = self.conf + ".tmp"
        with open(tmp, "w") as f:
            f.write(config_text)
        os.rename(tmp, self.conf)
        self.config_text = config_text

    def n_listen(self):
        if not self.services:
            return 0
        items = self.services.items() if isinstance(self.services, dict) else self.services
        n = 0
        for _, d in items:
            v = d.get("listen", "")
            n += len((" ".join(v) if isinstance(v, (list, tuple)) else v).split())
        return n

    def port(self, service=None, i=0):
        items = list(self.services.items() if isinstance(self.services, dict) else self.services)
        for name, d in items:
            if service is None or name == service:
                return listen_port(d, i)
        raise KeyError(service)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, wait=True, extra_args=(), timeout=15.0, wrap=None, env_extra=None):
        """wrap: a function argv -> argv that must exec postern in the same
        process (e.g. through `unshare --mount sh -c '... exec "$@"'`);
        env_extra: variables added to postern's environment."""
        def preexec():
            os.setsid()  # its own process group; we still signal it by PID only
            if self.rlimit_nofile:
                import resource

                resource.setrlimit(resource.RLIMIT_NOFILE, (self.rlimit_nofile, self.rlimit_nofile))

        # a restart appends to the same log: only its own lines count
        self._listening_before = len(self.find(event="listening", who="postern"))
        self._err = open(self.stderr_path, "ab")
        self._out = open(self.stdout_path, "ab")
        argv = [POSTERN, "-c", self.conf, *extra_args]
        if wrap:
            argv = wrap(argv)
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            preexec_fn=preexec,
            close_fds=True,
            env=dict(os.environ, **env_extra) if env_extra else None,
        )
        _LIVE.add(self)
        if wait:
            self.wait_ready(timeout * SLOW)
        return self

    def wait_ready(self, timeout=15.0):
        """Ready when the pidfile holds our PID, or when every listen address
        has logged its 'listening' line."""
        n = self.n_listen()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    "postern exited with status %d during startup:\n%s" % (self.proc.returncode, self.stderr())
                )
            try:
                with open(self.pidfile) as f:
                    if f.read().strip() == str(self.proc.pid):
                        return
            except OSError:
                pass
            if n and len(self.find(event="listening", who="postern")) >= getattr(self, "_listening_before", 0) + n:
                return
            time.sleep(0.02)
        raise AssertionError("postern not ready within %.0fs:\n%s" % (timeout, self.stderr()))

    # --- output and logs
    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stdout(self):
        try:
            with open(self.stdout_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_text(self):
        if self.logfile:
            try:
                with open(self.logfile, "rb") as f:
                    return f.read().decode("utf-8", "replace")
            except OSError:
                return ""
        return self.stderr()

    def lines(self):
        return parse_log(self.log_text())

    def find(self, event=None, who=None, level=None, service=None, contains=None, regex=None):
        out = []
        for ln in self.lines():
            if event is not None and ln.event != event:
                continue
            if who is not None and ln.who != who:
                continue
            if level is not None and ln.level != level:
                continue
            if service is not None and ln.service != service:
                continue
            if contains is not None and contains not in ln.msg:
                continue
            if regex is not None and not re.search(regex, ln.raw):
                continue
            out.append(ln)
        return out

    def wait_for(self, timeout=5.0, count=1, **kw):
        deadline = time.monotonic() + timeout * SLOW
        while True:
            got = self.find(**kw)
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(
                    "no %d log line(s) matching %r within %ss; log:\n%s" % (count, kw, timeout, self.log_text()[-6000:])
                )
            if self.proc and self.proc.poll() is not None and not self.find(**kw):
                # process gone: one last look, then fail
                time.sleep(0.05)
                got = self.find(**kw)
                if len(got) >= count:
                    return got
                raise AssertionError(
                    "postern exited (%s) before logging %r; log:\n%s" % (self.proc.returncode, kw, self.log_text()[-6000:])
                )
            time.sleep(0.03)

    def session_lines(self, client_port, event=None, service=None):
        """Lines of the session(s) from a client port. A client port is only
        unique per destination: give the service when a postern has several."""
        return [
            ln
            for ln in self.lines()
            if ln.sid
            and ln.client_port == client_port
            and (event is None or ln.event == event)
            and (service is None or ln.service == service)
        ]

    def wait_session_end(self, client_port, timeout=5.0, service=None):
        """(start line or None, end line) of the session from client_port."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            ends = self.session_lines(client_port, "end", service)
            if ends:
                starts = self.session_lines(client_port, "start", service)
                return (starts[-1] if starts else None), ends[-1]
            if time.monotonic() > deadline:
                raise AssertionError(
                    "no end line for client port %d within %ss; log:\n%s" % (client_port, timeout, self.log_text()[-6000:])
                )
            time.sleep(0.03)

    def wait_session_start(self, client_port, timeout=5.0, service=None):
        deadline = time.monotonic() + timeout * SLOW
        while True:
            starts = self.session_lines(client_port, "start", service)
            if starts:
                return starts[-1]
            if time.monotonic() > deadline:
                raise AssertionError(
                    "no start line for client port %d within %ss; log:\n%s" % (client_port, timeout, self.log_text()[-6000:])
                )
            time.sleep(0.03)

    # --- process control
    def signal(self, sig):
        self.proc.send_signal(sig)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout=15.0):
        try:
            code = self.proc.wait(timeout * SLOW)
            self.exit_observed = True
            return code
        except subprocess.TimeoutExpired:
            raise AssertionError("postern did not exit within %ss:\n%s" % (timeout, self.stderr()[-6000:]))

    def stop(self, expect=0, timeout=None):
        """SIGTERM, wait, check the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if timeout is None:
                timeout = 20.0
            try:
                self.proc.wait(timeout * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._close_files()
                raise AssertionError("postern did not exit within %ss of SIGTERM:\n%s" % (timeout, self.stderr()[-6000:]))
        self._close_files()
        code = self.proc.returncode
        self.exit_observed = True
        if expect is not None and code != expect:
            raise AssertionError("postern exit status %s, expected %s:\n%s" % (code, expect, self.stderr()[-6000:]))
        return code

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_files()

    def _close_files(self):
        if self.proc is not None and self.proc.poll() is not None:
            _LIVE.discard(self)
        for f in (getattr(self, "_err", None), getattr(self, "_out", None)):
            if f:
                f.close()

    def sanitizer_report(self):
        text = self.stderr()
        if any(m in text for m in SANITIZER_MARKERS):
            return text
        return None

    def status(self):
        """/proc/PID/status as a dict."""
        out = {}
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
        return out

    def rss_kb(self):
        return int(self.status()["VmRSS"].split()[0])

    def cpu_seconds(self):
        with open("/proc/%d/stat" % self.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # fields[0] is state (field 3); utime, stime are fields 14, 15
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def nfds(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))


# ------------------------------------------------------------ mount namespaces

# Runs "$@" with /dev/log a symlink to $SYSLOG_SOCK: a fresh tmpfs on /dev
# with the usual devices bound back in.
DEV_LOG_SCRIPT = (
    'set -e; d=$(mktemp -d); mount --rbind /dev "$d"; mount -t tmpfs tmpfs /dev; '
    'for n in null zero full random urandom; do touch /dev/$n; mount --bind "$d/$n" /dev/$n; done; '
    'ln -s "$SYSLOG_SOCK" /dev/log; exec "$@"'
)


def private_mount_ns(script):
    """A Postern.start wrap: SCRIPT (sh, ending in `exec "$@"`) run in a
    private mount namespace of its own, then postern in its place. Check
    first with PosternTestCase.require_private_mount_ns()."""
    return lambda argv: ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"] + list(argv)


class PosternTestCase(unittest.TestCase):
    """Base class: self.postern(...) starts a postern that is stopped and
    checked (exit 0, no sanitizer report) when the test ends."""

    # False in test classes that need no mail server (make test-offline
    # runs them where Dovecot and aiosmtpd are not installed).
    NEEDS_SERVERS = True

    @classmethod
    def setUpClass(cls):
        cls.env = env()
        if cls.NEEDS_SERVERS and cls.env.missing:
            raise unittest.SkipTest("offline, not installed: %s" % cls.env.missing)

    def setUp(self):
        self._posterns = []

    def postern(self, services=None, global_=None, config_text=None, start=True, rlimit_nofile=None, **kw):
        p = Postern(services, global_, config_text, rlimit_nofile=rlimit_nofile)
        self._posterns.append(p)
        self.addCleanup(self._finish, p)
        if start:
            p.start(**kw)
        return p

    def _finish(self, p):
        try:
            if p.proc is not None and p.proc.poll() is None:
                p.stop(expect=p.expect_exit)
            else:
                p._close_files()
                if p.proc is not None and not p.exit_observed and p.proc.returncode != p.expect_exit:
                    raise AssertionError(
                        "postern exited on its own during the test with status %s:\n%s"
                        % (p.proc.returncode, p.stderr()[-4000:])
                    )
        finally:
            if ASAN and p.proc is not None:
                rep = p.sanitizer_report()
                if rep:
                    raise AssertionError("sanitizer report in postern's stderr:\n" + rep[-8000:])

    # --- private mount namespaces
    def require_private_mount_ns(self):
        """Skip unless postern can be started in a private mount namespace
        (root, unshare(1)). Never mount without one: in a chroot, where "/"
        is no mount point, unshare cannot make it private, and the test is
        skipped."""
        if os.getuid() != 0 or not shutil.which("unshare"):
            self.skipTest("needs root and unshare(1)")
        probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if probe.returncode != 0:
            self.skipTest("no private mount namespace here: %s" % probe.stderr.decode().strip())

    def postern_with_dev_log(self, services, global_):
        """A postern started with /dev/log bound to a datagram socket of
        ours, in a private mount namespace (skips where there is none);
        (postern, receiving socket, its path)."""
        self.require_private_mount_ns()
        p = self.postern(start=False)
        path = os.path.join(p.dir, "log.sock")
        rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        rx.bind(path)
        self.addCleanup(rx.close)
        p.write_config(services, global_)
        os.environ["SYSLOG_SOCK"] = path
        try:
            p.start(wrap=private_mount_ns(DEV_LOG_SCRIPT))
        finally:
            del os.environ["SYSLOG_SOCK"]
        return p, rx, path

    # --- assertions on sessions
    def assertSessionEnd(self, p, client_port, reason=None, timeout=5.0, service=None):
        start, end = p.wait_session_end(client_port, timeout, service)
        if reason is not None:
            self.assertEqual(end.fields.get("reason"), reason, "end line: %s" % end.raw)
        for k in ("in", "out", "duration", "reason"):
            self.assertIn(k, end.fields, "end line lacks %s=: %s" % (k, end.raw))
        self.assertRegex(end.fields["duration"], r"^\d+\.\d{3}$", end.raw)
        self.assertRegex(end.fields["in"], r"^\d+$", end.raw)
        self.assertRegex(end.fields["out"], r"^\d+$", end.raw)
        return start, end


# ------------------------------------------------------------ clients


def client_context(ca=None, alpn=None, min_version=None, max_version=None, cert=None, key=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca or env().ca)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if min_version:
        ctx.minimum_version = min_version
    if max_version:
        ctx.maximum_version = max_version
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def tls_connect(port, host="127.0.0.1", sni="localhost", ctx=None, timeout=10.0, source=None, ragged_ok=True, **ctxkw):
    """A verified TLS connection to postern (check_hostname against sni;
    sni=None sends no SNI and skips the name check)."""
    ctx = ctx or client_context(**ctxkw)
    if sni is None:
        ctx.check_hostname = False
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    raw = socket.socket(family, socket.SOCK_STREAM)
    raw.settimeout(timeout * SLOW)
    if source:
        raw.bind((source, 0))
    raw.connect((host, port))
    try:
        return ctx.wrap_socket(raw, server_hostname=sni, suppress_ragged_eofs=ragged_ok)
    except BaseException:
        raw.close()
        raise


def client_hello(sni="localhost", alpn=None):
    """The bytes of a real TLS ClientHello (from Python's ssl, memory BIOs)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    data = out.read()
    assert data[:1] == b"\x16", data[:10]
    return data


# The stdlib clients, connecting to 127.0.0.1 but verifying and sending SNI
# for "localhost": no name resolution needed (a fresh debootstrap root has no
# /etc/hosts, and "localhost" then does not resolve at all).
import imaplib  # noqa: E402
import poplib  # noqa: E402
import smtplib  # noqa: E402


class SourceIMAP4(imaplib.IMAP4):
    """Plain imaplib from a chosen source address (127.0.0.9: told apart from
    other clients in a backend's log)."""

    source = ("127.0.0.9", 0)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=self.source)


@contextlib.contextmanager
def shut_down_after(client):
    """`with shut_down_after(imaplib/poplib client) as c:` closes the
    connection on the way out, also after a failed assertion (a LOGOUT that
    got through has closed it already, which is fine)."""
    try:
        yield client
    finally:
        try:
            client.shutdown()
        except Exception:
            pass


class IMAP4_SSL(imaplib.IMAP4_SSL):
    def __init__(self, port, ssl_context=None, timeout=10.0, sni="localhost"):
        self._sni = sni
        super().__init__("127.0.0.1", port, ssl_context=ssl_context or client_context(), timeout=timeout * SLOW)

    def _create_socket(self, timeout):
        sock = imaplib.IMAP4._create_socket(self, timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self._sni)


class POP3_SSL(poplib.POP3_SSL):
    def __init__(self, port, context=None, timeout=10.0, sni="localhost"):
        self._sni = sni
        super().__init__("127.0.0.1", port, context=context or client_context(), timeout=timeout * SLOW)

    def _create_socket(self, timeout):
        sock = poplib.POP3._create_socket(self, timeout)
        return self.context.wrap_socket(sock, server_hostname=self._sni)


class SMTP_SSL(smtplib.SMTP_SSL):
    def __init__(self, port, context=None, timeout=10.0, sni="localhost"):
        self._sni = sni
        super().__init__("127.0.0.1", port, local_hostname="client.test", context=context or client_context(),
                         timeout=timeout * SLOW)

    def _get_socket(self, host, port, timeout):
        sock = smtplib.SMTP._get_socket(self, host, port, timeout)
        return self.context.wrap_socket(sock, server_hostname=self._sni)


def plain_connect(port, host="127.0.0.1", timeout=10.0, source=None):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout * SLOW)
    if source:
        s.bind((source, 0))
    s.connect((host, port))
    return s


class Reader:
    """Line and literal reading on a (TLS or plain) socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError("connection closed; buffered: %r" % bytes(self.buf[-300:]))
        self.buf += chunk

    def readline(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            self._fill()

    def read(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_until(self, marker):
        start = 0
        while True:
            i = self.buf.find(marker, start)
            if i >= 0:
                out = bytes(self.buf[: i + len(marker)])
                del self.buf[: i + len(marker)]
                return out
            start = max(0, len(self.buf) - len(marker))
            self._fill()

    def read_to_eof(self):
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except (ConnectionResetError, ssl.SSLError) as e:
                raise EOFError("not a clean close: %r" % e)
            if not chunk:
                out = bytes(self.buf)
                self.buf.clear()
                return out
            self.buf += chunk

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)


def duplex(sock, payload, expect_len, timeout=30.0, initial=b""):
    """Send payload and receive expect_len bytes at the same time, in one
    thread (an ssl socket must not be used from two threads at once):
    non-blocking, select()-driven. Returns the bytes received."""
    sock.setblocking(False)
    got = bytearray(initial)
    sent = 0
    deadline = time.monotonic() + timeout * SLOW
    try:
        while len(got) < expect_len or sent < len(payload):
            progressed = False
            try:
                while len(got) < expect_len:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise EOFError("EOF after %d of %d bytes (sent %d)" % (len(got), expect_len, sent))
                    got += chunk
                    progressed = True
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                pass
            if sent < len(payload):
                try:
                    n = sock.send(payload[sent : sent + 16384])
                    sent += n
                    progressed = progressed or n > 0
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    pass
            if progressed:
                continue
            if time.monotonic() > deadline:
                raise AssertionError("duplex: stalled at %d/%d received, %d/%d sent" % (len(got), expect_len, sent, len(payload)))
            select.select([sock], [sock] if sent < len(payload) else [], [], 0.5)
    finally:
        sock.setblocking(True)
        sock.settimeout(10 * SLOW)
    return bytes(got)


def imap_response(r, tag):
    """Read an IMAP response up to and including the tagged line for tag,
    following {N} literals. Returns the raw bytes."""
    out = bytearray()
    tagb = tag.encode() + b" "
    while True:
        line = r.readline()
        out += line
        m = re.search(rb"\{(\d+)\+?\}\r\n$", line)
        if m:
            out += r.read(int(m.group(1)))
            continue
        if line.startswith(tagb):
            return bytes(out)


def imap_cmd(r, tag, cmd, ok=True):
    r.send("%s %s\r\n" % (tag, cmd))
    resp = imap_response(r, tag)
    if ok:
        last = resp.rsplit(b"\r\n", 2)[-2] if resp.endswith(b"\r\n") else resp
        if not last.split(b"\r\n")[-1].startswith(("%s OK" % tag).encode()):
            raise AssertionError("IMAP %s failed: %r" % (cmd, resp[-300:]))
    return resp


def imap_login(sock, user=USER, password=PASSWORD):
    r = Reader(sock)
    greet = r.readline()
    if not greet.startswith(b"* OK"):
        raise AssertionError("IMAP greeting: %r" % greet)
    imap_cmd(r, "l1", "LOGIN %s %s" % (user, password))
    return r


def imap_untagged(resp, tag):
    """The response without its final tagged line (Dovecot puts timings in
    it: "f1 OK Fetch completed (0.133 + 0.000 secs).")."""
    i = resp.rfind(b"\r\n" + tag.encode() + b" ")
    return resp[: i + 2] if i >= 0 else b""


def imap_fetch_raw(sock, seq):
    """Log in as alice, SELECT INBOX, FETCH seq BODY.PEEK[] and return the
    raw bytes of the untagged FETCH response (identical whoever relays them)."""
    r = imap_login(sock)
    imap_cmd(r, "s1", "EXAMINE INBOX")
    data = imap_untagged(imap_cmd(r, "f1", "FETCH %d BODY.PEEK[]" % seq), "f1")
    imap_cmd(r, "z1", "LOGOUT")
    return data


def literal_of(raw_fetch):
    """The message bytes of a raw untagged FETCH BODY[] response."""
    m = re.search(rb"\{(\d+)\}\r\n", raw_fetch)
    assert m, raw_fetch[:200]
    return raw_fetch[m.end(): m.end() + int(m.group(1))]


def imap_logout(r, tag="z"):
    """LOGOUT and read until the server (or postern) closes: the backend
    closes first, deterministically. Returns what arrived."""
    r.send("%s LOGOUT\r\n" % tag)
    resp = imap_response(r, tag)
    return resp + r.read_to_eof()


def pop3_retr_raw(sock, n):
    r = Reader(sock)
    greet = r.readline()
    if not greet.startswith(b"+OK"):
        raise AssertionError("POP3 greeting: %r" % greet)
    for cmd in ("USER %s" % USER, "PASS %s" % PASSWORD):
        r.send(cmd + "\r\n")
        line = r.readline()
        if not line.startswith(b"+OK"):
            raise AssertionError("POP3 %s: %r" % (cmd.split()[0], line))
    r.send("RETR %d\r\n" % n)
    first = r.readline()
    if not first.startswith(b"+OK"):
        raise AssertionError("POP3 RETR: %r" % first)
    data = first + r.read_until(b"\r\n.\r\n")
    r.send("QUIT\r\n")
    r.readline()
    return data


def cert_fingerprint(path):
    with open(path) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    return hashlib.sha256(der).hexdigest()


def peer_fingerprint(tls_sock):
    return hashlib.sha256(tls_sock.getpeercert(binary_form=True)).hexdigest()


def run(cmd, input=None, timeout=30.0, check=False, env_extra=None, **kw):
    e = None
    if env_extra:
        e = dict(os.environ)
        e.update(env_extra)
    return subprocess.run(
        cmd,
        input=input,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=timeout * SLOW,
        check=check,
        env=e,
        **kw,
    )


class PipeWatch:
    """A child's output pipe read as it comes, so that a test can wait for
    a line (say, a server's reply printed by openssl s_client) instead of
    sleeping. self.data holds everything read so far."""

    def __init__(self, pipe):
        self.fd = pipe.fileno()
        os.set_blocking(self.fd, False)
        self.data = bytearray()

    def wait(self, regex, since=0, timeout=10.0):
        """The first match of the bytes regex (multi-line) in self.data[since:]."""
        rx = re.compile(regex, re.M)
        deadline = time.monotonic() + timeout * SLOW
        while True:
            m = rx.search(self.data, since)
            if m:
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %r within %.1fs in:\n%s" % (regex, timeout * SLOW,
                                                                     self.data[-3000:].decode("utf-8", "replace")))
            if select.select([self.fd], [], [], left)[0]:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise AssertionError("output closed before %r:\n%s" % (regex, self.data[-3000:].decode(
                        "utf-8", "replace")))
                self.data += chunk

    def finish(self, proc, timeout=10.0):
        """Close proc's input, wait for it to exit (killed after timeout) and
        return all its output as text."""
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        proc.stdin = None
        try:
            out = proc.communicate(timeout=timeout * SLOW)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0]
        return (bytes(self.data) + (out or b"")).decode("utf-8", "replace")


def curl(args, timeout=30.0):
    """curl with the test CA; returns CompletedProcess (bytes)."""
    return run(["curl", "-sS", "--cacert", env().ca, "--max-time", str(int(timeout * SLOW))] + list(args), timeout=timeout + 5)


def wait_until(pred, timeout=5.0, interval=0.03, msg="condition", detail=None):
    """pred()'s first true value within timeout (scaled by SLOW); on time-out
    an AssertionError naming msg, followed by detail() if given."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s%s"
                                 % (timeout * SLOW, msg, detail() if detail else ""))
        time.sleep(interval)


class Memcheck:
    """Runs a Postern under valgrind's memcheck: `p.start(wrap=m.wrap)`,
    then, once it has exited, `m.assertClean(test, status)`. Exit 97 is
    memcheck's: an invalid access, an uninitialised read or a block
    definitely lost. (A sanitized binary cannot run under valgrind: ASan
    passes skip these tests, their sanitizers check every test.)"""

    ERRORS = re.compile(r"(?m)(Invalid (read|write|free)|uninitialised|definitely lost: [1-9])")

    def __init__(self, postern):
        self.report = os.path.join(postern.dir, "memcheck.log")

    def wrap(self, argv):
        return ["/usr/bin/valgrind", "--quiet", "--error-exitcode=97", "--leak-check=full",
                "--errors-for-leak-kinds=definite", "--log-file=" + self.report, *argv]

    def assertClean(self, test, status):
        with open(self.report) as f:
            text = f.read()
        test.assertEqual(status, 0, "memcheck found errors (exit 97) or postern failed:\n" + text[-6000:])
        test.assertNotRegex(text, self.ERRORS, text[-6000:])


def read_to_close(sock, timeout):
    """All bytes until the peer closes (EOF or reset); None if it stays open
    for `timeout` seconds (not scaled: callers that wait for postern scale).
    A socket the peer has already closed is read even with no time left."""
    deadline = time.monotonic() + timeout
    out = bytearray()
    sock.settimeout(0.1)
    while True:
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            chunk = None
        except OSError:  # ConnectionError, ssl.SSLError: a reset is a close
            return bytes(out)
        if chunk == b"":
            return bytes(out)
        out += chunk or b""
        if time.monotonic() >= deadline:
            return None


def closed_by_peer(sock, timeout):
    """True if the peer closes (EOF or reset) within timeout seconds, reading
    and discarding whatever arrives meanwhile."""
    return read_to_close(sock, timeout) is not None


def wait_delivery(marker, timeout=10.0):
    """(meta, content) of the first message the test SMTP server stored with
    marker in it, waiting for it to arrive."""
    def find():
        for meta, content in env().smtp_messages():
            if marker in content:
                return meta, content
        return None

    return wait_until(find, timeout, msg="delivery of %r" % marker)


# ------------------------------------------------------------ fake backends


class FakeServer:
    """The base of the tests' scripted fake servers (starttls_util's
    FakeBackend, clientmode_util's ScriptedServer): listening sockets on
    loopback (one port on every address of `hosts`), an accept thread per
    socket, a thread per connection running self.serve(conn), and the
    connections kept in order for the test to look at. A subclass gives
    make_conn(sock) and serve(conn), and close_conn(conn) if closing one
    takes more than closing its socket."""

    name = "fake"

    def listen(self, hosts=("127.0.0.1",)):
        self.socks = []
        for attempt in range(20):  # the port of the first address may be taken on another
            socks = []
            try:
                port = 0
                for h in hosts:
                    s = socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET, socket.SOCK_STREAM)
                    socks.append(s)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind((h, port))
                    port = s.getsockname()[1]
                    s.listen(128)
                self.socks = socks
                self.port = port
                break
            except OSError:
                for s in socks:
                    s.close()
        else:
            raise RuntimeError("cannot bind %r" % (hosts,))
        h = hosts[0]
        self.address = "%s:%d" % ("[%s]" % h if ":" in h else h, self.port)
        self.conns = []
        self._lock = threading.Lock()
        self._stop = False
        self._threads = []
        for s in self.socks:
            t = threading.Thread(target=self._accept, args=(s,), daemon=True)
            t.start()
            self._threads.append(t)

    def make_conn(self, sock):
        raise NotImplementedError

    def serve(self, c):
        raise NotImplementedError

    def close_conn(self, c):
        try:
            c.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            c.sock.close()
        except OSError:
            pass

    def _accept(self, ls):
        while not self._stop:
            try:
                r, _, _ = select.select([ls], [], [], 0.1)
                if not r:
                    continue
                s, _ = ls.accept()
            except (OSError, ValueError):
                return
            if self._stop:
                s.close()
                return
            c = self.make_conn(s)
            with self._lock:
                self.conns.append(c)
            t = threading.Thread(target=self.serve, args=(c,), daemon=True)
            t.start()
            self._threads.append(t)

    # --- test side
    def count(self):
        with self._lock:
            return len(self.conns)

    def conn(self, i=0, timeout=5.0):
        """The i-th accepted connection (waits for it)."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            with self._lock:
                if len(self.conns) > i:
                    return self.conns[i]
            if time.monotonic() > deadline:
                raise AssertionError("%s: no connection #%d" % (self.name, i))
            time.sleep(0.02)

    def last(self, timeout=5.0):
        """The newest connection (waits for at least one)."""
        self.conn(0, timeout)
        with self._lock:
            return self.conns[-1]

    def stop(self):
        self._stop = True
        for t in self._threads[: len(self.socks)]:
            t.join(2)  # the accept loops see _stop within 0.1 s
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        with self._lock:
            conns = list(self.conns)
        for c in conns:
            self.close_conn(c)
        for t in self._threads:
            t.join(2)


class TcpBackend:
    """A small backend for what real servers can't show: sends `greeting` on
    accept; echoes (echo=True) or swallows input; after the client's EOF
    waits `eof_delay` and then sends `eof_reply` and closes. Threaded,
    one selector loop; stop() closes everything."""

    def __init__(self, greeting=b"", echo=True, eof_reply=b"", eof_delay=0.0, host="127.0.0.1", unix_path=None,
                 rst_after=None, port=0):
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(unix_path)
            self.address = "unix:" + unix_path
        else:
            self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.port = self.sock.getsockname()[1]
            self.address = "%s:%d" % ("[%s]" % host if ":" in host else host, self.port)
        self.sock.listen(1024)
        self.sock.setblocking(False)
        self.greeting, self.echo, self.eof_reply, self.eof_delay = greeting, echo, eof_reply, eof_delay
        self.rst_after = rst_after  # reset a connection once it has sent us this many bytes
        self.resets = 0
        self.conns = {}
        self.accepted = 0
        self.received = {}
        self._stop = False
        self._wake_r, self._wake_w = socket.socketpair()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ, "listen")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        pending_eof = []  # (when, conn)
        while not self._stop:
            timeout = None
            if pending_eof:
                timeout = max(0, min(t for t, _ in pending_eof) - time.monotonic())
            for key, _ in sel.select(timeout if timeout is not None else 0.5):
                if key.data == "wake":
                    self._wake_r.recv(100)
                elif key.data == "listen":
                    try:
                        c, _ = self.sock.accept()
                    except OSError:
                        continue
                    self.accepted += 1
                    c.setblocking(True)
                    c.settimeout(5)
                    if self.greeting:
                        try:
                            c.sendall(self.greeting)
                        except OSError:
                            pass
                    c.setblocking(False)
                    self.conns[c.fileno()] = c
                    self.received[c.fileno()] = 0
                    sel.register(c, selectors.EVENT_READ, "conn")
                else:
                    c = key.fileobj
                    try:
                        data = c.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    if data and self.rst_after is not None and self.received[c.fileno()] + len(data) >= self.rst_after:
                        sel.unregister(c)
                        self.conns.pop(c.fileno(), None)
                        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        c.close()
                        self.resets += 1
                        continue
                    if data:
                        self.received[c.fileno()] += len(data)
                        if self.echo:
                            c.setblocking(True)
                            try:
                                c.sendall(data)
                            except OSError:
                                pass
                            c.setblocking(False)
                    else:
                        sel.unregister(c)
                        pending_eof.append((time.monotonic() + self.eof_delay, c))
            now = time.monotonic()
            for item in [x for x in pending_eof if x[0] <= now]:
                pending_eof.remove(item)
                c = item[1]
                try:
                    if self.eof_reply:
                        c.setblocking(True)
                        c.sendall(self.eof_reply)
                except OSError:
                    pass
                self.conns.pop(c.fileno(), None)
                c.close()
        for c in list(self.conns.values()):
            c.close()
        self.sock.close()

    def stop(self):
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self.thread.join(5)
        self._wake_r.close()
        self._wake_w.close()


class BlackholeBackend:
    """A listening TCP socket whose accept queue is full, so that further
    connects hang (SYNs dropped): a backend that never answers."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers = []
        # fill the accept queue (backlog 0 still queues one or two)
        for _ in range(4):
            f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            f.setblocking(False)
            try:
                f.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self.fillers.append(f)
        time.sleep(0.2)

    def hangs(self):
        """Check that a new connect really hangs (test validity)."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(0.5)
        try:
            s.connect(("127.0.0.1", self.port))
            return False
        except socket.timeout:
            return True
        except OSError:
            return False
        finally:
            s.close()

    def stop(self):
        for f in self.fillers:
            f.close()
        self.sock.close()
