#!/usr/bin/python3
"""Throwaway mail servers for postern's integration tests and its demo.

- Dovecot 2.3 (IMAP + POP3), from its own config file in a temp dir
  (`dovecot -F -c FILE`): its own base_dir and state_dir, plaintext IMAP and
  POP3 on free loopback ports, an IMAP unix socket (imap-login's own
  unix_listener), passwd-file users with known passwords, maildir homes owned
  by uid/gid 65534 with sample mail; ssl = no; logs to a file.
- An SMTP server (Debian's aiosmtpd, see smtp_server.py) storing every
  received message in a spool directory.

Everything is started and stopped by PID. Use it as a module (run.py) or
from the command line (the demo):

    mailserver.py serve --dir DIR --set demo --ready DIR/servers.env

starts both, writes a shell-sourceable env file (IMAP_PORT, POP3_PORT,
IMAP_SOCKET, SMTP_PORT, SMTP_SPOOL, DOVECOT_PID, SMTP_PID) once they answer,
and stops them again on SIGTERM, SIGINT or SIGHUP.

Run with /usr/bin/python3 (Debian's interpreter with python3-aiosmtpd).
"""

import argparse
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MAIL_UID = MAIL_GID = 65534  # nobody:nogroup on Debian
DEBIAN_PYTHON = "/usr/bin/python3"

BIG_SIZE = 20 * 1024 * 1024  # body bytes of the big message


def die_with_parent(sig=signal.SIGTERM):
    """For preexec_fn: the child gets `sig` when its parent dies, so that a
    server in its own session (safe from the terminal's Ctrl-C and SIGHUP,
    which the supervisor relays) never outlives a supervisor that was
    SIGKILLed."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass


_handed_out = set()


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago (bind to port 0, then close), and
    never one this process handed out before: the kernel may offer a port
    again as soon as it is closed, and two services of one configuration
    must not get the same one before either binds it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(1000):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no fresh free port")


def port_free(port, host="127.0.0.1"):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def recv_until(sock, marker):
    """Bytes from sock until marker is among them or the peer closes."""
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _greeting(addr, family, timeout, first=b""):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(addr)
        if first:
            s.sendall(first)
        return recv_until(s, b"\n")


def wait_greeting(addr, prefix, timeout=20.0, proc=None, family=socket.AF_INET, first=b""):
    """Wait until a server at addr answers with a line starting with prefix
    (first: bytes to send right after connecting, e.g. a PROXY header)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("server exited with status %s" % proc.returncode)
        try:
            data = _greeting(addr, family, 2.0, first)
            if data.startswith(prefix):
                return data
            last = data
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError("no %r greeting from %r within %ss (last: %r)" % (prefix, addr, timeout, last))


# ---------------------------------------------------------------- messages


def big_message(size=BIG_SIZE, seed=20):
    """A deterministic message of about `size` body bytes with 8-bit and
    binary content: random bytes (including NUL and 0x80-0xff), no CR/LF
    inside lines, lines of 200 bytes, LF line ends (as stored in maildir)."""
    rnd = random.Random(seed)
    raw = rnd.randbytes(size)
    # keep line structure: CR and LF only as our line ends
    raw = raw.translate(bytes.maketrans(b"\r\n", b"\x0e\x0b"))
    width = 200
    body = b"\n".join(raw[i : i + width] for i in range(0, len(raw), width))
    head = (
        b"From: Binary Sender <binary@example.test>\n"
        b"To: alice@example.test\n"
        b"Subject: big binary message\n"
        b"Date: Sat, 21 Nov 2026 22:00:03 +0000\n"
        b"Message-ID: <big-binary@example.test>\n"
        b"MIME-Version: 1.0\n"
        b"Content-Type: application/octet-stream\n"
        b"Content-Transfer-Encoding: binary\n"
        b"\n"
    )
    return head + body + b"\n"


def text_message(n, subject, body, to="alice@example.test", extra=b""):
    return (
        b"From: Sender %d <sender%d@example.test>\n"
        b"To: %s\n"
        b"Subject: %s\n"
        b"Date: Sat, 21 Nov 2026 22:00:%02d +0000\n"
        b"Message-ID: <msg%d@example.test>\n"
        b"%s"
        b"\n"
        b"%s"
        % (n, n, to.encode(), subject.encode("utf-8"), n, n, extra, body)
    )


def eightbit_message():
    body = (
        "Grüße aus Köln! Ça va? Żółć, 日本語のテキスト, ελληνικά.\n"
        "Zeile zwei mit Umlauten: äöüß ÄÖÜ.\n"
    ).encode("utf-8")
    return text_message(
        2,
        "8bit: Grüße",
        body,
        extra=b"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: 8bit\n",
    )


