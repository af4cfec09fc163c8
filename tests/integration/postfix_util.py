"""A private Postfix (Debian's postfix 3.x) for tests that need the real
thing: Postfix splits SMTP commands on any white space, runs XCLIENT for
hosts it trusts and skips the chunk of a BDAT it refuses, which aiosmtpd
does not show.

    pf = Postfix(dir, main={"smtpd_authorized_xclient_hosts": "127.0.0.0/8"}).start()
    ... backend = pf.address ...
    pf.queued()        # ids of the messages it accepted
    pf.sessions()      # its "disconnect from ... ehlo=1 mail=1 ..." lines
    pf.stop()

The instance has its own config dir (`postfix -c DIR start`), queue and data
directories, a log file of its own (postlogd) and one smtpd on a free
loopback port. Only smtpd, cleanup, trivial-rewrite, proxymap, anvil and
postlogd run: no queue manager, so every accepted message stays in the
queue's incoming directory, where a test finds it. mynetworks is
127.0.0.0/8 as Debian ships it: postern's address may relay.
"""

import os
import re
import signal
import subprocess
import tempfile
import time

import mailserver
from harness import PASSWORD, SMTP_SSL, USER, env, free_port, wait_until
from mailserver import wait_greeting

MAIN_CF = {
    "compatibility_level": "3.6",
    "myhostname": "postfix.test",
    "mydomain": "postfix.test",
    "mydestination": "",
    "relay_domains": "",
    "inet_interfaces": "127.0.0.1",
    "inet_protocols": "ipv4",
    "mynetworks": "127.0.0.0/8",
    "smtpd_peername_lookup": "no",
    "smtpd_banner": "$myhostname ESMTP",
    "maillog_file_prefixes": "/",
}

# name, type, private, unpriv, chroot, wakeup, maxproc, command
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd{smtpd_opts}
cleanup unix n - n - 0 cleanup
rewrite unix - - n - - trivial-rewrite
proxymap unix - - n - - proxymap
anvil unix - - n - 1 anvil
postlog unix-dgram n - n - 1 postlogd
"""

QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")

# The relay tests: Debian's order of smtpd_relay_restrictions, with
# mynetworks only the address postern connects from, so that a client from
# 127.0.0.9 (SourceSMTP_SSL) stands for one on the Internet.
RELAY = {
    "mynetworks": "127.0.0.1/32",
    "smtpd_relay_restrictions": "permit_mynetworks permit_sasl_authenticated defer_unauth_destination",
}
OUTSIDE = "victim@outside.example"
CLIENT_ADDR = "127.0.0.9"


class SourceSMTP_SSL(SMTP_SSL):
    """smtplib over TLS to postern from CLIENT_ADDR."""

    def _get_socket(self, host, port, timeout):
        self.source_address = (CLIENT_ADDR, 0)
        return super()._get_socket(host, port, timeout)


def relay_attempt(port, password=None):
    """From CLIENT_ADDR through postern at PORT: EHLO, AUTH as alice if
    PASSWORD is given, MAIL and RCPT to an outside domain, and the message
    if RCPT was accepted. Returns RCPT's (code, text)."""
    with SourceSMTP_SSL(port) as c:
        c.ehlo()
        if password is not None:
            c.login(USER, password)
        if c.mail("someone@client.test")[0] != 250:
            raise AssertionError("MAIL refused")
        code, text = c.rcpt(OUTSIDE)
        if code == 250:
            c.data(b"Subject: relayed\r\n\r\nrelayed through postern\r\n")
        c.quit()
    return code, text


class SaslDovecot(mailserver.Dovecot):
    """A Dovecot whose auth service also listens on a socket Postfix's
    smtpd (an unprivileged user) may use: SMTP AUTH checked against
    alice's real password. main(): the main.cf parameters for it."""

    what = "SASL Dovecot"

    def __init__(self, dir):
        super().__init__(dir, [(USER, PASSWORD, [])])
        self.auth_socket = os.path.join(self.dir, "run", "auth-postfix")

    def config(self):
        return (super().config().replace("instance_name = postern-test-", "instance_name = postern-sasl-")
                + "service auth {\n  unix_listener auth-postfix {\n    mode = 0666\n  }\n}\n")

    def wait_ready(self, timeout):
        super().wait_ready(timeout)
        wait_until(lambda: os.path.exists(self.auth_socket), timeout, msg="Dovecot's auth socket")

    def main(self):
        return {"smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "dovecot",
                "smtpd_sasl_path": self.auth_socket}

    @classmethod
    def shared(cls):
        """The run's one, started on first use and stopped with the run's
        mail servers: it only answers whether alice's password is right,
        and a Dovecot takes a second to stop."""
        global _SASL_DOVECOT
        if _SASL_DOVECOT is None:
            d = cls(tempfile.mkdtemp(prefix="dovecot-sasl-", dir=env().tmp))
            d.prepare()
            d.start()
            _SASL_DOVECOT = env().share(d)
        return _SASL_DOVECOT


