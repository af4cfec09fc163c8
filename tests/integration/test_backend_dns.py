"""Backend host names resolved at connect time: a throwaway dnsmasq on a
loopback address of its own answers for the names, and postern runs in a
private mount namespace whose /etc/resolv.conf points at it (glibc asks
port 53 only). Every address of a name is tried in turn; a name that does
not resolve is a warning at start and the unavailable reply per session;
a changed record is seen after dns_cache_time without a reload."""

import os
import random
import shutil
import signal
import socket
import subprocess

from harness import (
    PosternTestCase,
    TcpBackend,
    have_ipv6,
    plain_connect,
    private_mount_ns,
    run,
    svc,
    wait_until,
)

# /etc/resolv.conf of postern's namespace is the test's file.
RESOLV_SCRIPT = 'set -e; mount --bind "$RESOLV_CONF" /etc/resolv.conf; exec "$@"'


class Dnsmasq:
    """dnsmasq answering from a hosts file for names under .test (NXDOMAIN
    for the rest), on ADDR:53; reload() re-reads the file (SIGHUP)."""

    def __init__(self, directory, records):
        self.addr = "127.%d.%d.%d" % (random.randint(100, 250), random.randint(1, 250), random.randint(2, 250))
        self.hosts = os.path.join(directory, "dns-hosts")
        self.resolv = os.path.join(directory, "resolv.conf")
        self.log = os.path.join(directory, "dnsmasq.log")
        with open(self.resolv, "w") as f:
            f.write("nameserver %s\noptions timeout:1 attempts:1\n" % self.addr)
        self.write(records)
        self.proc = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=53",
             "--listen-address=" + self.addr, "--bind-interfaces", "--no-resolv", "--no-hosts",
             "--addn-hosts=" + self.hosts, "--local=/test/", "--local-ttl=0", "--no-negcache",
             "--pid-file=", "--user=root", "--log-facility=" + self.log, "--log-queries"],
            stdout=subprocess.DEVNULL, stderr=open(self.log + ".err", "w"))
        wait_until(self.answers, 10, msg="dnsmasq answering on %s" % self.addr,
                   detail=lambda: open(self.log + ".err").read())

    def write(self, records):
        """RECORDS: [(address, name), ...], in the order to answer."""
        with open(self.hosts, "w") as f:
            for addr, name in records:
                f.write("%s %s\n" % (addr, name))

    def reload(self, records):
        self.write(records)
        self.proc.send_signal(signal.SIGHUP)

    def answers(self):
        # A bare DNS query for "probe.test" over UDP: any reply will do.
        q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05probe\x04test\x00\x00\x01\x00\x01"
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.2)
        try:
            s.sendto(q, (self.addr, 53))
            return s.recv(512)[:2] == b"\x12\x34"
        except OSError:
            return False
        finally:
            s.close()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


class SilentDns:
    """A DNS server that never answers: lookups wait for the resolver's
    time-out (1 s, from the resolv.conf written here)."""

    def __init__(self, directory):
        self.addr = "127.%d.%d.%d" % (random.randint(100, 250), random.randint(1, 250), random.randint(2, 250))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.addr, 53))
        self.resolv = os.path.join(directory, "resolv.conf")
        with open(self.resolv, "w") as f:
            f.write("nameserver %s\noptions timeout:1 attempts:1\n" % self.addr)

    def stop(self):
        self.sock.close()