def message_set(name):
    """users and their mail: list of (user, password, [message bytes])."""
    if name == "test":
        alice = [
            text_message(1, "Hello 1", b"This is the first message.\nIt has two lines.\n"),
            eightbit_message(),
            big_message(),
            text_message(4, "Hello 4", b"The fourth message, after the big one.\n"),
        ]
        bob = [text_message(5, "for bob", b"Hi Bob.\n", to="bob@example.test")]
        return [("alice", "secret", alice), ("bob", "hunter2", bob)]
    if name == "demo":
        demo = [
            text_message(
                1,
                "Welcome to postern",
                b"Hello!\n\nThis message came to you through postern, a TLS gateway for\n"
                b"mail: your client spoke TLS to postern, postern spoke plain IMAP or\n"
                b"POP3 to a throwaway Dovecot on loopback.\n\n-- the postern demo\n",
                to="demo@example.test",
            ),
            text_message(
                2,
                "Second message: 8-bit text",
                "Grüße aus Köln – ça marche, 日本語もOK.\n".encode("utf-8"),
                to="demo@example.test",
                extra=b"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
                b"Content-Transfer-Encoding: 8bit\n",
            ),
            text_message(
                3,
                "Third message",
                b"Try POP3 and SMTP too; the demo prints the lines.\n",
                to="demo@example.test",
            ),
        ]
        return [("demo", "demo", demo)]
    raise ValueError("unknown message set %r" % name)


def build_maildir(home, messages):
    """Create home/Maildir with the messages in cur/, owned by MAIL_UID.
    Names carry increasing timestamps, so Dovecot gives them UIDs 1..n in
    this order."""
    md = os.path.join(home, "Maildir")
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(md, sub), exist_ok=True)
    for i, msg in enumerate(messages, 1):
        name = "%d.M%dP1.postern-test,S=%d:2," % (1763762400 + i, i, len(msg))
        with open(os.path.join(md, "cur", name), "wb") as f:
            f.write(msg)
    for root, dirs, files in os.walk(home):
        os.chown(root, MAIL_UID, MAIL_GID)
        os.chmod(root, 0o700 if root != home else 0o755)
        for fn in files:
            p = os.path.join(root, fn)
            os.chown(p, MAIL_UID, MAIL_GID)
            os.chmod(p, 0o600)


def _make_reachable(path):
    """Dovecot's auth and mail processes drop privileges: every directory on
    the way to `path` must be searchable by others. That includes "/": a
    chroot made with `mktemp -d` (as /work/shared/tools/fresh-root does) has
    a 0700 root, where no unprivileged process can even read /etc/passwd."""
    path = os.path.abspath(path)
    while True:
        st = os.stat(path)
        if not st.st_mode & 0o001:
            if path == "/":
                sys.stderr.write("mailserver: making / searchable (mode %o -> %o) for Dovecot's unprivileged "
                                 "processes\n" % (st.st_mode & 0o7777, (st.st_mode | 0o055) & 0o7777))
            os.chmod(path, st.st_mode | 0o055)
        if path == "/":
            break
        path = os.path.dirname(path)


# ---------------------------------------------------------------- Dovecot

# One template for every throwaway Dovecot of the tests: the plain one the
# whole run shares (below) and the TLS one of the client-mode tests
# (tests/integration/clientmode_util.py), and the latter's OAuth 2.0
# variant (tests/integration/oauth2_util.py). What differs is passed in:
# the listen addresses, the TLS settings, the greeting, the listeners and
# how users log in (auth).
DOVECOT_CONF = """\
# throwaway Dovecot for postern's tests; generated, do not edit
instance_name = {instance}
base_dir = {dir}/run
state_dir = {dir}/state
protocols = imap pop3
listen = {listen}
{tls}
{auth}
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
mail_location = maildir:~/Maildir
first_valid_uid = 1
first_valid_gid = 1
login_greeting = {greeting}
# a failed login is answered at once, and no auth penalty: every client
# reaches a test Dovecot from postern's 127.0.0.1, so Dovecot's 2 s
# failure delay and its per-address penalty (up to 15 s more before every
# later login, good ones too) would make one test's failed logins slow the
# rest of the run; mode 0 disables the penalty's anvil socket
auth_failure_delay = 0
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
mail_max_userip_connections = 10000
default_process_limit = 1000
default_client_limit = 10000
verbose_proctitle = yes
userdb {{
  driver = passwd-file
  args = username_format=%u {dir}/users
}}
service imap-login {{
{imap_listeners}  service_count = 0
  process_min_avail = 1
}}
service pop3-login {{
{pop3_listeners}  service_count = 0
  process_min_avail = 1
}}
service imap {{
  process_limit = 1000
}}
service pop3 {{
  process_limit = 1000
}}
protocol imap {{
  mail_max_userip_connections = 10000
}}
protocol pop3 {{
  mail_max_userip_connections = 10000
  pop3_uidl_format = %08Xu%08Xv
}}
"""

