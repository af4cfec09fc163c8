"""`workers` in [global]: a master that binds the listeners and forks N
worker processes sharing them (SO_REUSEPORT). Connections spread over the
workers; a dead worker is replaced (its queued connections taken by the
replacement); SIGHUP starts a new set of workers while the old ones finish
their sessions; SIGTERM/SIGINT stop everything; workers follow a master that
was killed; metrics, session ids and the random ticket key are shared;
max_connections is per worker; `-t` and `workers = auto`.

Which worker holds a session is found from /proc: the inode of postern's
side of the connection (/proc/net/tcp, local port = the service's, remote
port = the client's) among the socket links in /proc/PID/fd."""

import collections
import datetime
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import time

import harness
from harness import (
    POSTERN,
    SLOW,
    PosternTestCase,
    Reader,
    client_context,
    closed_by_peer,
    env,
    free_port,
    imap_cmd,
    plain_connect,
    run,
    svc,
    tls_connect,
)
from test_observability import scrape

STARTED_RE = re.compile(r"\bworker (\d+) started pid=(\d+)\b")
DIED_RE = re.compile(r"\bworker (\d+) pid=(\d+) (?:killed by signal (\d+)|exited with status (\d+)); "
                     r"starting a new one( in 1s)?$")
FINISHED_RE = re.compile(r"\bworker (\d+) pid=(\d+) of the previous configuration finished\b")


# ---------------------------------------------------------------- /proc helpers


