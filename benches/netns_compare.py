#!/usr/bin/env python3
"""N real cpg-rs nodes against N real Corosync nodes, one per network namespace
(issue 13). Driven by benches/netns-compare.sh (which builds first); root only.

Topology: namespace <base>-br holds bridge br0; namespace <base>-<i> (i = 1..N)
holds eth0 (veth, its peer p<i> on br0), address 10.213.0.<i>/24. Nothing is
added to the root namespace: no interface, no address, no route. Every
namespace, process and temporary directory made here is removed on any exit
(atexit + SIGINT/SIGTERM/SIGHUP handlers; the namespaces are deleted after
killing whatever still runs inside them).

Per namespace: one Corosync (`corosync -f`, its own config with the namespace
addresses, its own state dir, a private /run through `unshare -m` + tmpfs so
the pid lock files do not collide; libqb's IPC sockets are abstract, so per
network namespace) with one `cpgload` client, and one of our nodes
(`cpgtool bench-member`, the node in the member process). Rows alternate
ours/theirs so noise hits both.

Modes:
  compare   the matrix: MTUs x crypto (off/on) x sizes (+ 64 B round trip)
  scaling   ours at N = 3 5 9 16 (64 B and 1 KiB per member, token rotation
            time), failover time (SIGKILL one node -> NODEDOWN on the
            survivors) for ours at every N and for Corosync at --cs-failover N
"""

import argparse
import atexit
import json
import os
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BASE = "nb%d" % os.getpid()
SUBNET = "10.213.0"
PORT = 5505  # Corosync has 5405 in the same namespaces

live_ns = []
live_procs = []
tmp_dirs = []


def log(*a):
    print("[netns]", *a, file=sys.stderr, flush=True)


def run(*cmd, check=True, quiet=False):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(cmd), r.stderr.strip()))
    return r