# users log in with the passwords of {dir}/users
DOVECOT_PASSWORD_AUTH = """\
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/users
}}"""

# plaintext logins allowed: postern terminates TLS in front of it
DOVECOT_NO_TLS = """\
ssl = no
disable_plaintext_auth = no"""


def dovecot_listener(name, port, address=None, ssl=False, haproxy=False):
    """An inet_listener block of a Dovecot login service (port 0: disabled)."""
    lines = ["  inet_listener %s {" % name]
    if address:
        lines.append("    address = %s" % address)
    lines.append("    port = %d" % port)
    if ssl:
        lines.append("    ssl = yes")
    if haproxy:
        lines.append("    haproxy = yes")
    lines.append("  }")
    return "\n".join(lines) + "\n"


class ServerProcess:
    """A server child in self.proc, stopped by its PID: SIGTERM, then SIGKILL
    after a timeout."""

    proc = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def spawn(self, argv, log_path):
        """Start argv with its output appended to log_path, in a session of
        its own (group signals such as Ctrl-C and HUP are ours to relay) and
        killed when its parent dies."""
        out = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     close_fds=True, start_new_session=True, preexec_fn=die_with_parent)
        out.close()

    def terminate(self):
        """Send SIGTERM (once) without waiting."""
        if self.proc is not None and self.proc.poll() is None and not getattr(self, "_termed", False):
            self.proc.send_signal(signal.SIGTERM)
            self._termed = True

    def stop(self, timeout=5.0):
        self.terminate()
        p, self.proc = self.proc, None
        self._termed = False
        if p is None or p.poll() is not None:
            if p is not None:
                p.wait()
            return
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Dovecot(ServerProcess):
    """A throwaway Dovecot (IMAP + POP3) in `dir` (created; must be new)."""

    def __init__(self, dir, users):
        self.dir = os.path.abspath(dir)
        self.users = users  # [(name, password, [messages])]
        self.proc = None
        self.imap_port = self.pop3_port = None
        self.imap_socket = os.path.join(self.dir, "run", "imap.sock")
        self.log = os.path.join(self.dir, "dovecot.log")
        self.conf = os.path.join(self.dir, "dovecot.conf")

    def prepare(self):
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        _make_reachable(self.dir)
        for sub in ("run", "state", "home"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
            os.chmod(os.path.join(self.dir, sub), 0o755)
        lines = []
        for name, password, messages in self.users:
            home = os.path.join(self.dir, "home", name)
            build_maildir(home, messages)
            lines.append("%s:{PLAIN}%s:%d:%d::%s::\n" % (name, password, MAIL_UID, MAIL_GID, home))
        with open(os.path.join(self.dir, "users"), "w") as f:
            f.writelines(lines)
        os.chmod(os.path.join(self.dir, "users"), 0o644)

    what = "Dovecot"

    def config(self):
        """The config text, with fresh ports."""
        self.imap_port = free_port()
        self.pop3_port = free_port()
        imap = (dovecot_listener("imap", self.imap_port, "127.0.0.1") + dovecot_listener("imaps", 0)
                + "  unix_listener imap.sock {\n    mode = 0666\n  }\n")
        pop3 = dovecot_listener("pop3", self.pop3_port, "127.0.0.1") + dovecot_listener("pop3s", 0)
        return DOVECOT_CONF.format(instance="postern-test-%d" % os.getpid(), dir=self.dir, listen="127.0.0.1",
                                   tls=DOVECOT_NO_TLS, auth=DOVECOT_PASSWORD_AUTH.format(dir=self.dir), greeting="Dovecot ready.", imap_listeners=imap,
                                   pop3_listeners=pop3)

    def wait_ready(self, timeout):
        wait_greeting(("127.0.0.1", self.imap_port), b"* OK", timeout, self.proc)
        wait_greeting(("127.0.0.1", self.pop3_port), b"+OK", timeout, self.proc)
        wait_greeting(self.imap_socket, b"* OK", timeout, self.proc, socket.AF_UNIX)

    def start(self, timeout=30.0):
        err = None
        for attempt in range(3):
            with open(self.conf, "w") as f:
                f.write(self.config())
            self.spawn(["dovecot", "-F", "-c", self.conf], os.path.join(self.dir, "dovecot.stderr"))
            try:
                self.wait_ready(timeout)
                return self
            except RuntimeError as e:
                err = e
                self.stop()
        raise RuntimeError("%s did not start: %s\n%s" % (self.what, err, self.log_tail()))

    def log_tail(self, n=30):
        out = []
        for p in (os.path.join(self.dir, "dovecot.stderr"), self.log):
            try:
                with open(p, errors="replace") as f:
                    out += f.readlines()[-n:]
            except OSError:
                pass
        return "".join(out)

# ---------------------------------------------------------------- SMTP


class SmtpServer(ServerProcess):
    """aiosmtpd (smtp_server.py) storing messages in dir/spool."""

    def __init__(self, dir, host="127.0.0.1"):
        self.dir = os.path.abspath(dir)
        self.host = host
        self.spool = os.path.join(self.dir, "spool")
        self.proc = None
        self.port = None

    def start(self, timeout=30.0):
        os.makedirs(self.spool, exist_ok=True)
        ready = os.path.join(self.dir, "smtp.port")
        if os.path.exists(ready):
            os.unlink(ready)
        self.spawn([DEBIAN_PYTHON, os.path.join(HERE, "smtp_server.py"), "--host", self.host,
                    "--port", "0", "--spool", self.spool, "--ready", ready], os.path.join(self.dir, "smtp.log"))
        deadline = time.monotonic() + timeout
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                with open(os.path.join(self.dir, "smtp.log"), errors="replace") as f:
                    raise RuntimeError("SMTP server did not start:\n" + f.read())
            time.sleep(0.05)
        with open(ready) as f:
            self.port = int(f.read())
        wait_greeting((self.host, self.port), b"220", timeout, self.proc)
        return self

    def messages(self):
        """[(meta dict, content bytes)] of every message received so far."""
        import json

        out = []
        for fn in sorted(os.listdir(self.spool)):
            if fn.endswith(".json"):
                base = os.path.join(self.spool, fn[:-5])
                with open(base + ".json") as f:
                    meta = json.load(f)
                with open(base + ".eml", "rb") as f:
                    out.append((meta, f.read()))
        return out

class MailServers:
    """Dovecot + SMTP server under one directory; stop() is idempotent."""

    def __init__(self, dir, set_name="test"):
        self.dir = os.path.abspath(dir)
        self.users = message_set(set_name)
        self.dovecot = Dovecot(os.path.join(self.dir, "dovecot"), self.users)
        self.smtp = SmtpServer(os.path.join(self.dir, "smtp"))

    def start(self):
        try:
            self.dovecot.prepare()
            self.dovecot.start()
            self.smtp.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        # signal both first, then wait: Dovecot takes about a second
        self.smtp.terminate()
        self.dovecot.terminate()
        self.smtp.stop()
        self.dovecot.stop()

    def env(self):
        return {
            "IMAP_PORT": self.dovecot.imap_port,
            "POP3_PORT": self.dovecot.pop3_port,
            "IMAP_SOCKET": self.dovecot.imap_socket,
            "SMTP_PORT": self.smtp.port,
            "SMTP_SPOOL": self.smtp.spool,
            "DOVECOT_PID": self.dovecot.pid,
            "SMTP_PID": self.smtp.pid,
            "DOVECOT_LOG": self.dovecot.log,
        }


def serve(args):
    servers = MailServers(args.dir, args.set)
    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        servers.start()
        if args.ready:
            tmp = args.ready + ".tmp"
            with open(tmp, "w") as f:
                for k, v in servers.env().items():
                    f.write("%s=%s\n" % (k, v))
            os.rename(tmp, args.ready)
        while not stopping:
            for name, srv in (("dovecot", servers.dovecot), ("smtp", servers.smtp)):
                if srv.proc is None or srv.proc.poll() is not None:
                    sys.stderr.write("mailserver: %s exited unexpectedly\n" % name)
                    stopping.append(0)
            time.sleep(0.2)
    finally:
        servers.stop()
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="start Dovecot and the SMTP server until signalled")
    s.add_argument("--dir", required=True)
    s.add_argument("--set", default="demo", choices=("demo", "test"))
    s.add_argument("--ready")
    sub.add_parser("bigsha", help="print the sha256 of the big test message file")
    args = ap.parse_args()
    if args.cmd == "serve":
        return serve(args)
    if args.cmd == "bigsha":
        print(hashlib.sha256(big_message()).hexdigest())
        return 0


if __name__ == "__main__":
    sys.exit(main())
