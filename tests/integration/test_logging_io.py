"""Logging I/O: syslog datagrams with the right facility and severity (to a
/dev/log of our own in a private mount namespace), `log = syslog:FACILITY`
checked by -t, a syslog daemon that restarts or stops reading, and stderr
that nobody reads: logging never blocks the event loop, lines beyond the
bounded buffer are dropped whole and counted in postern_log_dropped_total,
and no line is torn."""

import os
import re
import signal
import socket
import subprocess
import time

import harness
from harness import LOG_RE, POSTERN, SLOW, PosternTestCase, free_port, recv_until, run, svc

# glibc's syslog(3) format: "<PRI>Mmm dd hh:mm:ss postern[PID]: MSG"
DGRAM_RE = re.compile(r"^<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d postern\[(\d+)\]: (.*)$", re.S)

LOG_MAIL, LOG_LOCAL3 = 2 << 3, 19 << 3
LOG_WARNING, LOG_INFO = 4, 6


def down_imap():
    """A plaintext IMAP service whose backend refuses connections: each
    session logs start (info), unreachable (warn) and end (info)."""
    return [("imap", svc("imap", tls="off", backend="127.0.0.1:%d" % free_port()))]


def bye(port, timeout):
    """Seconds until the service's first line (the * BYE) arrived."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(max(0.01, timeout - (time.monotonic() - t0)))
        data = recv_until(s, b"\r\n")
    if not data.startswith(b"* BYE"):
        raise AssertionError("expected * BYE, got %r" % data)
    return time.monotonic() - t0


def metric(mport, name):
    """A label-less sample scraped with the real curl, or None."""
    r = run(["curl", "-s", "--max-time", str(int(5 * SLOW)), "http://127.0.0.1:%d/metrics" % mport], timeout=10)
    if r.returncode != 0:
        raise AssertionError("curl exited %d: %r" % (r.returncode, r.stderr))
    for line in r.stdout.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


class Syslog(PosternTestCase):
    def start_syslog(self, log, global_=None):
        """postern with log = LOG and /dev/log bound to a datagram socket of
        ours; (postern, receiving socket, its path)."""
        g = {"log": log}
        g.update(global_ or {})
        return self.postern_with_dev_log(down_imap(), g)

    def collect(self, rx, want, timeout=5.0):
        """Datagrams until each regex of WANT matched one; (pri, pid, msg) list."""
        got = []
        rx.settimeout(0.1)
        deadline = time.monotonic() + timeout * SLOW
        while not all(any(re.search(w, m) for _, _, m in got) for w in want):
            if time.monotonic() > deadline:
                self.fail("no datagram for %r within %ss; got %r" % (want, timeout, got[:20]))
            try:
                d = rx.recv(65536).decode("utf-8", "replace")
            except socket.timeout:
                continue
            m = DGRAM_RE.match(d)
            self.assertIsNotNone(m, "not a syslog(3)-style datagram: %r" % d)
            got.append((int(m.group(1)), int(m.group(2)), m.group(3)))
        return got

    def pri_of(self, got, regex):
        return [pri for pri, _, msg in got if re.search(regex, msg)]

    def check_levels(self, log, facility):
        p, rx, _ = self.start_syslog(log)
        bye(p.port(), 5 * SLOW)
        got = self.collect(rx, [r"^info postern listening ", r" unreachable: ", r" end in="])
        self.assertEqual({pid for _, pid, _ in got}, {p.pid}, got)
        self.assertEqual(set(self.pri_of(got, r"^info postern listening ")), {facility | LOG_INFO}, got)
        self.assertEqual(set(self.pri_of(got, r"^info imap#\S+ \S+ start ")), {facility | LOG_INFO}, got)
        self.assertEqual(set(self.pri_of(got, r"^warn imap#\S+ \S+ backend \S+ unreachable: ")),
                         {facility | LOG_WARNING}, got)
        self.assertNotIn("listening", p.stderr())

    def test_syslog_mail_facility_by_default(self):
        """log = syslog: mail.info (<22>) and mail.warning (<20>)."""
        self.check_levels("syslog", LOG_MAIL)

    def test_syslog_facility_local3(self):
        """log = syslog:local3: local3.info (<158>), local3.warning (<156>)."""
        self.check_levels("syslog:local3", LOG_LOCAL3)

    def test_syslog_daemon_restart(self):
        """The daemon goes away and comes back on the same path: postern
        reconnects by itself and the next lines arrive."""
        p, rx, path = self.start_syslog("syslog")
        self.collect(rx, [r"listening"])
        rx.close()
        os.unlink(path)
        rx2 = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        rx2.bind(path)
        self.addCleanup(rx2.close)
        bye(p.port(), 5 * SLOW)
        self.collect(rx2, [r" start tls=off", r" end in="])

    def test_syslog_full_queue_drops(self):
        """A daemon that stops reading: its queue fills, lines are dropped
        and counted, and sessions are still served at once (syslog(3)
        would block the whole process here)."""
        mport = free_port()
        p, rx, _ = self.start_syslog("syslog", {"metrics": "127.0.0.1:%d" % mport})
        worst = 0.0
        for _ in range(600):  # 3 lines each: beyond the default queue of 512
            worst = max(worst, bye(p.port(), 5 * SLOW))
        self.assertLess(worst, 2.0 * SLOW, "a session waited %.2fs for its greeting" % worst)
        dropped = metric(mport, "postern_log_dropped_total")
        self.assertIsNotNone(dropped, "no postern_log_dropped_total")
        self.assertGreater(dropped, 0)


class LogConfig(PosternTestCase):
    def test_bad_facility_is_a_config_error(self):
        p = self.postern(down_imap(), {"log": "syslog:bogus"}, start=False)
        n = p.config_text.splitlines().index("log = syslog:bogus") + 1
        r = run([POSTERN, "-t", "-c", p.conf], timeout=10)
        err = r.stderr.decode()
        self.assertEqual(r.returncode, 1, err)
        self.assertRegex(err, r"(?m)^%s:%d: .*bogus" % (re.escape(p.conf), n))
        for ok in ("syslog", "syslog:mail", "syslog:daemon", "syslog:user", "syslog:local0", "syslog:local7"):
            p.write_config(down_imap(), {"log": ok})
            r = run([POSTERN, "-t", "-c", p.conf], timeout=10)
            self.assertEqual(r.returncode, 0, "%s: %s" % (ok, r.stderr.decode()))


class StderrPipe(PosternTestCase):
    def test_unread_stderr_pipe_never_blocks(self):
        """stderr is a pipe nobody reads and log_level = debug: sessions are
        still served promptly, lines beyond the bounded buffer are dropped and
        counted, and what does reach the pipe is whole lines only."""
        self.unread_pipe(workers=1)

    def test_unread_stderr_pipe_shared_by_workers(self):
        """The same with two workers writing to one pipe: when the reader
        comes, both flush what they hold, and no line is cut into another."""
        self.unread_pipe(workers=2)

    def unread_pipe(self, workers):
        mport = free_port()
        p = self.postern(down_imap(), {"log_level": "debug", "metrics": "127.0.0.1:%d" % mport,
                                       "workers": workers}, start=False)
        p.proc = subprocess.Popen([POSTERN, "-c", p.conf], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, preexec_fn=os.setsid, close_fds=True)
        harness._LIVE.add(p)
        self.addCleanup(p.proc.stderr.close)
        p.wait_ready(15 * SLOW)  # by the pidfile: the log is in the pipe
        port = p.port()

        # Fill the pipe (64 KiB) and the pending buffer (1 MiB): ~300 bytes
        # of log per session, so a few thousand sessions.
        sessions, dropped = 0, 0
        deadline = time.monotonic() + 90 * SLOW
        while not dropped:
            if time.monotonic() > deadline:
                self.fail("no line dropped after %d sessions" % sessions)
            for _ in range(500):
                bye(port, 5 * SLOW)
            sessions += 500
            dropped = metric(mport, "postern_log_dropped_total")
        # Full: the loop must still serve everyone at once.
        times = [bye(port, 5 * SLOW) for _ in range(200)]
        self.assertLess(max(times), 2.0 * SLOW, "slowest greeting of 200: %.2fs" % max(times))
        self.assertGreater(metric(mport, "postern_log_dropped_total"), dropped, "later lines not dropped")

        # Now read: the pending lines, then the last ones flushed at exit.
        p.proc.send_signal(signal.SIGTERM)
        _, out = p.proc.communicate(timeout=30 * SLOW)
        p.exit_observed = True
        with open(p.stderr_path, "wb") as f:  # for the sanitizer check
            f.write(out)
        self.assertEqual(p.proc.returncode, 0)
        text = out.decode("utf-8", "replace")
        self.assertGreater(len(out), 64 * 1024, "less than a pipe's worth of log")
        self.assertTrue(text.endswith("\n"), "last line torn: %r" % text[-200:])
        lines = text[:-1].split("\n")
        torn = [ln for ln in lines if not LOG_RE.match(ln)]
        self.assertEqual(torn, [], "%d torn or foreign lines among %d" % (len(torn), len(lines)))
        self.assertTrue(any(" started" in ln for ln in lines[:10]), lines[:10])
        self.assertRegex(lines[-1], r" info postern stopped$")