# ------------------------------------------------------------------ cleanup
def ns_pids(ns):
    r = run("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in r.stdout.split() if p.strip().isdigit()]


def cleanup():
    for p in live_procs:
        try:
            if p.poll() is None:
                p.kill()
        except Exception:
            pass
    for p in live_procs:
        try:
            p.wait(timeout=5)
        except Exception:
            pass
    live_procs.clear()
    for ns in list(live_ns):
        delete_ns(ns)
    for d in tmp_dirs:
        shutil.rmtree(d, ignore_errors=True)
    tmp_dirs.clear()


def delete_ns(ns):
    """SIGKILL what runs in namespace `ns`, then delete it."""
    for pid in ns_pids(ns):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    run("ip", "netns", "delete", ns, check=False)
    if ns in live_ns:
        live_ns.remove(ns)


def on_signal(sig, _frame):
    log("signal %d: cleaning up" % sig)
    cleanup()
    sys.exit(128 + sig)


# ------------------------------------------------------------------ topology
class Topology:
    def __init__(self, n, mtu):
        self.n = n
        self.br = "%s-br" % BASE
        live_ns.append(self.br)
        run("ip", "netns", "add", self.br)
        run("ip", "-n", self.br, "link", "add", "br0", "type", "bridge")
        for i in range(1, n + 1):
            ns = self.ns(i)
            live_ns.append(ns)
            run("ip", "netns", "add", ns)
            run("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "p%d" % i,
                "netns", self.br)
            run("ip", "-n", self.br, "link", "set", "p%d" % i, "master", "br0")
            run("ip", "-n", ns, "addr", "add", "%s/24" % self.addr(i), "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "lo", "up")
        self.set_mtu(mtu)

    def ns(self, i):
        return "%s-%d" % (BASE, i)

    @staticmethod
    def addr(i):
        return "%s.%d" % (SUBNET, i)

    def set_mtu(self, mtu):
        self.mtu = mtu
        for i in range(1, self.n + 1):
            run("ip", "-n", self.ns(i), "link", "set", "eth0", "mtu", str(mtu), "up")
            run("ip", "-n", self.br, "link", "set", "p%d" % i, "mtu", str(mtu), "up")
        run("ip", "-n", self.br, "link", "set", "br0", "mtu", str(mtu), "up")

    def destroy(self):
        for ns in [self.ns(i) for i in range(1, self.n + 1)] + [self.br]:
            delete_ns(ns)


# ------------------------------------------------------------------ child processes
class Child:
    """A process in a namespace; stdout lines timestamped on a reader thread."""

    def __init__(self, ns, argv, errfile, stdin=False, private_run=False):
        if private_run:
            inner = "mount -t tmpfs tmpfs /run && exec " + " ".join(shq(a) for a in argv)
            cmd = ["ip", "netns", "exec", ns, "unshare", "-m", "--propagation", "private",
                   "sh", "-c", inner]
        else:
            cmd = ["ip", "netns", "exec", ns] + argv
        self.err = open(errfile, "w")
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=self.err, text=True, bufsize=1)
        live_procs.append(self.p)
        self.q = queue.Queue()
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            t = time.monotonic()
            self.lines.append((t, line))
            self.q.put((t, line))
        self.q.put((time.monotonic(), None))

    def send(self, line):
        try:
            self.p.stdin.write(line + "\n")
            self.p.stdin.flush()
        except Exception:
            pass

    def wait_json(self, pred, timeout):
        """The first stdout JSON object satisfying pred (and its time), or None."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None, None
            try:
                t, line = self.q.get(timeout=left)
            except queue.Empty:
                return None, None
            if line is None:
                return None, None
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                o = json.loads(line)
            except ValueError:
                continue
            if pred(o):
                return o, t

    def stop(self, timeout=10, sig=signal.SIGTERM):
        if self.p.poll() is None:
            try:
                self.p.send_signal(sig)
            except OSError:
                pass
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        if self.p in live_procs:
            live_procs.remove(self.p)
        self.err.close()


def shq(s):
    return "'" + s.replace("'", "'\\''") + "'"


# ------------------------------------------------------------------ configs
def write_key(path):
    with open(path, "wb") as f:
        f.write(os.urandom(256))
    os.chmod(path, 0o400)


def corosync_conf(n, i, rundir, transport, crypto, key, token, coef):
    nodes = "".join(
        "\tnode {\n\t\tname: node%d\n\t\tnodeid: %d\n\t\tring0_addr: %s\n\t}\n" % (j, j, Topology.addr(j))
        for j in range(1, n + 1))
    cr = ("\tcrypto_cipher: aes256\n\tcrypto_hash: sha256\n\tkeyfile: %s\n" % key) if crypto else \
        "\tcrypto_cipher: none\n\tcrypto_hash: none\n"
    return """totem {
\tversion: 2
\tcluster_name: netbench
\ttransport: %s
%s\ttoken: %d
\ttoken_coefficient: %d
}
nodelist {
%s}
quorum {
\tprovider: corosync_votequorum
}
logging {
\tfileline: off
\ttimestamp: hires
\tto_stderr: no
\tto_syslog: no
\tto_logfile: yes
\tlogfile: %s/corosync.log
\tdebug: off
}
system {
\tstate_dir: %s
\tsched_rr: no
\tallow_knet_handle_fallback: yes
}
""" % (transport, cr, token, coef, nodes, rundir, rundir)


def ours_conf(n, mtu, crypto, key, state, token, coef, gso=True):
    s = 'cluster_name = "netbench"\nstate_dir = "%s"\nnetmtu = %d\n' % (state, mtu)
    if not gso:
        s += "gso = false\n"
    s += 'crypto = "encrypt"\nkey_file = "%s"\n' % key if crypto else 'crypto = "none"\n'
    s += "\n[totem]\ntoken_ms = %d\ntoken_coefficient_ms = %d\n" % (token, coef)
    for j in range(1, n + 1):
        s += '\n[[nodelist]]\nnodeid = %d\naddr = "%s:%d"\n' % (j, Topology.addr(j), PORT)
    return s


# ------------------------------------------------------------------ Corosync
class CorosyncCluster:
    def __init__(self, topo, transport, crypto, key, work, logs, tag, token, coef):
        self.topo, self.transport, self.tag, self.logs = topo, transport, tag, logs
        self.dirs, self.procs = [], []
        for i in range(1, topo.n + 1):
            d = os.path.join(work, "cs-%s-%d" % (tag, i))
            os.makedirs(d, exist_ok=True)
            self.dirs.append(d)
            conf = os.path.join(d, "corosync.conf")
            with open(conf, "w") as f:
                f.write(corosync_conf(topo.n, i, d, transport, crypto, key, token, coef))
            if i == 1:
                shutil.copy(conf, os.path.join(logs, "corosync-%s.conf" % tag))
            self.procs.append(Child(topo.ns(i), ["corosync", "-f", "-c", conf],
                                    os.path.join(logs, "corosync-%s-%d.stderr" % (tag, i)),
                                    private_run=True))

    def wait_ready(self, cpgload, timeout=60):
        """Every daemon answers and a probe cpgload group sees all N members."""
        end = time.monotonic() + timeout
        n = self.topo.n
        while time.monotonic() < end:
            if any(c.p.poll() is not None for c in self.procs):
                return False
            probes = [subprocess.Popen(
                ["ip", "netns", "exec", self.topo.ns(i), cpgload, "--size", "64", "--seconds", "0.2",
                 "--group", "probe-%s" % BASE, "--expect-members", str(n), "--wait-timeout", "15",
                 "--drain-timeout", "3", "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                text=True) for i in range(1, n + 1)]
            ok = True
            for p in probes:
                try:
                    out, _ = p.communicate(timeout=40)
                except subprocess.TimeoutExpired:
                    p.kill()
                    out = ""
                ok = ok and '"msgs_per_sec"' in out
            if ok:
                return True
            time.sleep(1)
        return False

    def log_path(self, i):
        return os.path.join(self.dirs[i - 1], "corosync.log")

    def stop(self):
        for c in self.procs:
            c.stop(timeout=15)
        for i, d in enumerate(self.dirs, 1):
            try:
                shutil.copy(os.path.join(d, "corosync.log"),
                            os.path.join(self.logs, "corosync-%s-%d.log" % (self.tag, i)))
            except OSError:
                pass


# ------------------------------------------------------------------ rows
def hist_pct(hist, q):
    total = sum(c for _, c in hist)
    if total == 0:
        return None
    acc = 0
    for v, c in sorted(hist):
        acc += c
        if acc >= q * total:
            return v / 1000.0
    return sorted(hist)[-1][0] / 1000.0


def run_ours_row(a, topo, conf, size, lat, tag, seconds):
    n = topo.n
    kids = []
    for i in range(1, n + 1):
        argv = [a.cpgtool, "bench-member", "--config", conf, "--nodeid", str(i), "--members", str(n),
                "--size", str(size), "--guarantee", "agreed", "--send", a.send, "--seconds", str(seconds),
                "--group", "nb"]
        if lat:
            argv.append("--latency")
        kids.append(Child(topo.ns(i), argv, os.path.join(a.logs, "%s.%d.err" % (tag, i)), stdin=True))
    err = None
    results = []
    try:
        for i, k in enumerate(kids, 1):
            o, _ = k.wait_json(lambda o: o.get("ev") == "ready", 90)
            if o is None:
                raise RuntimeError("member %d not ready (logs/%s.%d.err)" % (i, tag, i))
        for k in kids:
            k.send("go")
        for i, k in enumerate(kids, 1):
            o, _ = k.wait_json(lambda o: o.get("ev") == "result", seconds + 60)
            if o is None:
                raise RuntimeError("member %d gave no result (logs/%s.%d.err)" % (i, tag, i))
            results.append(o)
    except RuntimeError as e:
        err = str(e)
    for k in kids:
        k.send("quit")
    for k in kids:
        k.stop(timeout=15, sig=signal.SIGCONT)  # wait for quit; kill after 15 s
    rows = []
    for o in results:
        secs = max(o["secs"], 1e-9)
        r = {"msgs_per_sec": o["delivered"] / secs, "mb_per_sec": o["bytes"] / secs / 1e6,
             "delivered": o["delivered"], "lost": o["lost"], "drained": o["drained"],
             "token_rotations": o.get("token_rotations", 0), "secs": secs,
             "frames_sent": o.get("frames_sent", 0), "gso_sends": o.get("gso_sends", 0),
             "gso_datagrams": o.get("gso_datagrams", 0),
             "send_error": o.get("send_error")}
        if lat:
            r["latency_us"] = {"p50": hist_pct(o["hist"], 0.5), "p99": hist_pct(o["hist"], 0.99),
                               "samples": sum(c for _, c in o["hist"])}
        rows.append(r)
    return rows, err


def run_cs_row(a, topo, size, lat, tag, seconds, system):
    n = topo.n
    group = "nb-%s" % tag
    procs = []
    for i in range(1, n + 1):
        argv = ["ip", "netns", "exec", topo.ns(i), "timeout", "--kill-after=5", str(int(seconds + 90)),
                a.cpgload, "--size", str(size), "--guarantee", "agreed", "--send", a.send, "--seconds",
                str(seconds), "--group", group[:120], "--expect-members", str(n), "--system", system,
                "--wait-timeout", "30", "--drain-timeout", "10", "--json"]
        if lat:
            argv.append("--latency")
        errf = open(os.path.join(a.logs, "%s.%d.err" % (tag, i)), "w")
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errf, text=True)
        live_procs.append(p)
        procs.append((p, errf))
    rows, err = [], None
    for i, (p, errf) in enumerate(procs, 1):
        out, _ = p.communicate()
        errf.close()
        live_procs.remove(p)
        js = [l for l in out.splitlines() if l.startswith("{")]
        if not js:
            err = "cpgload %d printed no result (logs/%s.%d.err)" % (i, tag, i)
            continue
        o = json.loads(js[-1])
        r = {"msgs_per_sec": o.get("msgs_per_sec"), "mb_per_sec": o.get("mb_per_sec"),
             "delivered": o.get("delivered"), "lost": o.get("lost"),
             "drained": (o.get("settings") or {}).get("drained")}
        if lat:
            l = o.get("latency_us") or {}
            r["latency_us"] = {"p50": l.get("p50"), "p99": l.get("p99"), "samples": l.get("samples")}
        rows.append(r)
    return rows, err


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def summarize(rows, lat):
    if lat:
        return {"p50": mean([r["latency_us"]["p50"] for r in rows]),
                "p99": mean([r["latency_us"]["p99"] for r in rows])}
    out = {"msgs_per_sec": mean([r["msgs_per_sec"] for r in rows]),
           "mb_per_sec": mean([r["mb_per_sec"] for r in rows]),
           "lost": sum(r.get("lost") or 0 for r in rows)}
    gso_sends = sum(r.get("gso_sends") or 0 for r in rows)
    if gso_sends:
        # ours: frames per UDP GSO send (a run of frames of one size)
        out["frames_per_gso_send"] = sum(r.get("gso_datagrams") or 0 for r in rows) / gso_sends
    return out


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def meta(a, when):
    cs = run("corosync", "-v", check=False).stdout
    m = re.search(r"version '([^']*)'", cs)
    git = run("git", "-C", REPO, "rev-parse", "--short", "HEAD", check=False).stdout.strip()
    return {"meta": {"when": when, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "kernel": os.uname().release, "cpus": os.cpu_count(), "loadavg": loadavg(),
                     "uptime": run("uptime", check=False).stdout.strip(),
                     "corosync": m.group(1) if m else "?", "git": git, "seconds": a.seconds,
                     "repeat": a.repeat, "nodes": a.nodes, "send": a.send,
                     "mtus": a.mtus, "gso": a.gso, "token_ms": a.token, "token_coefficient_ms": a.coef,
                     "cpgtool": a.cpgtool}}


def emit(a, obj):
    with open(a.results, "a") as f:
        f.write(json.dumps(obj) + "\n")


# ------------------------------------------------------------------ compare mode
def compare(a):
    key = os.path.join(a.work, "authkey")
    write_key(key)
    topo = Topology(a.nodes, a.mtus[0])
    emit(a, meta(a, "start"))
    for mtu in a.mtus:
        topo.set_mtu(mtu)
        for crypto in a.crypto:
            on = crypto == "on"
            state = os.path.join(a.work, "state-%d-%s" % (mtu, crypto))
            # one config per --gso value: "cpg-rs" rows with GSO on (the
            # default), "cpg-rs-nogso" rows with it off (an A/B of ours)
            confs = {}
            for g in a.gso:
                sfx = "" if g == "on" else "-nogso"
                conf = os.path.join(a.work, "cpg-%d-%s%s.toml" % (mtu, crypto, sfx))
                with open(conf, "w") as f:
                    f.write(ours_conf(a.nodes, mtu, on, key, state, a.token, a.coef, g == "on"))
                shutil.copy(conf, os.path.join(a.logs, "cpg-%d-%s%s.toml" % (mtu, crypto, sfx)))
                confs["cpg-rs" + sfx] = conf
            for transport in a.transports:
                if on and transport != "knet":
                    continue  # Corosync 3 encrypts only on knet
                cstag = "%s-%d-%s" % (transport, mtu, crypto)
                log("MTU %d crypto %s: starting %d Corosync (%s)" % (mtu, crypto, a.nodes, transport))
                cs = CorosyncCluster(topo, transport, on, key, a.work, a.logs, cstag, a.token, a.coef)
                ready = cs.wait_ready(a.cpgload)
                if not ready:
                    log("Corosync %s did not form a ring of %d" % (cstag, a.nodes))
                rows = [(s, False) for s in a.sizes] + ([(64, True)] if a.latency else [])
                for rep in range(1, a.repeat + 1):
                    for size, lat in rows:
                        # ours only once per (mtu, crypto, rep), beside the first transport
                        pair = []
                        if transport == a.transports[0]:
                            pair.extend(confs)
                        pair.append("corosync-" + transport)
                        for system in pair:
                            tag = "%s-%d-%s-%d%s-r%d" % (system, mtu, crypto, size, "-lat" if lat else "", rep)
                            t0 = time.time()
                            if system in confs:
                                rs, err = run_ours_row(a, topo, confs[system], size, lat, tag, a.seconds)
                            elif ready:
                                rs, err = run_cs_row(a, topo, size, lat, tag, a.seconds, system)
                            else:
                                rs, err = [], "Corosync did not form the ring (logs/corosync-%s-*)" % cstag
                            row = {"system": system, "nodes": a.nodes, "mtu": mtu, "crypto": crypto,
                                   "size": size, "latency": lat, "rep": rep, "members": rs,
                                   "loadavg": loadavg(), "wall_s": round(time.time() - t0, 1)}
                            if rs:
                                row.update(summarize(rs, lat))
                            if err:
                                row["error"] = err
                            emit(a, row)
                            log(short(row))
                cs.stop()
    emit(a, meta(a, "end"))
    topo.destroy()


def short(r):
    s = "%-16s mtu %4d crypto %-3s %7d B%s r%d: " % (r["system"], r.get("mtu", 0), r.get("crypto", ""),
                                                     r["size"], " lat" if r.get("latency") else "", r["rep"])
    if r.get("latency"):
        s += "p50 %s p99 %s us" % (fmt(r.get("p50")), fmt(r.get("p99")))
    else:
        s += "%s msgs/s %s MB/s lost %s" % (fmt(r.get("msgs_per_sec")), fmt(r.get("mb_per_sec")), r.get("lost"))
        if r.get("frames_per_gso_send"):
            s += " (%.1f frames per GSO send)" % r["frames_per_gso_send"]
    if r.get("error"):
        s += " ERROR " + r["error"]
    return s


def fmt(x):
    return "-" if x is None else ("%.0f" % x if x >= 100 else "%.1f" % x)


# ------------------------------------------------------------------ scaling mode
def failover_ours(a, topo, conf, tag):
    """SIGKILL node N's process; time until each survivor's confchg has it left (NODEDOWN)."""
    n = topo.n
    kids = []
    for i in range(1, n + 1):
        kids.append(Child(topo.ns(i), [a.cpgtool, "node", "--config", conf, "--nodeid", str(i)],
                          os.path.join(a.logs, "%s.%d.err" % (tag, i)), stdin=True))
    try:
        for i, k in enumerate(kids, 1):
            if k.wait_json(lambda o: o.get("ev") == "ready", 60)[0] is None:
                return None, "node %d not ready" % i
        for k in kids:
            k.send(json.dumps({"cmd": "join", "group": "fo"}))
        for i, k in enumerate(kids, 1):
            o, _ = k.wait_json(lambda o: o.get("ev") == "confchg" and len(o.get("members", [])) == n, 90)
            if o is None:
                return None, "node %d never saw %d members" % (i, n)
        time.sleep(2)
        t0 = time.monotonic()
        os.kill(kids[-1].p.pid, signal.SIGKILL)
        times = []
        for i, k in enumerate(kids[:-1], 1):
            o, t = k.wait_json(lambda o: o.get("ev") == "confchg" and any(
                c[0] == n for c in o.get("left", [])), 60)
            if o is None:
                return None, "node %d saw no confchg without node %d in 60 s" % (i, n)
            times.append((t - t0) * 1000.0)
        return times, None
    finally:
        for k in kids[:-1]:
            k.send(json.dumps({"cmd": "quit"}))
        for k in kids:
            k.stop(timeout=10, sig=signal.SIGCONT)


MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}


def cs_log_times(path, pattern):
    """Wall-clock times of the log lines matching pattern (timestamp: hires)."""
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if not re.search(pattern, line):
                    continue
                m = re.match(r"(\w{3}) (\d+) (\d+):(\d+):(\d+)(?:\.(\d+))?", line)
                if not m:
                    continue
                now = time.gmtime()
                tm = time.struct_time((now.tm_year, MONTHS[m.group(1)], int(m.group(2)), int(m.group(3)),
                                       int(m.group(4)), int(m.group(5)), 0, 0, -1))
                frac = float("0." + m.group(6)) if m.group(6) else 0.0
                out.append(time.mktime(tm) + frac)
    except OSError:
        pass
    return out


def failover_corosync(a, topo, key, tag):
    n = topo.n
    cs = CorosyncCluster(topo, "knet", False, key, a.work, a.logs, tag, a.token, a.coef)
    try:
        if not cs.wait_ready(a.cpgload):
            return None, "Corosync did not form a ring of %d" % n
        time.sleep(2)
        t0 = time.time()
        os.kill(cs.procs[-1].p.pid, signal.SIGKILL)
        pat = r"A new membership .* was formed|Members left:"
        deadline = time.monotonic() + 60
        times = None
        while time.monotonic() < deadline:
            ts = [[x for x in cs_log_times(cs.log_path(i), pat) if x >= t0 - 0.001] for i in range(1, n)]
            if all(ts):
                times = [(min(x) - t0) * 1000.0 for x in ts]
                break
            time.sleep(0.5)
        if times is None:
            return None, "no new membership in the survivors' logs within 60 s"
        return times, None
    finally:
        cs.stop()


def scaling(a):
    key = os.path.join(a.work, "authkey")
    write_key(key)
    emit(a, meta(a, "start"))
    for n in a.scale_nodes:
        log("scaling: %d namespaces, MTU %d" % (n, a.mtus[0]))
        topo = Topology(n, a.mtus[0])
        state = os.path.join(a.work, "state-n%d" % n)
        conf = os.path.join(a.work, "cpg-n%d.toml" % n)
        with open(conf, "w") as f:
            f.write(ours_conf(n, a.mtus[0], False, key, state, a.token, a.coef))
        shutil.copy(conf, os.path.join(a.logs, "cpg-n%d.toml" % n))
        eff = a.token + max(n - 2, 0) * a.coef
        formula = eff + 1.2 * eff
        cs = None
        if n in a.cs_scale:
            cs = CorosyncCluster(topo, "knet", False, key, a.work, a.logs, "scale-n%d" % n, a.token, a.coef)
            if not cs.wait_ready(a.cpgload):
                log("Corosync did not form a ring of %d" % n)
        for rep in range(1, a.repeat + 1):
            for size in a.scale_sizes:
                systems = (["cpg-rs"] if a.ours else []) + (["corosync-knet"] if cs else [])
                for system in systems:
                    tag = "scale-%s-n%d-%d-r%d" % (system, n, size, rep)
                    t0 = time.time()
                    if system == "cpg-rs":
                        rs, err = run_ours_row(a, topo, conf, size, False, tag, a.seconds)
                    else:
                        rs, err = run_cs_row(a, topo, size, False, tag, a.seconds, system)
                    row = {"kind": "throughput", "system": system, "nodes": n, "mtu": a.mtus[0],
                           "crypto": "off", "size": size, "latency": False, "rep": rep, "members": rs,
                           "loadavg": loadavg(), "wall_s": round(time.time() - t0, 1)}
                    if rs:
                        row.update(summarize(rs, False))
                        rot = [r["secs"] / r["token_rotations"] for r in rs if r.get("token_rotations")]
                        if rot:
                            row["rotation_us"] = statistics.median(rot) * 1e6
                    if err:
                        row["error"] = err
                    emit(a, row)
                    log(short(row) + (" rotation %.0f us" % row["rotation_us"] if "rotation_us" in row else ""))
        if cs:
            cs.stop()
        for rep in range(1, a.failover_repeat + 1):
            systems = (["cpg-rs"] if a.ours else []) + (["corosync-knet"] if n in a.cs_failover else [])
            for system in systems:
                if system == "cpg-rs":
                    times, err = failover_ours(a, topo, conf, "failover-cpg-rs-n%d-r%d" % (n, rep))
                else:
                    times, err = failover_corosync(a, topo, key, "failover-cs-n%d-r%d" % (n, rep))
                row = {"kind": "failover", "system": system, "nodes": n, "rep": rep, "token_ms": a.token,
                       "token_coefficient_ms": a.coef, "formula_ms": formula, "loadavg": loadavg()}
                if times:
                    row.update({"survivors_ms": times, "max_ms": max(times),
                                "median_ms": statistics.median(times)})
                if err:
                    row["error"] = err
                emit(a, row)
                log("failover %s n=%d: %s (formula %.0f ms) %s" % (
                    system, n, times and "%.0f ms" % max(times), formula, err or ""))
        topo.destroy()
    emit(a, meta(a, "end"))


def ints(s):
    return [int(x) for x in s.split()]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["compare", "scaling"])
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--mtus", default="1500 9000")
    p.add_argument("--crypto", default="off on")
    p.add_argument("--sizes", default="64 1024 65536 1048576")
    p.add_argument("--no-latency", action="store_true")
    p.add_argument("--transports", default="knet")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--send", default="copy", choices=["copy", "zcb"])
    p.add_argument("--gso", default="on", help='ours: "on", "off" or "on off" (an A/B: off rows are '
                   'system cpg-rs-nogso, which the report leaves out)')
    p.add_argument("--token", type=int, default=1000, help="token ms, both systems")
    p.add_argument("--coef", type=int, default=650, help="token_coefficient ms, both systems")
    p.add_argument("--scale-nodes", default="3 5 9 16")
    p.add_argument("--scale-sizes", default="64 1024")
    p.add_argument("--cs-scale", default="3 5", help="N at which Corosync's throughput rows run too")
    p.add_argument("--cs-failover", default="3 5")
    p.add_argument("--failover-repeat", type=int, default=2)
    p.add_argument("--no-ours", action="store_true", help="scaling: Corosync's rows only")
    p.add_argument("--cpgtool", default=os.path.join(REPO, "target/release/cpgtool"))
    p.add_argument("--cpgload", default=os.path.join(HERE, "corosync/build/cpgload"))
    p.add_argument("--out", required=True)
    a = p.parse_args()
    a.mtus, a.sizes = ints(a.mtus), ints(a.sizes)
    a.crypto, a.transports = a.crypto.split(), a.transports.split()
    a.gso = a.gso.split()
    if not a.gso or any(g not in ("on", "off") for g in a.gso):
        sys.exit('netns_compare.py: --gso takes "on", "off" or both')
    a.scale_nodes, a.scale_sizes = ints(a.scale_nodes), ints(a.scale_sizes)
    a.cs_scale, a.cs_failover = ints(a.cs_scale), ints(a.cs_failover)
    a.latency = not a.no_latency
    a.ours = not a.no_ours
    if os.geteuid() != 0:
        sys.exit("netns_compare.py: root only (network namespaces)")
    os.makedirs(a.out, exist_ok=True)
    a.logs = os.path.join(a.out, "logs")
    os.makedirs(a.logs, exist_ok=True)
    a.results = os.path.join(a.out, "results.jsonl")
    open(a.results, "w").close()
    a.work = tempfile.mkdtemp(prefix="netbench-")
    tmp_dirs.append(a.work)
    atexit.register(cleanup)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    if a.mode == "compare":
        compare(a)
    else:
        scaling(a)
    prune_logs(a.logs)


def prune_logs(d):
    """Drop empty stderr files and those holding only our crypto = "none" warning."""
    for f in os.listdir(d):
        p = os.path.join(d, f)
        if not f.endswith((".err", ".stderr")):
            continue
        with open(p, errors="replace") as fh:
            lines = [l for l in fh if 'crypto = "none"' not in l]
        if not lines:
            os.remove(p)


if __name__ == "__main__":
    main()