def proc_stat(pid):
    """(state, ppid) of a process, None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid):
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def children(pid):
    """Live direct children of pid."""
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st and st[1] == pid and st[0] not in ("Z", "X"):
                out.add(int(d))
    return out


def is_postern(pid):
    try:
        return os.path.realpath("/proc/%d/exe" % pid) == os.path.realpath(POSTERN)
    except OSError:
        return False


def socket_inodes(pid):
    out = set()
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return out
    for fd in fds:
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


def accepted_inodes(port):
    """{client port: inode} of postern's side of the IPv4 connections to
    local port `port` (inode 0 while still in an accept queue: left out)."""
    out = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            local, remote, inode = parts[1], parts[2], int(parts[9])
            if int(local.split(":")[1], 16) == port and remote.split(":")[1] != "0000" and inode:
                out[int(remote.split(":")[1], 16)] = inode
    return out


def owners(pids, port, client_ports):
    """{client port: the pid among pids that holds postern's side of it, or None}."""
    inodes = accepted_inodes(port)
    held = {pid: socket_inodes(pid) for pid in pids}
    out = {}
    for cp in client_ports:
        ino = inodes.get(cp)
        out[cp] = next((pid for pid, s in held.items() if ino in s), None) if ino else None
    return out


def poll(pred, timeout, what, detail=lambda: ""):
    return harness.wait_until(pred, timeout, msg=what, detail=detail)


def log_time(line):
    return datetime.datetime.strptime(line.ts, "%Y-%m-%dT%H:%M:%S.%fZ")


def kill_quietly(pid, sig=signal.SIGKILL):
    if alive(pid) and is_postern(pid):
        try:
            os.kill(pid, sig)
        except OSError:
            pass


# ---------------------------------------------------------------- the tests


class Workers(PosternTestCase):
    def setUp(self):
        super().setUp()
        self._worker_pids = set()
        # registered first, so it runs last: after every postern was stopped
        self.addCleanup(self._no_worker_left)

    def _no_worker_left(self):
        """Every worker this test saw must be gone once its master stopped;
        stragglers are killed (by PID) and fail the test."""
        pids = set(self._worker_pids)
        for p in self._posterns:
            pids.update(int(m.group(2)) for m, _ in self.matches(p, STARTED_RE))
        pids = {pid for pid in pids if alive(pid) and is_postern(pid)}
        if not pids:
            return
        deadline = time.monotonic() + 5 * SLOW
        while time.monotonic() < deadline and any(alive(pid) for pid in pids):
            time.sleep(0.05)
        left = sorted(pid for pid in pids if alive(pid) and is_postern(pid))
        for pid in left:
            kill_quietly(pid, signal.SIGCONT)
            kill_quietly(pid)
        if left:
            raise AssertionError("worker processes %s still running after their master stopped" % left)

    # --- logs
    @staticmethod
    def matches(p, regex):
        out = []
        for ln in p.lines():
            m = regex.search(ln.raw)
            if m:
                out.append((m, ln))
        return out

    def wait_workers(self, p, n, total=None, timeout=10.0):
        """Wait for `total` (default n) "worker I started pid=P" lines, the
        latest for each I in 1..n a live child of the master; {I: pid}."""
        total = n if total is None else total
        state = {}

        def ready():
            started = self.matches(p, STARTED_RE)
            latest = {}
            for m, _ in started:
                latest[int(m.group(1))] = int(m.group(2))
            kids = children(p.pid)
            state.update(n_lines=len(started), latest=latest, kids=kids)
            if len(started) < total or sorted(latest) != list(range(1, n + 1)):
                return None
            if not set(latest.values()) <= kids:
                return None
            return latest

        if not p.running():
            raise AssertionError("postern is not running:\n" + p.log_text()[-4000:])
        latest = poll(ready, timeout, "%d worker(s) started (%d start lines)" % (n, total),
                      lambda: ": %r; log:\n%s" % (state, p.log_text()[-4000:]))
        self._worker_pids.update(latest.values())
        return latest

    def wait_died(self, p, index, pid, sig=signal.SIGKILL):
        regex = re.compile(r"\bworker %d pid=%d killed by signal %d; starting a new one( in 1s)?$"
                           % (index, pid, sig))
        got = poll(lambda: self.matches(p, regex), 5, "the death of worker %d pid=%d to be logged" % (index, pid),
                   lambda: "; log:\n" + p.log_text()[-4000:])
        m, ln = got[0]
        self.assertEqual(ln.level, "warn", ln.raw)
        return m, ln

    def wait_finished(self, p, pid, timeout=5.0):
        regex = re.compile(r"\bworker \d+ pid=%d of the previous configuration finished\b" % pid)
        poll(lambda: self.matches(p, regex), timeout, "old worker pid=%d to finish" % pid,
             lambda: "; log:\n" + p.log_text()[-4000:])
        poll(lambda: not alive(pid), 5, "old worker pid=%d to exit" % pid)

    # --- clients
    def connect(self, port, login=False, greet_timeout=10.0, check=True):
        """A plaintext IMAP connection through postern: (sock, Reader, client
        port); the greeting is read into reader.greeting (None if it did not
        come in time) and, with check, must be * OK."""
        s = plain_connect(port)
        self.addCleanup(s.close)
        r = Reader(s)
        s.settimeout(greet_timeout * SLOW)
        try:
            greet = r.readline()
        except socket.timeout:
            greet = None
        s.settimeout(10 * SLOW)
        if login:
            self.assertIsNotNone(greet, "no greeting")
        if greet is not None and check:
            self.assertTrue(greet.startswith(b"* OK"), greet)
        if login:
            imap_cmd(r, "l1", "LOGIN %s %s" % (harness.USER, harness.PASSWORD))
        r.greeting = greet
        return s, r, s.getsockname()[1]

    def wait_owners(self, pids, port, client_ports):
        """{client port: pid} once every connection is held by one of pids."""
        last = {}

        def done():
            last.clear()
            last.update(owners(pids, port, client_ports))
            return None not in last.values()

        poll(done, 5, "the connections to be accepted by %s" % sorted(pids),
             lambda: ": %r" % {cp: pid for cp, pid in last.items() if pid is None})
        return dict(last)

    def sessions_on_each(self, p, workers, login=False, at_least=1, limit=40):
        """Open IMAP sessions until every worker holds at_least of them;
        list of (sock, reader, client port, worker pid)."""
        pids = set(workers.values())
        out = []
        count = collections.Counter()
        while any(count[pid] < at_least for pid in pids):
            if len(out) >= limit:
                self.fail("%d connections, and still not %d on each worker: %r" % (limit, at_least, count))
            s, r, cp = self.connect(p.port(), login=login)
            owner = self.wait_owners(pids, p.port(), [cp])[cp]
            count[owner] += 1
            out.append((s, r, cp, owner))
        return out

    def served(self, port, tls=False):
        """A full IMAP session (greeting, LOGIN, LOGOUT)."""
        s = tls_connect(port) if tls else plain_connect(port)
        try:
            r = harness.imap_login(s)
            imap_cmd(r, "z", "LOGOUT")
        finally:
            s.close()

    # ------------------------------------------------------------ spreading
    def test_connections_spread_over_workers(self):
        p = self.postern([("imap", svc("imap", tls="off"))], {"workers": 2})
        w = self.wait_workers(p, 2)
        with open(p.pidfile) as f:
            self.assertEqual(int(f.read()), p.pid, "the pidfile does not hold the master's PID")
        started = p.wait_for(regex=r"\bpostern %s started workers=2$" % re.escape(harness.version()))
        self.assertEqual(started[0].level, "info")
        pids = sorted(w.values())
        self.assertEqual(len(set(pids)), 2, w)
        self.assertNotIn(p.pid, pids)
        self.assertEqual(children(p.pid), set(pids), "the workers are not (all) the master's direct children")
        at_rest = {pid: len(socket_inodes(pid)) for pid in pids}
        ports = [self.connect(p.port())[2] for _ in range(40)]
        held = self.wait_owners(pids + [p.pid], p.port(), ports)
        count = collections.Counter(held.values())
        self.assertEqual(count[p.pid], 0, "the master holds client connections")
        for pid in pids:
            self.assertGreater(count[pid], 0, "worker %d got none of 40 connections: %r" % (pid, count))
            self.assertGreater(len(socket_inodes(pid)), at_rest[pid], "worker %d holds no more sockets" % pid)

    def test_max_connections_per_worker(self):
        """max_connections = 1 with 2 workers: one session per worker, so
        exactly two at once; the others get * BYE."""
        p = self.postern([("imap", svc("imap", tls="off"))], {"workers": 2, "max_connections": 1})
        w = self.wait_workers(p, 2)
        pids = set(w.values())
        accepted, refused = [], 0
        for _ in range(60):
            if len(accepted) == 2 and refused >= 8:
                break
            s, r, cp = self.connect(p.port(), check=False)
            if r.greeting.startswith(b"* BYE"):
                self.assertTrue(closed_by_peer(s, 3 * SLOW), "refused connection left open")
                refused += 1
                continue
            self.assertTrue(r.greeting.startswith(b"* OK"), r.greeting)
            accepted.append((s, r, cp))
            self.assertLessEqual(len(accepted), 2, "a third session was accepted with max_connections = 1 "
                                                   "and 2 workers")
        self.assertEqual(len(accepted), 2, "sessions accepted: %d (refused %d)" % (len(accepted), refused))
        self.assertGreaterEqual(refused, 8)
        held = self.wait_owners(pids, p.port(), [cp for _, _, cp in accepted])
        self.assertEqual(set(held.values()), pids, "the two sessions are not on different workers")
        for s, r, _ in accepted:
            imap_cmd(r, "n", "NOOP")
            s.close()

    # ------------------------------------------------------------ a worker dies
    def test_killed_worker_replaced_others_unaffected(self):
        p = self.postern([("imap", svc("imap", tls="off"))], {"workers": 2})
        w = self.wait_workers(p, 2)
        sessions = self.sessions_on_each(p, w, login=True, at_least=2)
        victim, other = w[1], w[2]
        os.kill(victim, signal.SIGKILL)
        self.wait_died(p, 1, victim)
        w2 = self.wait_workers(p, 2, total=3)
        self.assertNotEqual(w2[1], victim)
        self.assertEqual(w2[2], other, "the other worker was replaced too")
        self.assertEqual(children(p.pid), {w2[1], other})
        self.assertTrue(p.running())
        for s, r, cp, owner in sessions:
            if owner == victim:
                self.assertTrue(closed_by_peer(s, 3 * SLOW), "session of the killed worker still open")
        for s, r, cp, owner in sessions:
            if owner == other:
                imap_cmd(r, "n", "NOOP")
                self.assertIn(b"EXISTS", imap_cmd(r, "e", "EXAMINE INBOX"))
        # new connections are served, some by the replacement
        on_new = 0
        for i in range(40):
            s, r, cp = self.connect(p.port(), login=True)
            owner = self.wait_owners({w2[1], other}, p.port(), [cp])[cp]
            imap_cmd(r, "z", "LOGOUT")
            s.close()
            on_new += owner == w2[1]
            if on_new >= 2 and i >= 5:
                break
        self.assertGreaterEqual(on_new, 2, "the replacement worker serves no connection")
        for s, r, cp, owner in sessions:
            if owner == other:
                imap_cmd(r, "z", "LOGOUT")
                s.close()
                self.assertSessionEnd(p, cp)

    def test_queued_connections_taken_by_replacement(self):
        """Connections the kernel queued on a worker's socket while it hung
        are served by its replacement: the master holds that socket."""
        p = self.postern([("imap", svc("imap", tls="off"))], {"workers": 2})
        w = self.wait_workers(p, 2)
        victim = w[1]
        os.kill(victim, signal.SIGSTOP)
        try:
            queued, answered = [], 0
            for _ in range(60):
                s, r, cp = self.connect(p.port(), greet_timeout=0.3)
                if r.greeting is None:
                    queued.append((s, r, cp))
                else:
                    answered += 1
                if len(queued) >= 3 and answered:
                    break
            self.assertTrue(queued, "no connection went to the stopped worker")
            self.assertGreater(answered, 0, "the other worker answered none")
        finally:
            kill_quietly(victim)
            kill_quietly(victim, signal.SIGCONT)
        self.wait_died(p, 1, victim)
        w2 = self.wait_workers(p, 2, total=3)
        for s, r, cp in queued:
            s.settimeout(5 * SLOW)
            line = r.readline()
            self.assertTrue(line.startswith(b"* OK"), line)
            imap_cmd(r, "l", "LOGIN %s %s" % (harness.USER, harness.PASSWORD))
        held = self.wait_owners(set(w2.values()), p.port(), [cp for _, _, cp in queued])
        self.assertTrue(all(pid == w2[1] for pid in held.values()),
                        "queued connections not taken by the replacement %d: %r" % (w2[1], held))
        for s, r, cp in queued:
            imap_cmd(r, "z", "LOGOUT")
            s.close()

    def test_worker_dying_young_restarts_after_a_second(self):
        p = self.postern([("imap", svc("imap", tls="off"))], {"workers": 2})
        w = self.wait_workers(p, 2)
        time.sleep(1.2)  # lived more than a second: replaced at once
        os.kill(w[1], signal.SIGKILL)
        m, died = self.wait_died(p, 1, w[1])
        self.assertIsNone(m.group(1), "worker that lived over 1s not replaced at once: " + died.raw)
        w2 = self.wait_workers(p, 2, total=3)
        # the replacement killed at once: lived under a second
        os.kill(w2[1], signal.SIGKILL)
        m, died2 = self.wait_died(p, 1, w2[1])
        started2 = [ln for m_, ln in self.matches(p, STARTED_RE) if int(m_.group(2)) == w2[1]][0]
        lived = (log_time(died2) - log_time(started2)).total_seconds()
        if lived < 0.8:
            self.assertEqual(m.group(1), " in 1s", "worker that lived %.3fs: %s" % (lived, died2.raw))
        w3 = self.wait_workers(p, 2, total=4)
        started3 = [ln for m_, ln in self.matches(p, STARTED_RE) if int(m_.group(2)) == w3[1]][0]
        if m.group(1):
            delay = (log_time(started3) - log_time(died2)).total_seconds()
            self.assertGreaterEqual(delay, 0.9, "replacement started %.3fs after the death, not 1s" % delay)
        self.assertEqual(children(p.pid), {w3[1], w[2]})
        for _ in range(6):
            self.served(p.port())

    # ------------------------------------------------------------ SIGHUP
    def test_reload_new_service_old_session_survives(self):
        imaps = svc("imap")
        p = self.postern([("imaps", imaps)], {"workers": 2})
        old = self.wait_workers(p, 2)
        port = p.port()
        c = harness.IMAP4_SSL(port)
        self.addCleanup(c.sock.close)
        self.assertEqual(c.login(harness.USER, harness.PASSWORD)[0], "OK")
        self.assertEqual(c.select("INBOX", readonly=True)[0], "OK")
        cport = c.sock.getsockname()[1]
        holder = self.wait_owners(set(old.values()), port, [cport])[cport]
        idle = (set(old.values()) - {holder}).pop()
        plain = svc("imap", tls="off")
        p.write_config([("imaps", imaps), ("imap-plain", plain)], {"workers": 2})
        p.signal(signal.SIGHUP)
        p.wait_for(contains="configuration reloaded")
        new = self.wait_workers(p, 2, total=4)
        self.assertFalse(set(new.values()) & set(old.values()), "no new workers after the reload")
        # the idle old worker goes at once; the one with a session stays
        self.wait_finished(p, idle)
        self.assertEqual(c.noop()[0], "OK")
        self.assertEqual(c.select("INBOX", readonly=True)[0], "OK")
        # the new service is served
        self.served(p.port("imap-plain"))
        # new connections on the old port go to the new workers only
        for _ in range(8):
            s = tls_connect(port)
            r = Reader(s)
            self.assertTrue(r.readline().startswith(b"* OK"))
            cp = s.getsockname()[1]
            owner = self.wait_owners(set(new.values()) | {holder}, port, [cp])[cp]
            self.assertIn(owner, set(new.values()), "the old worker still accepts after the reload")
            s.close()
        self.assertEqual(c.noop()[0], "OK")
        self.assertTrue(alive(holder), "the old worker with a session exited before it ended")
        self.assertFalse(self.matches(p, re.compile(r"\bpid=%d of the previous configuration finished" % holder)))
        self.assertFalse(p.session_lines(cport, "end"), "the established session ended by SIGHUP")
        c.logout()
        self.assertSessionEnd(p, cport)
        self.wait_finished(p, holder)
        poll(lambda: children(p.pid) == set(new.values()), 5, "only the new workers left",
             lambda: ": %r" % children(p.pid))

    def test_reload_takes_over_queued_connections(self):
        """Connections queued for the old workers (stopped here) are
        served by the new ones: same listening sockets, nothing lost."""
        p = self.postern([("imap", svc("imap", tls="off"))], {"workers": 2})
        old = self.wait_workers(p, 2)
        for pid in old.values():
            os.kill(pid, signal.SIGSTOP)
        try:
            queued = [self.connect(p.port(), greet_timeout=0.05) for _ in range(12)]
            self.assertTrue(all(r.greeting is None for _, r, _ in queued), "a stopped worker answered")
            p.signal(signal.SIGHUP)
            p.wait_for(contains="configuration reloaded")
            new = self.wait_workers(p, 2, total=4)
            for s, r, cp in queued:
                s.settimeout(5 * SLOW)
                line = r.readline()
                self.assertTrue(line.startswith(b"* OK"), line)
            held = self.wait_owners(set(new.values()), p.port(), [cp for _, _, cp in queued])
            self.assertEqual(len(held), 12)
        finally:
            for pid in old.values():
                kill_quietly(pid, signal.SIGCONT)
        for pid in old.values():
            self.wait_finished(p, pid)
        for s, r, cp in queued:
            imap_cmd(r, "z", "LOGOUT")
            s.close()
        self.served(p.port())

    def test_bad_reload_refused_workers_unchanged(self):
        services = [("imap", svc("imap", tls="off"))]
        p = self.postern(services, {"workers": 2})
        w = self.wait_workers(p, 2)
        s, r, cp = self.connect(p.port(), login=True)
        for i, bad in enumerate(({"workers": 2, "no_such_key": "1"}, {"workers": 0})):
            with self.subTest(bad=bad):
                p.write_config(services, bad)
                p.signal(signal.SIGHUP)
                p.wait_for(level="error", contains="reload refused", count=i + 1)
                # nothing is logged when nothing changes: give a wrong restart
                # the time to show
                time.sleep(0.5 * SLOW)
                self.assertEqual(children(p.pid), set(w.values()), "workers changed by a refused reload")
                self.assertEqual(len(self.matches(p, STARTED_RE)), 2, "workers started by a refused reload")
                self.assertFalse(p.find(contains="configuration reloaded"))
                self.served(p.port())
                imap_cmd(r, "n", "NOOP")
        imap_cmd(r, "z", "LOGOUT")
        s.close()

    # ------------------------------------------------------------ stopping
    def test_sigterm_sigint_stop_everything(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with self.subTest(signal=sig.name):
                p = self.postern([("imap", svc("imap", tls="off"))], {"workers": 2, "shutdown_timeout": "20s"})
                w = self.wait_workers(p, 2)
                s, r, cp = self.connect(p.port(), login=True)
                n_started = len(self.matches(p, STARTED_RE))
                p.signal(sig)
                p.wait_for(contains="shutting down", count=3)  # the master and both workers
                # a graceful stop: the established session keeps working
                self.assertTrue(p.running())
                imap_cmd(r, "n", "NOOP")
                imap_cmd(r, "z", "LOGOUT")
                s.close()
                t0 = time.monotonic()
                self.assertEqual(p.wait_exit(15), 0, p.stderr()[-4000:])
                self.assertLess(time.monotonic() - t0, 5 * SLOW, "the master exited late after the last session")
                self.assertFalse(os.path.exists(p.pidfile), "pidfile not removed")
                self.assertTrue(p.find(event="stopped"), "no 'stopped' line:\n" + p.stderr()[-3000:])
                for pid in w.values():
                    self.assertFalse(alive(pid), "worker %d left running" % pid)
                self.assertFalse(self.matches(p, DIED_RE), "workers restarted during the stop")
                self.assertEqual(len(self.matches(p, STARTED_RE)), n_started, "workers started during the stop")
                self.assertSessionEnd(p, cp)

    def test_master_killed_workers_exit(self):
        p = self.postern([("imap", svc("imap", tls="off"))], {"workers": 2})
        w = self.wait_workers(p, 2)
        self.served(p.port())
        os.kill(p.pid, signal.SIGKILL)
        p.proc.wait(10)
        p.exit_observed = True
        try:
            poll(lambda: not any(alive(pid) for pid in w.values()), 5, "the workers to exit after their master",
                 lambda: ": still running %r" % [pid for pid in w.values() if alive(pid)])
        finally:
            for pid in w.values():
                kill_quietly(pid)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", p.port()), timeout=2).close()

    def test_sigusr1_reopens_every_log(self):
        p = self.postern(start=False)
        log = os.path.join(p.dir, "postern.log")
        p.write_config([("imap", svc("imap", tls="off"))], {"workers": 2, "log": log})
        p.start()
        w = self.wait_workers(p, 2)
        os.rename(log, log + ".1")
        p.signal(signal.SIGUSR1)
        poll(lambda: os.path.exists(log), 5, "a new log file after SIGUSR1")
        # the master and every worker say so in the new file
        p.wait_for(contains="log file reopened", count=1 + len(w))
        sessions = self.sessions_on_each(p, w)
        for s, r, cp, _ in sessions:
            s.close()
        for s, r, cp, _ in sessions:
            p.wait_session_end(cp)  # in the new file
        with open(log + ".1") as f:
            old = f.read()
        for s, r, cp, owner in sessions:
            self.assertNotIn(":%d start" % cp, old, "worker %d still logs to the old file" % owner)

    # ------------------------------------------------------------ shared state
    def test_metrics_totals_across_workers(self):
        mport = free_port()
        p = self.postern([("imap", svc("imap", tls="off"))],
                         {"workers": 2, "metrics": "127.0.0.1:%d" % mport})
        w = self.wait_workers(p, 2)
        sessions = self.sessions_on_each(p, w, at_least=2)
        k = len(sessions)
        last = [None]

        def metric_is(active, total):
            def ok():
                last[0] = scrape(mport)
                return (last[0].get("postern_connections_active", None, service="imap") == active
                        and last[0].get("postern_connections_total", None, service="imap") == total)
            poll(ok, 5, "connections_active == %d and connections_total == %d" % (active, total),
                 lambda: "; scrape:\n" + (last[0].text if last[0] else ""))

        metric_is(k, k)
        victim = w[1]
        on_victim = [x for x in sessions if x[3] == victim]
        os.kill(victim, signal.SIGKILL)
        self.wait_died(p, 1, victim)
        metric_is(k - len(on_victim), k)
        for s, r, cp, owner in sessions:
            s.close()
        metric_is(0, k)
        self.wait_workers(p, 2, total=3)
        for _ in range(10):
            s, r, cp = self.connect(p.port())
            s.close()
        metric_is(0, k + 10)

    def test_session_ids_unique_across_workers(self):
        p = self.postern([("imap", svc("imap", tls="off"))], {"workers": 2})
        w = self.wait_workers(p, 2)
        ports = []
        for batch in range(4):
            conns = [self.connect(p.port()) for _ in range(25)]
            if batch == 0:
                held = self.wait_owners(set(w.values()), p.port(), [cp for _, _, cp in conns])
                self.assertEqual(set(held.values()), set(w.values()), "25 connections, all on one worker")
            for s, r, cp in conns:
                s.close()
                ports.append(cp)
        poll(lambda: len(p.find(event="end", service="imap")) >= 100, 10, "100 end lines")
        starts = p.find(event="start", service="imap")
        self.assertEqual(len(starts), 100)
        sids = [ln.sid for ln in starts]
        dup = [sid for sid, n in collections.Counter(sids).items() if n > 1]
        self.assertEqual(dup, [], "session ids used twice: %r" % dup)
        ends = p.find(event="end", service="imap")
        self.assertEqual(len({ln.sid for ln in ends}), 100)

    def test_tickets_resume_on_any_worker(self):
        """The random ticket key is shared: a session resumes whichever
        worker takes the next connection (Python, which shows the worker,
        then openssl s_client)."""
        p = self.postern([("imaps", svc("imap"))], {"workers": 2})
        w = self.wait_workers(p, 2)
        pids = set(w.values())
        port = p.port()
        for name, version, flag in (("TLSv1.3", ssl.TLSVersion.TLSv1_3, "-tls1_3"),
                                    ("TLSv1.2", ssl.TLSVersion.TLSv1_2, "-tls1_2")):
            with self.subTest(version=name):
                ctx = client_context(min_version=version, max_version=version)

                def handshake(session=None):
                    raw = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
                    s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
                    try:
                        self.assertTrue(Reader(s).readline().startswith(b"* OK"))
                        cp = s.getsockname()[1]
                        owner = self.wait_owners(pids, port, [cp])[cp]
                        return s.session, s.session_reused, owner
                    finally:
                        s.close()

                sess, reused, first = handshake()
                self.assertFalse(reused)
                seen = collections.Counter()
                for i in range(30):
                    new_sess, reused, owner = handshake(sess)
                    self.assertTrue(reused, "%s session of worker %d not resumed on worker %d" % (name, first, owner))
                    if version == ssl.TLSVersion.TLSv1_3 and new_sess is not None:
                        sess = new_sess  # a TLS 1.3 client spends each ticket once
                    seen[owner] += 1
                    if i >= 5 and len(seen) == 2:
                        break
                self.assertEqual(set(seen), pids, "all resumptions on one worker, try again: %r" % seen)
                # openssl s_client, several reconnections
                cur = os.path.join(p.dir, "sess-%s-0" % name)
                base = ["openssl", "s_client", flag, "-connect", "127.0.0.1:%d" % port, "-servername", "localhost",
                        "-CAfile", env().ca, "-ign_eof"]
                r = run(base + ["-sess_out", cur], input=b"a LOGOUT\r\n", timeout=20)
                self.assertIn(("New, %s" % name).encode(), r.stdout, r.stdout[-2000:])
                for i in range(1, 7):
                    nxt = os.path.join(p.dir, "sess-%s-%d" % (name, i))
                    r = run(base + ["-sess_in", cur, "-sess_out", nxt], input=b"a LOGOUT\r\n", timeout=20)
                    self.assertIn(("Reused, %s" % name).encode(), r.stdout,
                                  "reconnection %d not resumed:\n%s" % (i, r.stdout[-2000:].decode("latin-1")))
                    if os.path.exists(nxt) and os.path.getsize(nxt) > 0:
                        cur = nxt

    # ------------------------------------------------------------ configuration
    def test_check_workers_values(self):
        e = env()
        text = ("[global]\n"
                "workers = %s\n"  # 2
                "\n"
                "[imaps]\nprotocol = imap\nlisten = 127.0.0.1:%d\ncert = %s\nkey = %s\nbackend = 127.0.0.1:%d\n")
        p = self.postern(start=False)
        for value in ("1", "2", "512", "auto"):
            with self.subTest(workers=value):
                p.write_config(config_text=text % (value, free_port(), e.cert, e.key, e.imap_port))
                r = run([POSTERN, "-t", "-c", p.conf], timeout=10)
                self.assertEqual(r.returncode, 0, r.stderr.decode())
                self.assertIn("postern: configuration OK", r.stdout.decode().splitlines())
                self.assertEqual(r.stderr.decode().strip(), "")
        for value in ("0", "513", "-1", "two"):
            with self.subTest(workers=value):
                p.write_config(config_text=text % (value, free_port(), e.cert, e.key, e.imap_port))
                r = run([POSTERN, "-t", "-c", p.conf], timeout=10)
                err = r.stderr.decode()
                self.assertEqual(r.returncode, 1, err)
                self.assertRegex(err, r"(?m)^%s:2: .*workers" % re.escape(p.conf))
                self.assertNotIn("not supported yet", err)

    def test_workers_auto(self):
        """auto = the CPUs postern may run on (its affinity): several
        workers, or a single process when it may run on one CPU only;
        workers = 1 is a single process."""
        cpu = min(os.sched_getaffinity(0))
        cases = [("auto", None), ("auto", ["taskset", "-c", str(cpu)]), (1, None)]
        for value, prefix in cases:
            with self.subTest(workers=value, taskset=prefix is not None):
                if prefix and not shutil.which("taskset"):
                    self.skipTest("no taskset")
                p = self.postern(start=False)
                p.write_config([("imap", svc("imap", tls="off"))], {"workers": value})
                p.start(wrap=(lambda argv, prefix=prefix: prefix + list(argv)) if prefix else None)
                n = len(os.sched_getaffinity(p.pid)) if value == "auto" else 1
                if prefix:
                    self.assertEqual(n, 1)
                if n > 1:
                    w = self.wait_workers(p, n)
                    self.assertEqual(children(p.pid), set(w.values()))
                    p.wait_for(regex=r"\bpostern %s started workers=%d$" % (re.escape(harness.version()), n))
                    self.served(p.port())
                else:
                    p.wait_for(regex=r"\bpostern %s started\b" % re.escape(harness.version()))
                    self.served(p.port())
                    self.assertEqual(children(p.pid), set(), "a single process expected")
                    self.assertFalse(self.matches(p, STARTED_RE), "worker processes with one worker")
                p.stop()

    def test_single_process_reload_to_workers_warns(self):
        """A single process cannot become a master in place: a reload asking
        for workers says it takes effect at the next start, and the one
        process goes on serving with the rest of the new configuration."""
        p = self.postern(start=False)
        p.write_config([("imap", svc("imap", tls="off"))], {"workers": 1})
        p.start()
        before = p.pid
        self.served(p.port())
        p.write_config([("imap", svc("imap", tls="off", port=p.port()))], {"workers": 2})
        p.signal(signal.SIGHUP)
        p.wait_for(contains="configuration reloaded")
        p.wait_for(level="warn", contains="workers = 2 takes effect at the next start")
        self.assertEqual(children(before), set(), "a single process turned into a master")
        self.served(p.port())
        p.stop()

    def test_sigterm_to_every_process_is_graceful(self):
        """SIGTERM sent to the master and its workers at once (a cgroup, a
        list of PIDs) is one graceful stop, not a second signal: sessions
        go on; a second SIGTERM to the master then closes them at once."""
        p = self.postern([("imap", svc("imap", tls="off"))], {"workers": 2, "shutdown_timeout": "20s"})
        w = self.wait_workers(p, 2)
        sessions = [self.connect(p.port(), login=True) for _ in range(8)]
        # the workers' signal first, so that two signals cannot merge
        for pid in w.values():
            os.kill(pid, signal.SIGTERM)
        p.wait_for(contains="shutting down", count=len(w))
        os.kill(p.pid, signal.SIGTERM)
        p.wait_for(contains="shutting down: stopping")
        # the master passes its SIGTERM on; a worker that takes it for a
        # second signal logs nothing before it closes: time for that to show
        time.sleep(0.5 * SLOW)
        self.assertTrue(p.running())
        for i, (s, r, cp) in enumerate(sessions):
            imap_cmd(r, "n%d" % i, "NOOP")
        self.assertFalse(p.find(contains="closing"), "sessions closed early:\n" + p.log_text()[-3000:])
        p.signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(10), 0, p.log_text()[-4000:])
        for s, r, cp in sessions:
            self.assertSessionEnd(p, cp, reason="shutdown")
            s.close()

    def test_reload_adds_workers_after_dropping_privileges(self):
        """Sockets made after privileges are dropped (a reload raising
        workers) must join the port's SO_REUSEPORT group: all of the
        group's sockets belong to the configured user."""
        if os.geteuid() != 0:
            self.skipTest("needs root to drop privileges")
        p = self.postern(start=False)
        p.write_config([("imap", svc("imap", tls="off"))], {"workers": 2, "user": "nobody", "group": "nogroup"})
        os.chown(p.dir, pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid)
        p.start()
        self.wait_workers(p, 2)
        port = p.port()
        p.write_config([("imap", svc("imap", tls="off", port=port))],
                       {"workers": 3, "user": "nobody", "group": "nogroup"})
        p.signal(signal.SIGHUP)
        p.wait_for(contains="configuration reloaded", timeout=10 * SLOW)
        self.assertFalse(p.find(contains="reload refused"), p.log_text()[-3000:])
        self.wait_workers(p, 3, total=5)
        for _ in range(6):
            self.served(port)

    def test_metrics_served_while_stopping(self):
        """During a graceful stop, while sessions finish, /metrics still
        answers (one process and workers alike), with the open sessions."""
        for workers in (1, 2):
            with self.subTest(workers=workers):
                mport = free_port()
                p = self.postern([("imap", svc("imap", tls="off"))],
                                 {"workers": workers, "metrics": "127.0.0.1:%d" % mport, "shutdown_timeout": "20s"})
                if workers > 1:
                    self.wait_workers(p, workers)
                s, r, cp = self.connect(p.port(), login=True)
                p.signal(signal.SIGTERM)
                p.wait_for(contains="shutting down", count=1 + workers if workers > 1 else 1)
                got = scrape(mport)
                self.assertEqual(got.status, 200)
                self.assertEqual(got.get("postern_connections_active", None, service="imap"), 1, got.text)
                imap_cmd(r, "z", "LOGOUT")
                s.close()
                self.assertEqual(p.wait_exit(10), 0)