class BackendDnsTest(PosternTestCase):
    NEEDS_SERVERS = False

    def setUp(self):
        super().setUp()
        self.require_private_mount_ns()
        if not shutil.which("dnsmasq"):
            self.fail("dnsmasq is not installed (packaging/deps.sh installs dnsmasq-base)")
        self.live = TcpBackend(greeting=b"hello from the backend\r\n", host="127.0.0.3")
        self.addCleanup(self.live.stop)

    def dns(self, records):
        d = os.path.join(self.env.tmp, "dns-%d" % random.randint(0, 1 << 30))
        os.makedirs(d)
        server = Dnsmasq(d, records)
        self.addCleanup(server.stop)
        return server

    def start_postern(self, dns, backend, global_=None, **kw):
        """A raw, plaintext service to BACKEND, in a namespace that asks DNS."""
        p = self.postern(start=False)
        p.write_config({"dns": svc("raw", tls="off", backend=backend, **kw)}, global_)
        p.start(wrap=private_mount_ns(RESOLV_SCRIPT), env_extra={"RESOLV_CONF": dns.resolv})
        return p

    def greeting(self, p):
        c = plain_connect(p.port())
        try:
            c.settimeout(5)
            data = b""
            while not data.endswith(b"\n"):
                got = c.recv(256)
                if not got:
                    break
                data += got
            return data, c.getsockname()[1]
        finally:
            c.close()

    def test_a_name_with_a_dead_and_a_live_address_connects_to_the_live_one(self):
        port = self.live.port
        dns = self.dns([("127.0.0.2", "mail.test"), ("127.0.0.3", "mail.test")])
        # dnsmasq rotates the order of its answers: with no cache, some
        # sessions get the dead address first; every session connects.
        p = self.start_postern(dns, "mail.test:%d" % port, dns_cache_time="0s")
        for _ in range(6):
            data, cport = self.greeting(p)
            self.assertEqual(data, b"hello from the backend\r\n")
            self.assertSessionEnd(p, cport, reason="client-closed")
        p.wait_for(contains="backend mail.test:%d: 127.0.0.2:%d: Connection refused; "
                            "trying the next address" % (port, port))
        self.assertEqual(p.find(contains="unreachable"), [])

    def test_each_worker_looks_names_up_itself(self):
        dns = self.dns([("127.0.0.2", "mail.test"), ("127.0.0.3", "mail.test")])
        p = self.start_postern(dns, "mail.test:%d" % self.live.port, global_={"workers": 2},
                               dns_cache_time="0s")
        for _ in range(8):
            self.assertEqual(self.greeting(p)[0], b"hello from the backend\r\n")
        self.assertEqual(p.find(contains="unreachable"), [])

    def test_an_ipv6_address_is_tried_as_well_as_ipv4(self):
        if not have_ipv6():
            self.skipTest("no IPv6 on loopback")
        port = self.live.port
        dns = self.dns([("::1", "mail.test"), ("127.0.0.3", "mail.test")])
        p = self.start_postern(dns, "mail.test:%d" % port)
        data, cport = self.greeting(p)
        self.assertEqual(data, b"hello from the backend\r\n")
        p.wait_for(contains="[::1]:%d: Connection refused; trying the next address" % port)

    def test_a_name_that_does_not_resolve_is_a_warning_and_each_session_is_told(self):
        dns = self.dns([("127.0.0.3", "other.test")])
        conf = os.path.join(self.env.tmp, "dns-check-%d.ini" % random.randint(0, 1 << 30))
        # -t: a warning on stderr, exit 0.
        p = self.postern(start=False)
        p.write_config({"dns": svc("imap", tls="off", backend="nowhere.test:143")})
        shutil.copy(p.conf, conf)
        r = run(["unshare", "--mount", "--propagation", "private", "sh", "-c", RESOLV_SCRIPT, "sh",
                 os.environ.get("POSTERN", "build/postern"), "-t", "-c", conf],
                env_extra={"RESOLV_CONF": dns.resolv})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("warning: backend: cannot resolve 'nowhere.test'", r.stderr.decode())
        # The start: the same warning, and postern runs.
        p.start(wrap=private_mount_ns(RESOLV_SCRIPT), env_extra={"RESOLV_CONF": dns.resolv})
        self.assertIn("warning: backend: cannot resolve 'nowhere.test'", p.stderr())
        c = plain_connect(p.port())
        c.settimeout(5)
        self.assertTrue(c.recv(256).startswith(b"* BYE"))
        cport = c.getsockname()[1]
        c.close()
        self.assertSessionEnd(p, cport, reason="backend-unreachable")
        p.wait_for(contains="backend nowhere.test:143 unreachable: cannot resolve 'nowhere.test'")

    def test_a_changed_record_is_seen_after_dns_cache_time_without_a_reload(self):
        # The name's new address, on the same port.
        moved = TcpBackend(greeting=b"the new backend\r\n", host="127.0.0.4", port=self.live.port)
        self.addCleanup(moved.stop)
        dns = self.dns([("127.0.0.3", "mail.test")])
        p = self.start_postern(dns, "mail.test:%d" % self.live.port, dns_cache_time="1s")
        self.assertEqual(self.greeting(p)[0], b"hello from the backend\r\n")
        dns.reload([("127.0.0.4", "mail.test")])
        # Cached meanwhile: the old address (a slow machine may let 1s pass).
        self.assertIn(self.greeting(p)[0], (b"hello from the backend\r\n", b"the new backend\r\n"))
        wait_until(lambda: self.greeting(p)[0] == b"the new backend\r\n", 10,
                   msg="the new address in use")
        self.assertEqual(p.find(contains="reload"), [])

    def test_a_name_is_not_asked_again_within_dns_cache_time(self):
        moved = TcpBackend(greeting=b"the new backend\r\n", host="127.0.0.4", port=self.live.port)
        self.addCleanup(moved.stop)
        dns = self.dns([("127.0.0.3", "mail.test")])
        p = self.start_postern(dns, "mail.test:%d" % self.live.port, dns_cache_time="1h")
        self.assertEqual(self.greeting(p)[0], b"hello from the backend\r\n")
        dns.reload([("127.0.0.4", "mail.test")])
        wait_until(lambda: "read %s" % dns.hosts in open(dns.log).read(), 5, msg="dnsmasq re-read")
        for _ in range(3):
            self.assertEqual(self.greeting(p)[0], b"hello from the backend\r\n")
        self.assertEqual(moved.accepted, 0)

    def test_sessions_that_end_during_their_lookup_leave_nothing_behind(self):
        d = os.path.join(self.env.tmp, "dns-%d" % random.randint(0, 1 << 30))
        os.makedirs(d)
        dns = SilentDns(d)
        self.addCleanup(dns.stop)
        p = self.postern(start=False)
        p.write_config({"dns": svc("imap", tls="off", backend="slow.test:143", connect_timeout="0.3s")})
        p.start(wrap=private_mount_ns(RESOLV_SCRIPT), env_extra={"RESOLV_CONF": dns.resolv})
        fds = p.nfds()
        # One client leaves at once, another waits: both sessions end on
        # connect_timeout, before the lookups come back.
        gone = plain_connect(p.port())
        gone_port = gone.getsockname()[1]
        gone.close()
        c = plain_connect(p.port())
        c.settimeout(5)
        self.assertTrue(c.recv(256).startswith(b"* BYE"))
        cport = c.getsockname()[1]
        c.close()
        self.assertSessionEnd(p, gone_port, reason="backend-unreachable")
        self.assertSessionEnd(p, cport, reason="backend-unreachable")
        p.wait_for(contains="backend slow.test:143 unreachable: connect timed out")
        # The late answers (time-outs) come back to no one: once the lookups'
        # own sockets are closed, only the resolver's pipe (2 fds, made on
        # first use) is left.
        wait_until(lambda: p.nfds() <= fds + 2, 5, msg="fds back to %d + 2" % fds,
                   detail=lambda: str([os.readlink("/proc/%d/fd/%s" % (p.pid, f))
                                       for f in os.listdir("/proc/%d/fd" % p.pid)]))
        self.assertTrue(p.running())
        self.assertEqual(len(p.find(contains="slow.test:143 unreachable")), 2)

    def test_many_sessions_leak_no_fd_and_no_thread(self):
        dns = self.dns([("127.0.0.2", "mail.test"), ("127.0.0.3", "mail.test")])
        p = self.start_postern(dns, "mail.test:%d" % self.live.port, dns_cache_time="0s")
        self.greeting(p)
        fds = p.nfds()
        tasks = len(os.listdir("/proc/%d/task" % p.pid))
        for _ in range(60):
            self.assertEqual(self.greeting(p)[0], b"hello from the backend\r\n")
        wait_until(lambda: p.nfds() <= fds, 5, msg="fds back to %d" % fds,
                   detail=lambda: str(os.listdir("/proc/%d/fd" % p.pid)))
        self.assertLessEqual(len(os.listdir("/proc/%d/task" % p.pid)), max(tasks, 3))