_SASL_DOVECOT = None


class Postfix:
    def __init__(self, dir, main=None, smtpd_opts=None):
        """main: main.cf parameters added to (or replacing) MAIN_CF;
        smtpd_opts: "-o name=value" overrides of the smtpd service."""
        self.dir = os.path.abspath(dir)
        self.main = dict(MAIN_CF, **(main or {}))
        self.smtpd_opts = dict(smtpd_opts or {})
        self.queue = os.path.join(self.dir, "queue")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "maillog")
        self.port = None
        self.pid = None

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def _write_config(self):
        main = dict(self.main, queue_directory=self.queue, data_directory=self.data, maillog_file=self.log)
        with open(os.path.join(self.dir, "main.cf"), "w") as f:
            f.writelines("%s = %s\n" % kv for kv in main.items())
        opts = "".join("\n  -o %s=%s" % kv for kv in self.smtpd_opts.items())
        with open(os.path.join(self.dir, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port=self.port, smtpd_opts=opts))
        # Postfix reads a config file changed within the last two seconds
        # again and again until it has "cooled down" (0.3 s naps): dated
        # back, the files are read once by each of `postfix start`'s many
        # postconf calls and the daemons
        past = time.time() - 60
        for name in ("main.cf", "master.cf"):
            os.utime(os.path.join(self.dir, name), (past, past))

    def _postfix(self, *args):
        return subprocess.run(["postfix", "-c", self.dir] + list(args), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)

    def start(self, timeout=30.0):
        os.makedirs(self.queue, exist_ok=True)
        os.makedirs(self.data, exist_ok=True)
        for d in (self.dir, self.queue):
            os.chmod(d, 0o755)
        # postfix-script wants the data directory to be the mail owner's
        subprocess.run(["chown", "postfix", self.data], check=True)
        err = None
        for _ in range(3):
            self.port = free_port()
            self._write_config()
            r = self._postfix("start")
            if r.returncode != 0:
                err = r.stdout.decode(errors="replace")
                continue
            try:
                self.pid = wait_until(self._master_pid, timeout, msg="Postfix's master.pid")
                # an smtpd that reads a PROXY header first greets after one
                first = b"PROXY TCP4 127.0.0.1 127.0.0.1 1 25\r\n" if "smtpd_upstream_proxy_protocol" in self.smtpd_opts else b""
                wait_greeting(("127.0.0.1", self.port), b"220", timeout, first=first)
                return self
            except (AssertionError, RuntimeError) as e:
                err = str(e)
                self.stop()
        raise RuntimeError("Postfix did not start: %s\n%s" % (err, self.log_text()[-3000:]))

    def _master_pid(self):
        try:
            with open(os.path.join(self.queue, "pid", "master.pid")) as f:
                pid = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) else None

    def stop(self, timeout=10.0):
        """SIGTERM to the master by its PID (what `postfix stop` sends, but
        without its 1 s naps) and SIGKILL if it is still there after
        TIMEOUT; `postfix stop` if its PID is unknown."""
        pid, self.pid = self.pid, None
        if pid is None:
            self._postfix("stop")
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)

    # ------------------------------------------------------------ what it did

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def queued(self):
        """Queue ids of every message in the queue (none leaves it)."""
        ids = []
        for q in QUEUES:
            for root, _, files in os.walk(os.path.join(self.queue, q)):
                ids += files
        return sorted(ids)

    def queue_file(self, qid):
        """The raw queue file (records hold the envelope and the text)."""
        for q in QUEUES:
            for root, _, files in os.walk(os.path.join(self.queue, q)):
                if qid in files:
                    with open(os.path.join(root, qid), "rb") as f:
                        return f.read()
        raise KeyError(qid)

    def sessions(self):
        """smtpd's summary of each finished session: the command counts
        after "disconnect from NAME[ADDR]", e.g. "ehlo=1 mail=1 quit=1
        commands=3"."""
        return re.findall(r"postfix/smtpd\[\d+\]: disconnect from \S+ (.*)", self.log_text())

    def wait_sessions(self, n, timeout=10.0):
        """The session summaries once there are at least n of them."""
        return wait_until(lambda: len(self.sessions()) >= n and self.sessions(), timeout,
                          msg="%d Postfix sessions" % n, detail=lambda: "\n" + self.log_text()[-3000:])


def _alive(pid):
    """PID names a process that has not exited (a zombie waiting for its
    reaper has: the master is nobody's child here)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
