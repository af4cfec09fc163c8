"""systemd without systemd: the readiness protocol (Type=notify) on a
NOTIFY_SOCKET the test owns, and journal lines (JOURNAL_STREAM) that carry
their syslog priority instead of a timestamp."""

import os
import re
import shutil
import signal
import socket
import struct
import time

import harness
from harness import PosternTestCase, TcpBackend, free_port, plain_connect, svc, wait_until

STAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
LEVEL_PRIORITY = {"error": 3, "warn": 4, "info": 6, "debug": 7}


class NotifySocket:
    """The service manager's end: a datagram socket that also learns each
    sender's PID (SO_PASSCRED), as systemd does."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(path)
        if path.startswith("/"):
            os.chmod(path, 0o777)  # as systemd's: writable after the switch of user
        self.name = path if path.startswith("/") else "@" + path[1:]
        self.messages = []  # (pid, {NAME: VALUE}, raw text)

    def _drain(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except (socket.timeout, BlockingIOError):
            return False
        pid = None
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", cdata[:12])[0]
        text = data.decode()
        fields = dict(line.split("=", 1) for line in text.split("\n") if "=" in line)
        self.messages.append((pid, fields, text))
        return True

    def wait(self, name, value=None, timeout=10.0, after=0):
        """The first message from index AFTER on that sets NAME (to VALUE);
        (index, fields)."""
        deadline = time.monotonic() + timeout * harness.SLOW
        i = after
        while True:
            while i < len(self.messages):
                fields = self.messages[i][1]
                if name in fields and (value is None or fields[name] == value):
                    return i, fields
                i += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %s%s from postern; got %r"
                                     % (name, "=" + value if value else "", [m[2] for m in self.messages]))
            self._drain(left)

    def collect(self, quiet=0.3):
        while self._drain(quiet):
            pass
        return self.messages

    def close(self):
        self.sock.close()


class SystemdNotify(PosternTestCase):
    NEEDS_SERVERS = False

    def notify_postern(self, services, global_=None, abstract=False, wrap=None):
        p = self.postern(start=False)
        p.write_config(services, global_)
        path = ("\0postern-test-%d-%d" % (os.getpid(), p.n_listen() + free_port())) if abstract \
            else os.path.join(p.dir, "notify.sock")
        ns = NotifySocket(path)
        self.addCleanup(ns.close)
        p.start(wait=False, wrap=wrap, env_extra={"NOTIFY_SOCKET": ns.name})
        return p, ns

    def test_ready_only_after_every_listener_is_bound(self):
        services = [("imaps", svc("imap")), ("pop3s", svc("pop3")), ("plain", svc("imap", tls="off"))]
        p, ns = self.notify_postern(services)
        _, fields = ns.wait("READY", "1")
        # Already in the log when READY came: every listener was bound.
        self.assertEqual(len(p.find(event="listening", who="postern")), 3, p.stderr())
        for name, _ in services:
            plain_connect(p.port(name)).close()
        self.assertEqual(fields.get("STATUS"), "3 services, 0 sessions, 1 worker")
        p.wait_ready()

    def test_ready_only_after_privileges_are_dropped(self):
        if os.getuid() != 0:
            self.skipTest("needs root to switch user")
        # Started as root with a user: the master keeps root to read keys
        # at reload and serves nothing; READY=1 once it has bound and forked
        # the worker, which drops to the user before it accepts.
        p, ns = self.notify_postern([("imaps", svc("imap"))], {"user": "nobody", "group": "nogroup"})
        ns.wait("READY", "1")
        self.assertTrue(p.find(contains="worker 1 started pid="), p.stderr())
        p.wait_for(contains="running as uid=%d" % 65534)
        p.wait_ready()

    def test_started_as_the_configured_user_stays_it(self):
        """systemd's User=postern: postern starts as the user its config
        names, without the right to switch user, and serves."""
        if os.getuid() != 0 or not shutil.which("setpriv"):
            self.skipTest("needs root and setpriv(1) to start as another user")
        # tls = off: the test's key is readable by root alone
        p, ns = self.notify_postern([("imap", svc("imap", tls="off"))],
                                    {"user": "nobody", "group": "nogroup", "pidfile": None},
                                    wrap=lambda argv: ["setpriv", "--reuid=nobody", "--regid=nogroup",
                                                       "--clear-groups", "--inh-caps=-all", *argv])
        ns.wait("READY", "1")
        self.assertTrue(p.find(contains="running as uid=65534 gid=65534"), p.stderr())
        p.wait_ready()

    def test_bind_failure_sends_no_ready_and_says_why(self):
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        self.addCleanup(blocker.close)
        port = blocker.getsockname()[1]
        p, ns = self.notify_postern([("imaps", svc("imap", port=port))])
        p.expect_exit = 2
        self.assertEqual(p.wait_exit(10), 2, p.stderr())
        msgs = ns.collect()
        self.assertFalse([m for m in msgs if m[1].get("READY") == "1"], msgs)
        self.assertTrue(any("127.0.0.1:%d" % port in m[1].get("STATUS", "") for m in msgs), msgs)

    def test_reload_sends_reloading_with_monotonic_usec_then_ready(self):
        p, ns = self.notify_postern([("imaps", svc("imap"))])
        i, _ = ns.wait("READY", "1")
        p.wait_ready()
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        p.signal(signal.SIGHUP)
        j, fields = ns.wait("RELOADING", "1", after=i + 1)
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.assertTrue(before <= int(fields["MONOTONIC_USEC"]) <= after, fields)
        _, fields = ns.wait("READY", "1", after=j + 1)
        self.assertEqual(fields.get("STATUS"), "1 service, 0 sessions, 1 worker")
        p.wait_for(event="configuration")

    def test_refused_reload_is_told_and_stays_ready(self):
        p, ns = self.notify_postern([("imaps", svc("imap"))])
        i, _ = ns.wait("READY", "1")
        p.wait_ready()
        with open(p.conf, "a") as f:
            f.write("\n[broken]\nprotocol = nonsense\n")
        p.signal(signal.SIGHUP)
        j, _ = ns.wait("RELOADING", "1", after=i + 1)
        _, fields = ns.wait("READY", "1", after=j + 1)
        self.assertIn("reload refused", fields.get("STATUS", ""))
        p.write_config(p.services)  # stop() expects a clean exit

    def test_sigterm_sends_stopping(self):
        p, ns = self.notify_postern([("imaps", svc("imap"))])
        ns.wait("READY", "1")
        p.wait_ready()
        p.stop()
        ns.wait("STOPPING", "1")

    def test_master_alone_speaks_and_counts_sessions_and_workers(self):
        backend = TcpBackend(greeting=b"hello\r\n")
        self.addCleanup(backend.stop)
        services = [("raw", svc("raw", tls="off", backend=backend.address)), ("imaps", svc("imap"))]
        p, ns = self.notify_postern(services, {"workers": 2})
        i, fields = ns.wait("READY", "1")
        self.assertEqual(fields.get("STATUS"), "2 services, 0 sessions, 2 workers")
        p.wait_ready()
        c = plain_connect(p.port("raw"))
        self.addCleanup(c.close)
        self.assertEqual(c.recv(64), b"hello\r\n")
        p.signal(signal.SIGHUP)  # a reload's READY carries a fresh status
        j, _ = ns.wait("RELOADING", "1", after=i + 1)
        _, fields = ns.wait("READY", "1", after=j + 1)
        self.assertEqual(fields.get("STATUS"), "2 services, 1 session, 2 workers")
        c.close()
        p.stop()
        ns.wait("STOPPING", "1")
        senders = {m[0] for m in ns.collect()}
        self.assertEqual(senders, {p.pid}, "only the master may notify")

    def test_abstract_notify_socket(self):
        p, ns = self.notify_postern([("imaps", svc("imap"))], abstract=True)
        self.assertTrue(ns.name.startswith("@"))
        ns.wait("READY", "1")
        p.wait_ready()


class JournalStream(PosternTestCase):
    NEEDS_SERVERS = False

    def postern_on(self, stream_of_stderr):
        """A postern whose JOURNAL_STREAM names its own stderr file (True) or
        another file (False)."""
        p = self.postern(start=False)
        p.write_config([("imaps", svc("imap"))])
        open(p.stderr_path, "ab").close()
        other = os.path.join(p.dir, "other")
        open(other, "w").close()
        st = os.stat(p.stderr_path if stream_of_stderr else other)
        p.start(env_extra={"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)})
        # an error-level line: a refused reload
        with open(p.conf, "a") as f:
            f.write("\n[broken]\nprotocol = nonsense\n")
        p.signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in p.stderr(), msg="the refused reload", detail=p.stderr)
        p.write_config(p.services)
        return p

    def test_journal_lines_carry_their_priority_and_no_timestamp(self):
        p = self.postern_on(True)
        lines = p.stderr().splitlines()
        self.assertTrue(lines)
        seen = set()
        for line in lines:
            m = re.match(r"^<(\d)>(error|warn|info|debug) \S+ ", line)
            self.assertTrue(m, "not a journal line: %r" % line)
            self.assertEqual(int(m.group(1)), LEVEL_PRIORITY[m.group(2)], line)
            self.assertFalse(re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", line), line)
            seen.add(m.group(2))
        self.assertTrue({"info", "error"} <= seen, seen)

    def test_stderr_that_is_not_the_journal_keeps_timestamps(self):
        p = self.postern_on(False)
        lines = p.stderr().splitlines()
        self.assertTrue(lines)
        for line in lines:
            self.assertRegex(line, STAMP_RE)
            self.assertFalse(line.startswith("<"), line)


def exec_reload_of(unit):
    """The ExecReload= command of UNIT (in packaging/) that signals postern,
    as systemd would run it: $$ and %% unescaped, split into argv."""
    import shlex

    with open(os.path.join(harness.ROOT, "packaging", unit)) as f:
        for line in f:
            if line.startswith("ExecReload=") and "HUP" in line:
                cmd = line[len("ExecReload="):].strip().replace("$$", "$").replace("%%", "%")
                return shlex.split(cmd)
    raise AssertionError("no ExecReload= that sends SIGHUP in " + unit)


class UnitExecReload(PosternTestCase):
    """The units' ExecReload fails when postern refuses the reload (here: a
    new address already taken, which postern -t cannot know)."""

    NEEDS_SERVERS = False

    def check_unit(self, unit, workers):
        argv = exec_reload_of(unit)
        p = self.postern(start=False)
        rundir = os.path.join(p.dir, "run")
        os.mkdir(rundir)
        p.write_config([("imaps", svc("imap"))], {"workers": workers})
        p.start(env_extra={"RUNTIME_DIRECTORY": rundir})
        env = dict(os.environ, MAINPID=str(p.pid), RUNTIME_DIRECTORY=rundir)

        r = harness.run(argv, env_extra=env, timeout=40)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        with open(os.path.join(rundir, "reload")) as f:
            self.assertEqual(f.read(), "ok\n")

        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        self.addCleanup(blocker.close)
        taken = blocker.getsockname()[1]
        p.write_config([("imaps", svc("imap")), ("new", svc("imap", port=taken))], {"workers": workers})
        r = harness.run(argv, env_extra=env, timeout=40)
        self.assertNotEqual(r.returncode, 0, "a refused reload must fail ExecReload")
        self.assertRegex(r.stderr.decode(), r"postern: refused: .*127\.0\.0\.1:%d" % taken)
        p.wait_for(contains="reload refused")

    def test_system_unit_reload_fails_when_postern_refuses(self):
        self.check_unit("postern.service", 1)

    def test_user_unit_reload_fails_when_postern_refuses_with_workers(self):
        self.check_unit("postern-user.service", 2)
