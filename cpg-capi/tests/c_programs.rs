//! The C test programs of `tests/c/` against `libcpg.so.4` and cpgd.
//!
//! The library is linked by `build-lib.sh` (a nested `cargo build`); each
//! program is compiled with `cc` against our header and, where Debian's
//! `libcpg-dev` is installed, also against Corosync's header and library
//! (then run on ours: a binary built for Corosync, unchanged). Every
//! program runs with `LD_LIBRARY_PATH` at our library and `CPGD_SOCKET` at
//! a cpgd this test starts in-process. Debian's `corosync-cpgtool`, when
//! installed, runs unmodified the same way. A test that needs a tool the
//! machine lacks says so and returns; none passes silently.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use cpg_std::{ConfigFile, Cpg, GroupName, ModelV1};
use cpgd::{Daemon, StopMode};

// ------------------------------------------------------------------ build

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if Path::new(&t).is_absolute() => PathBuf::from(t),
        Some(t) => manifest().join("..").join(t),
        None => manifest().join("../target"),
    }
}

/// Which header (and library, at link time) a program is built against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abi {
    /// `cpg-capi/include`, linked against our `libcpg.so`.
    Ours,
    /// Corosync's `/usr/include/corosync/cpg.h`, linked against Debian's
    /// `libcpg.so` (and run on ours).
    Corosync,
}

const PROGRAMS: &[&str] = &["abi", "api", "order", "threads", "big", "member", "zcleak"];

struct Built {
    lib: PathBuf,
    bin: PathBuf,
    /// Corosync's header and `libcpg.so` are installed.
    corosync: bool,
}

fn corosync_dev() -> Option<PathBuf> {
    let h = Path::new("/usr/include/corosync/cpg.h");
    let dirs = ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"];
    let lib = dirs
        .iter()
        .map(Path::new)
        .find(|d| d.join("libcpg.so").exists())?;
    h.exists().then(|| lib.to_path_buf())
}

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

fn compile(built_lib: &Path, bin: &Path, name: &str, abi: Abi) -> PathBuf {
    let src = manifest().join("tests/c").join(format!("{name}.c"));
    let out = bin.join(format!("{name}.{abi:?}").to_lowercase());
    let mut c = Command::new(cc());
    c.args([
        "-std=gnu11",
        "-O1",
        "-g",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pthread",
    ]);
    match abi {
        Abi::Ours => {
            c.arg("-I").arg(manifest().join("include"));
            c.arg("-L").arg(built_lib);
        }
        Abi::Corosync => {
            c.arg("-L")
                .arg(corosync_dev().expect("checked by the caller"));
        }
    }
    c.arg("-o").arg(&out).arg(&src).arg("-lcpg");
    let o = c.output().expect("cc runs");
    assert!(
        o.status.success(),
        "cc {name} against {abi:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// The library and every program, built once per test binary.
fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let lib = target_dir().join("capi-test");
        let o = Command::new(manifest().join("build-lib.sh"))
            .arg("--out")
            .arg(&lib)
            .output()
            .expect("build-lib.sh runs");
        assert!(
            o.status.success(),
            "build-lib.sh: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let bin = lib.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let corosync = corosync_dev().is_some();
        if !corosync {
            println!("note: no /usr/include/corosync/cpg.h with libcpg.so (libcpg-dev): programs built against our header only");
        }
        for p in PROGRAMS {
            compile(&lib, &bin, p, Abi::Ours);
            if corosync {
                compile(&lib, &bin, p, Abi::Corosync);
            }
        }
        Built { lib, bin, corosync }
    })
}

fn program(name: &str, abi: Abi) -> PathBuf {
    built().bin.join(format!("{name}.{abi:?}").to_lowercase())
}

/// The ABIs to run a program with: ours, and Corosync's when installed.
fn abis() -> Vec<Abi> {
    if built().corosync {
        vec![Abi::Ours, Abi::Corosync]
    } else {
        vec![Abi::Ours]
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

// ----------------------------------------------------------------- daemons

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// cpgd nodes in this process, one socket each.
struct Cluster {
    dir: PathBuf,
    daemons: Vec<Option<Daemon>>,
}

impl Cluster {
    fn start(tag: &str, n: u32) -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "cpg-capi-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let nodes: Vec<(u32, SocketAddrV4)> = (1..=n)
            .map(|i| (i, SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port())))
            .collect();
        let mut file = ConfigFile::new("capi-test", &nodes);
        file.state_dir = dir.clone();
        file.totem.token_ms = Some(1000);
        file.totem.token_coefficient_ms = Some(0);
        let daemons = (1..=n)
            .map(|id| {
                let mut f = file.clone();
                f.ipc.socket = dir.join(format!("cpgd-{id}.sock"));
                let cfg = f.validate(Some(id)).expect("config");
                Some(Daemon::start(&cfg).expect("cpgd starts"))
            })
            .collect();
        let c = Cluster { dir, daemons };
        c.wait_ring(n);
        c
    }

    fn socket(&self, id: u32) -> PathBuf {
        self.dir.join(format!("cpgd-{id}.sock"))
    }

    fn daemon(&self, id: u32) -> &Daemon {
        self.daemons[id as usize - 1].as_ref().expect("running")
    }

    /// Until every node accepts clients and all are in one ring (a probe
    /// member on each sees all of them).
    fn wait_ring(&self, n: u32) {
        let end = Instant::now() + Duration::from_secs(60);
        let g = GroupName::new(b"capi-test-probe").unwrap();
        let mut probes = Vec::new();
        for id in 1..=n {
            let cpg = loop {
                match Cpg::connect(Some(&self.socket(id)), ModelV1::default(), None) {
                    Ok(c) => break c,
                    Err(e) => {
                        assert!(Instant::now() < end, "node {id} does not accept: {e:?}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            };
            cpg.join(&g).unwrap();
            probes.push(cpg);
        }
        loop {
            let all = probes.iter().all(|p| {
                let _ = p.dispatch(cpg_std::DispatchFlags::All);
                p.membership_get(&g).map(|m| m.len()) == Ok(n as usize)
            });
            if all {
                break;
            }
            assert!(Instant::now() < end, "no ring of {n} nodes");
            std::thread::sleep(Duration::from_millis(50));
        }
        for p in probes {
            p.finalize().unwrap();
        }
    }

    fn stop(&mut self, id: u32, mode: StopMode) {
        if let Some(d) = self.daemons[id as usize - 1].take() {
            d.stop(mode);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for d in self.daemons.iter_mut() {
            if let Some(d) = d.take() {
                d.stop(StopMode::Graceful);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- programs

fn env_for<'a>(c: &'a mut Command, socket: &Path) -> &'a mut Command {
    c.env("CPGD_SOCKET", socket)
        .env("LD_LIBRARY_PATH", &built().lib)
}

/// Run `bin` to its end (at most `t`); (exit code, stdout, stderr).
fn run(bin: &Path, args: &[&str], socket: &Path, t: Duration) -> (i32, String, String) {
    let mut c = Command::new(bin);
    env_for(&mut c, socket)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().expect("spawn");
    wait_output(child, t)
}

fn wait_output(mut child: Child, t: Duration) -> (i32, String, String) {
    let end = Instant::now() + t;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "timed out; stdout: {} stderr: {}",
                o.join().unwrap(),
                e.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let code = status.code().unwrap_or(-1);
    (code, o.join().unwrap(), e.join().unwrap())
}

/// Run a self-checking program: exit 0 and its summary line.
fn self_check(name: &str, abi: Abi, socket: &Path, t: Duration) -> String {
    let (code, out, err) = run(&program(name, abi), &[], socket, t);
    println!("{name} ({abi:?} header): {}", out.trim_end());
    assert_eq!(code, 0, "{name} ({abi:?}) failed:\n{out}\n{err}");
    assert!(out.contains(" 0 failures"), "{out}");
    out
}

/// A `member` process: commands in, lines out.
struct Member {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    pid: u32,
    nodeid: u32,
}

impl Member {
    fn spawn(socket: &Path, args: &[&str]) -> Member {
        let mut c = Command::new(program("member", Abi::Ours));
        env_for(&mut c, socket)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = c.spawn().expect("spawn member");
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                match l {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        let mut m = Member {
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
            pid: 0,
            nodeid: 0,
        };
        let ready = m.expect(|l| l.starts_with("ready "), Duration::from_secs(30));
        let mut f = ready.split_whitespace().skip(1);
        m.nodeid = f.next().unwrap().parse().unwrap();
        m.pid = f.next().unwrap().parse().unwrap();
        m
    }

    fn cmd(&mut self, c: &str) {
        writeln!(self.stdin, "{c}").expect("member stdin");
        self.stdin.flush().unwrap();
    }

    /// The next line matching `f` (lines before it are kept in `seen`).
    fn expect(&mut self, f: impl Fn(&str) -> bool, t: Duration) -> String {
        let end = Instant::now() + t;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = f(&l);
                    self.seen.push(l.clone());
                    if hit {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "member {} on node {}: no such line in {t:?}; saw:\n{}",
                    self.pid,
                    self.nodeid,
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn confchg(&mut self) -> Confchg {
        let l = self.expect(|l| l.starts_with("confchg "), Duration::from_secs(30));
        Confchg::parse(&l)
    }

    fn me(&self) -> (u32, u32) {
        (self.nodeid, self.pid)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `confchg` line.
#[derive(Debug, PartialEq)]
struct Confchg {
    members: Vec<(u32, u32)>,
    left: Vec<(u32, u32, u32)>,
    joined: Vec<(u32, u32, u32)>,
}

impl Confchg {
    fn parse(l: &str) -> Confchg {
        let field = |name: &str| -> Vec<Vec<u32>> {
            let at = l.find(&format!(" {name}=")).expect(name) + name.len() + 2;
            let v = l[at..].split_whitespace().next().unwrap_or("");
            if v.is_empty() || v.contains('=') {
                return Vec::new();
            }
            v.split(',')
                .map(|e| e.split('/').map(|n| n.parse().unwrap()).collect())
                .collect()
        };
        Confchg {
            members: field("members").iter().map(|e| (e[0], e[1])).collect(),
            left: field("left").iter().map(|e| (e[0], e[1], e[2])).collect(),
            joined: field("joined").iter().map(|e| (e[0], e[1], e[2])).collect(),
        }
    }
}

fn sorted(mut v: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    v.sort();
    v
}

const LONG: Duration = Duration::from_secs(120);

/// The value of `k=` in a line.
fn kv(l: &str, k: &str) -> String {
    l.split_whitespace()
        .find_map(|f| f.strip_prefix(&format!("{k}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("no {k}= in {l}"))
}

/// What members sent, summed: what each member must deliver.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Totals {
    count: u64,
    bytes: u64,
    sum: u32,
}

impl Totals {
    fn add_sent(&mut self, sent: &str) {
        self.count += kv(sent, "count").parse::<u64>().unwrap();
        self.bytes += kv(sent, "bytes").parse::<u64>().unwrap();
        self.sum = self
            .sum
            .wrapping_add(u32::from_str_radix(&kv(sent, "sum"), 16).unwrap());
    }

    fn of_stats(stats: &str) -> Totals {
        Totals {
            count: kv(stats, "delivered").parse().unwrap(),
            bytes: kv(stats, "bytes").parse().unwrap(),
            sum: u32::from_str_radix(&kv(stats, "sum"), 16).unwrap(),
        }
    }
}

/// Ask `m` for its stats until they are `want`; its delivery chain.
fn wait_stats(m: &mut Member, want: &Totals) -> String {
    let end = Instant::now() + LONG;
    loop {
        m.cmd("stats");
        let got = m.expect(|l| l.starts_with("stats "), LONG);
        if Totals::of_stats(&got) == *want {
            return kv(&got, "chain");
        }
        assert!(
            Instant::now() < end,
            "member {} got {got}, want {want:?}",
            m.pid
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ------------------------------------------------------------------- tests

/// `objdump -T` of ours: exactly Debian's defined symbols, at the same
/// versions; soname libcpg.so.4; the symlink and pkg-config file beside it.
#[test]
fn the_library_exports_exactly_debians_symbols() {
    let b = built();
    let Some(objdump) = which("objdump") else {
        println!("skipped: no objdump (binutils) on this machine");
        return;
    };
    let defined = |lib: &Path| -> Vec<(String, String)> {
        let o = Command::new(&objdump).arg("-T").arg(lib).output().unwrap();
        assert!(o.status.success());
        let mut v: Vec<(String, String)> = String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .filter(|l| l.len() > 16 && l.as_bytes()[16] == b' ' && !l.contains("*UND*"))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 2).then(|| (f[f.len() - 2].to_string(), f[f.len() - 1].to_string()))
            })
            .collect();
        v.sort();
        v
    };
    let ours = defined(&b.lib.join("libcpg.so.4"));
    let debian_lib = Path::new("/usr/lib/x86_64-linux-gnu/libcpg.so.4");
    let expected = if debian_lib.exists() {
        println!("comparing with {}", debian_lib.display());
        defined(debian_lib)
    } else {
        println!(
            "no Debian libcpg.so.4 here: comparing with the recorded objdump -T of Debian's 3.1.7"
        );
        let t = std::fs::read_to_string(
            manifest().join("tests/debian-3.1.7-libcpg.so.4.objdump-T.txt"),
        )
        .unwrap();
        let mut v: Vec<(String, String)> = t
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[f.len() - 2].to_string(), f[f.len() - 1].to_string())
            })
            .collect();
        v.sort();
        v
    };
    for (ver, sym) in &ours {
        println!("{ver:>18} {sym}");
    }
    assert_eq!(ours, expected);
    assert_eq!(ours.len(), 21, "20 functions and the version node");
    let p = Command::new(&objdump)
        .arg("-p")
        .arg(b.lib.join("libcpg.so.4"))
        .output()
        .unwrap();
    let p = String::from_utf8(p.stdout).unwrap();
    assert!(
        p.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["SONAME", "libcpg.so.4"]),
        "{p}"
    );
    assert_eq!(
        std::fs::read_link(b.lib.join("libcpg.so")).unwrap(),
        Path::new("libcpg.so.4")
    );
    let pc = std::fs::read_to_string(b.lib.join("libcpg.pc")).unwrap();
    assert!(pc.contains("Libs: -L${libdir} -lcpg"), "{pc}");
    match which("pkg-config") {
        Some(pkg) => {
            let o = Command::new(pkg)
                .args(["--cflags", "--libs", "libcpg"])
                .env("PKG_CONFIG_PATH", &b.lib)
                .output()
                .unwrap();
            let flags = String::from_utf8(o.stdout).unwrap();
            assert!(o.status.success() && flags.contains("-lcpg"), "{flags}");
            assert!(flags.contains(&format!("-I{}", manifest().join("include").display())));
        }
        None => println!("pkg-config is not installed: libcpg.pc checked by reading it only"),
    }
}

/// A binary built against a libcpg with all 20 functions at
/// `COROSYNC_CPG_1.0` (Corosync ≥ 3.1.9 versions the 8 that 3.1.7 leaves
/// unversioned) runs on ours too: its versioned references bind to our
/// unversioned definitions.
#[test]
fn binaries_linked_at_corosync_3_1_9_versions_run_on_ours() {
    let b = built();
    let dir = b.lib.join("cpg-3.1.9-style");
    std::fs::create_dir_all(&dir).unwrap();
    let names = std::fs::read_to_string(manifest().join("libcpg.exports")).unwrap();
    let names: Vec<&str> = names.split_whitespace().collect();
    let src: String = names
        .iter()
        .map(|n| format!("int {n}(void) {{ return 0; }}\n"))
        .collect();
    std::fs::write(dir.join("stub.c"), src).unwrap();
    std::fs::write(
        dir.join("all.versions"),
        format!(
            "COROSYNC_CPG_1.0 {{ global: {}; local: *; }};\n",
            names.join("; ")
        ),
    )
    .unwrap();
    let o = Command::new(cc())
        .current_dir(&dir)
        .args([
            "-shared",
            "-fPIC",
            "-o",
            "libcpg.so.4",
            "stub.c",
            "-Wl,--version-script=all.versions",
            "-Wl,-soname,libcpg.so.4",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_file(dir.join("libcpg.so"));
    std::os::unix::fs::symlink("libcpg.so.4", dir.join("libcpg.so")).unwrap();
    let prog = dir.join("order");
    let o = Command::new(cc())
        .args(["-std=gnu11", "-pthread", "-I"])
        .arg(manifest().join("include"))
        .arg("-o")
        .arg(&prog)
        .arg(manifest().join("tests/c/order.c"))
        .arg("-L")
        .arg(&dir)
        .arg("-lcpg")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    if let Some(objdump) = which("objdump") {
        let t = Command::new(objdump).arg("-T").arg(&prog).output().unwrap();
        let t = String::from_utf8(t.stdout).unwrap();
        assert!(
            t.lines()
                .any(|l| l.contains("(COROSYNC_CPG_1.0)") && l.ends_with(" cpg_model_initialize")),
            "the program asks for cpg_model_initialize@COROSYNC_CPG_1.0:\n{t}"
        );
    }
    let c = Cluster::start("v319", 1);
    let (code, out, err) = run(&prog, &[], &c.socket(1), LONG);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(" 0 failures"), "{out}");
}

/// Our header and Corosync's give the same sizes, offsets and values
/// (`_Static_assert`s in both builds, and their printouts compared).
#[test]
fn the_headers_are_abi_identical() {
    let ours = Command::new(program("abi", Abi::Ours)).output().unwrap();
    assert!(ours.status.success());
    if !built().corosync {
        println!("skipped the comparison: Corosync's header is not installed (ours still passed its _Static_asserts)");
        return;
    }
    let theirs = Command::new(program("abi", Abi::Corosync))
        .env("LD_LIBRARY_PATH", &built().lib)
        .output()
        .unwrap();
    assert!(theirs.status.success());
    assert_eq!(
        String::from_utf8(ours.stdout).unwrap(),
        String::from_utf8(theirs.stdout).unwrap()
    );
}

#[test]
fn every_function_and_error_path() {
    let c = Cluster::start("api", 1);
    for abi in abis() {
        self_check("api", abi, &c.socket(1), LONG);
    }
}

#[test]
fn callback_order_and_the_initial_totem_confchg() {
    let c = Cluster::start("order", 1);
    for abi in abis() {
        self_check("order", abi, &c.socket(1), LONG);
    }
}

#[test]
fn calls_from_several_threads_on_one_handle() {
    let c = Cluster::start("threads", 1);
    for abi in abis() {
        self_check("threads", abi, &c.socket(1), LONG);
    }
}

#[test]
fn messages_up_to_64_mib_arrive_as_one_callback() {
    let c = Cluster::start("big", 1);
    self_check("big", Abi::Ours, &c.socket(1), LONG);
}

/// Three processes on two nodes: joins (reason 1), a leave (2) and a
/// re-join, a SIGKILLed process (PROCDOWN, 5), a node that stops answering
/// (NODEDOWN, 3) and comes back (NODEUP, 4), a node that dies (NODEDOWN,
/// 3); member lists sorted by (nodeid, pid); messages to everyone.
#[test]
fn three_processes_join_leave_and_die_with_their_reasons() {
    let mut c = Cluster::start("three", 2);
    let (s1, s2) = (c.socket(1), c.socket(2));
    let mut a = Member::spawn(&s1, &["three"]);
    let mut b = Member::spawn(&s1, &["three"]);
    let mut x = Member::spawn(&s2, &["three"]);
    let (ia, ib, ix) = (a.me(), b.me(), x.me());
    assert_eq!((ia.0, ib.0, ix.0), (1, 1, 2));

    a.cmd("join");
    let cc = a.confchg();
    assert_eq!(cc.members, vec![ia]);
    assert_eq!(cc.joined, vec![(ia.0, ia.1, 1)]);
    // the initial totem confchg follows the own join confchg
    a.expect(|l| l.starts_with("totem nodes=1,2"), LONG);

    b.cmd("join");
    let cc = b.confchg();
    assert_eq!(cc.members, sorted(vec![ia, ib]));
    assert_eq!(cc.joined, vec![(ib.0, ib.1, 1)]);
    assert_eq!(a.confchg(), cc, "every member sees the same confchg");

    x.cmd("join");
    let cc = x.confchg();
    assert_eq!(
        cc.members,
        sorted(vec![ia, ib, ix]),
        "sorted by (nodeid, pid)"
    );
    assert_eq!(cc.joined, vec![(ix.0, ix.1, 1)]);
    assert_eq!(a.confchg(), cc);
    assert_eq!(b.confchg(), cc);

    a.cmd("send hello from a");
    for m in [&mut a, &mut b, &mut x] {
        m.expect(
            |l| l.starts_with(&format!("deliver {}/{} len=12 ", ia.0, ia.1)),
            LONG,
        );
    }

    // a leave: reason 2, the leaver told too; then it joins again
    b.cmd("leave");
    let cc = b.confchg();
    assert_eq!(cc.left, vec![(ib.0, ib.1, 2)]);
    assert_eq!(cc.members, sorted(vec![ia, ix]));
    assert_eq!(a.confchg(), cc);
    assert_eq!(x.confchg(), cc);
    b.cmd("join");
    let cc = b.confchg();
    assert_eq!(cc.joined, vec![(ib.0, ib.1, 1)]);
    assert_eq!(cc.members, sorted(vec![ia, ib, ix]));
    assert_eq!(a.confchg(), cc);
    assert_eq!(x.confchg(), cc);

    // SIGKILL: process down, 5
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let cc = a.confchg();
    assert_eq!(cc.left, vec![(ib.0, ib.1, 5)]);
    assert_eq!(cc.members, sorted(vec![ia, ix]));
    assert_eq!(x.confchg(), cc);

    // node 2 stops answering past the token timeout (its engine frozen,
    // cpgd and its client alive): NODEDOWN (3) on node 1; thawed, it
    // merges back: NODEUP (4), and node 2's member sees node 1's again
    c.daemon(2).node_probe().set_frozen(true);
    let cc = a.confchg();
    assert_eq!(cc.left, vec![(ix.0, ix.1, 3)]);
    assert_eq!(cc.members, vec![ia]);
    a.expect(|l| l == "totem nodes=1", LONG);
    c.daemon(2).node_probe().set_frozen(false);
    let cc = a.confchg();
    assert_eq!(cc.joined, vec![(ix.0, ix.1, 4)], "{cc:?}");
    assert_eq!(cc.members, sorted(vec![ia, ix]));
    a.expect(|l| l.starts_with("totem nodes=1,2"), LONG);
    let cc = x.expect(
        |l| l.starts_with("confchg ") && Confchg::parse(l).members == sorted(vec![ia, ix]),
        LONG,
    );
    let cc = Confchg::parse(&cc);
    assert!(
        cc.joined.iter().all(|j| j.2 == 4 && j.0 == 1),
        "node 2's member sees node 1's back with NODEUP: {cc:?}"
    );
    a.cmd("send after the merge");
    for m in [&mut a, &mut x] {
        m.expect(
            |l| l.starts_with(&format!("deliver {}/{} len=15 ", ia.0, ia.1)),
            LONG,
        );
    }

    // node 2 dies: node down, 3, for its member; its client gets LIBRARY
    c.stop(2, StopMode::Abrupt);
    let cc = a.confchg();
    assert_eq!(cc.left, vec![(ix.0, ix.1, 3)]);
    assert_eq!(cc.members, vec![ia]);
    a.expect(|l| l == "totem nodes=1", LONG);
    x.expect(|l| l == "dispatch-error 2", LONG);
    let st = x.child.wait().unwrap();
    assert_eq!(
        st.code(),
        Some(3),
        "the member of the dead node exits on LIBRARY"
    );
    a.cmd("finalize");
    a.expect(|l| l == "rc finalize 1", LONG);
}

/// A poll() loop that dispatches ONE event per wake-up receives every
/// message of a burst (sizes up to 300 KB, so some travel in pieces), and
/// its fd is not readable once nothing is pending.
#[test]
fn a_poll_loop_dispatching_one_per_wakeup_receives_everything() {
    let c = Cluster::start("poll", 1);
    let s = c.socket(1);
    let mut rx = Member::spawn(&s, &["--one", "poll"]);
    let mut tx = Member::spawn(&s, &["poll"]);
    for m in [&mut rx, &mut tx] {
        m.cmd("quiet");
        m.expect(|l| l == "rc quiet 1", LONG);
        m.cmd("join");
    }
    rx.expect(
        |l| l.starts_with("confchg ") && l.matches('/').count() >= 4,
        LONG,
    );
    tx.expect(
        |l| l.starts_with("confchg ") && l.matches('/').count() >= 4,
        LONG,
    );
    let mut total = Totals::default();
    for (count, max, seed) in [(3000, 2000, 1), (400, 300_000, 2), (2000, 64, 3)] {
        tx.cmd(&format!("burst {count} {max} {seed}"));
        let sent = tx.expect(|l| l.starts_with("sent "), LONG);
        assert_eq!(kv(&sent, "count"), count.to_string(), "{sent}");
        total.add_sent(&sent);
    }
    wait_stats(&mut rx, &total);
    rx.cmd("idle 300");
    assert_eq!(
        rx.expect(|l| l.starts_with("idle "), LONG),
        "idle readable=0"
    );
}

/// A checksummed stream across three cpgd nodes with two C clients each:
/// messages of random sizes up to 3 MiB (so they travel in pieces through
/// the rings and in fragments on the network) from all six at once; every
/// member delivers every message intact, in one total order (the same
/// order-sensitive chain on all six).
#[test]
fn a_checksummed_stream_across_three_nodes_in_one_order() {
    let c = Cluster::start("stream", 3);
    let mut members: Vec<Member> = (1..=3)
        .flat_map(|id| {
            let s = c.socket(id);
            [
                Member::spawn(&s, &["stream"]),
                Member::spawn(&s, &["stream"]),
            ]
        })
        .collect();
    for m in members.iter_mut() {
        m.cmd("quiet");
        m.expect(|l| l == "rc quiet 1", LONG);
        m.cmd("join");
    }
    for m in members.iter_mut() {
        m.expect(
            |l| l.starts_with("confchg ") && kv(l, "members").split(',').count() == 6,
            LONG,
        );
    }
    for (i, m) in members.iter_mut().enumerate() {
        m.cmd(&format!("burst 6 {} {}", 3 << 20, 100 + i));
        m.cmd(&format!("burst 300 4000 {}", 200 + i));
    }
    let mut total = Totals::default();
    for m in members.iter_mut() {
        for _ in 0..2 {
            let sent = m.expect(|l| l.starts_with("sent "), LONG);
            total.add_sent(&sent);
        }
    }
    assert_eq!(total.count, 6 * 306);
    let chains: Vec<String> = members.iter_mut().map(|m| wait_stats(m, &total)).collect();
    println!(
        "{} messages, {} bytes, delivered to 6 members; chains {chains:?}",
        total.count, total.bytes
    );
    assert!(
        chains.iter().all(|c| *c == chains[0]),
        "one total order: {chains:?}"
    );
}

/// A zero-copy client that exits (or is killed) holding slots and never
/// finalizing: cpgd ends up with no connection and no slot of it, and
/// nothing is left in /dev/shm.
#[test]
fn a_zcb_client_exiting_without_cleanup_leaks_nothing() {
    let c = Cluster::start("zcleak", 1);
    let s = c.socket(1);
    let shm = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let before = shm();
    let d = c.daemon(1);
    // the probes of Cluster::start are gone once the stats say so
    let end = Instant::now() + LONG;
    while d.stats().connections != 0 {
        assert!(Instant::now() < end, "the probes' connections stay");
        std::thread::sleep(Duration::from_millis(20));
    }
    let base = d.stats();
    for how in [&[][..], &["kill"][..]] {
        let (code, out, err) = run(&program("zcleak", Abi::Ours), how, &s, LONG);
        println!("zcleak {how:?}: {}", out.trim_end());
        assert!(out.contains(" 0 failures"), "{out}\n{err}");
        if how.is_empty() {
            assert_eq!(code, 0, "{err}");
        }
        let end = Instant::now() + LONG;
        loop {
            let st = d.stats();
            if st.connections == 0 && st.zc_slots_in_use == 0 {
                break;
            }
            assert!(
                Instant::now() < end,
                "cpgd still holds connections {} slots {}",
                st.connections,
                st.zc_slots_in_use
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let st = d.stats();
    assert_eq!(
        st.hang_ups,
        base.hang_ups + 2,
        "both seen as a process going down"
    );
    assert!(
        st.zc_mcasts >= base.zc_mcasts + 8,
        "zero-copy sends: {}",
        st.zc_mcasts
    );
    // other programs (a running corosync's libqb) may create their own
    let new: Vec<String> = shm()
        .into_iter()
        .filter(|n| !before.contains(n) && !n.starts_with("qb-"))
        .collect();
    assert!(new.is_empty(), "left in /dev/shm: {new:?}");
}

/// Debian's own `corosync-cpgtool`, unmodified, on our library.
#[test]
fn debians_corosync_cpgtool_lists_groups_and_members() {
    let tool = Path::new("/usr/sbin/corosync-cpgtool");
    if !tool.exists() {
        println!("skipped: /usr/sbin/corosync-cpgtool is not installed (Debian package corosync)");
        return;
    }
    let b = built();
    let c = Cluster::start("cpgtool", 1);
    let s = c.socket(1);
    let mut cib1 = Member::spawn(&s, &["--nul", "cib"]);
    let mut cib2 = Member::spawn(&s, &["--nul", "cib"]);
    let mut demo = Member::spawn(&s, &["demo"]);
    for m in [&mut cib1, &mut cib2, &mut demo] {
        m.cmd("join");
    }
    cib2.expect(
        |l| l.starts_with("confchg ") && l.matches('/').count() >= 4,
        LONG,
    );
    demo.expect(|l| l.starts_with("confchg "), LONG);
    let cib = sorted(vec![cib1.me(), cib2.me()]);

    // The tool needs Corosync's cfg service (libcfg.so.7) for addresses.
    // In a network namespace of its own no corosync is reachable (libqb's
    // sockets are abstract), whatever runs on this host; cpgd's socket is a
    // path, so ours is.
    let unshare = which("unshare");
    let netns = |cmd: &mut Command| -> Command {
        let mut c = Command::new(unshare.as_ref().unwrap());
        c.arg("--net").arg(cmd.get_program());
        c.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        c
    };
    let tool_cmd = |libs: &str, args: &[&str]| -> Command {
        let mut c = Command::new(tool);
        c.args(args)
            .env("CPGD_SOCKET", &s)
            .env("LD_LIBRARY_PATH", libs);
        c
    };
    let ours = b.lib.display().to_string();
    let can_netns = unshare.is_some()
        && Command::new(unshare.as_ref().unwrap())
            .args(["--net", "true"])
            .status()
            .is_ok_and(|s| s.success());
    if can_netns {
        let o = netns(&mut tool_cmd(&ours, &[])).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        println!(
            "corosync-cpgtool without corosync: exit {:?}, stderr: {}",
            o.status.code(),
            err.trim_end()
        );
        assert_eq!(o.status.code(), Some(1));
        assert!(!err.contains("cpg API"), "our libcpg initialized: {err}");
        assert!(
            err.contains("Could not initialize corosync configuration API error 2"),
            "{err}"
        );
    } else {
        println!("note: no unshare --net here: the run without any corosync is not shown");
    }

    // With a stand-in libcfg.so.7 (tests/c/stub_libcfg.c) first in the
    // path, the tool's cfg calls succeed and the listing is ours.
    let stub = b.lib.join("stub-libcfg");
    std::fs::create_dir_all(&stub).unwrap();
    let o = Command::new(cc())
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(stub.join("libcfg.so.7"))
        .arg(manifest().join("tests/c/stub_libcfg.c"))
        .arg(format!(
            "-Wl,--version-script={}",
            manifest().join("tests/c/stub_libcfg.versions").display()
        ))
        .arg("-Wl,-soname,libcfg.so.7")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let libs = format!("{}:{ours}", stub.display());
    let listing = |args: &[&str]| -> String {
        let mut cmd = tool_cmd(&libs, args);
        let o = if can_netns {
            netns(&mut cmd).output().unwrap()
        } else {
            cmd.output().unwrap()
        };
        assert!(
            o.status.success(),
            "corosync-cpgtool {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let full = listing(&[]);
    println!("corosync-cpgtool:\n{full}");
    assert_eq!(
        full.lines().next(),
        Some("Group Name\t       PID\t   Node ID")
    );
    let mut groups = [("cib\\x00", cib.clone()), ("demo", vec![demo.me()])];
    groups.sort();
    let mut got_groups: Vec<(String, Vec<(u32, u32)>)> = Vec::new();
    for l in full.lines().skip(1) {
        if let Some(rest) = l.strip_prefix("\t\t") {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let pid: u32 = f[0].parse().unwrap();
            let node: u32 = f[1].parse().unwrap();
            assert_eq!(f[2], "()", "no address known to the stand-in libcfg");
            got_groups.last_mut().unwrap().1.push((node, pid));
        } else {
            got_groups.push((l.to_string(), Vec::new()));
        }
    }
    for g in got_groups.iter_mut() {
        g.1.sort();
    }
    got_groups.sort();
    let want_groups: Vec<(String, Vec<(u32, u32)>)> = groups
        .iter()
        .map(|(n, m)| (n.to_string(), m.clone()))
        .collect();
    assert_eq!(got_groups, want_groups, "{full}");
    let names = listing(&["-n"]);
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, ["cib\\x00", "demo"]);
    let delim = listing(&["-d", ","]);
    let mut rows: Vec<&str> = delim.lines().collect();
    assert_eq!(rows.remove(0), "GRP_NAME,PID,NODEID");
    rows.sort();
    let mut want_rows: Vec<String> = cib
        .iter()
        .map(|(n, p)| format!("cib\\x00,{p},{n}"))
        .chain([format!("demo,{},{}", demo.pid, demo.nodeid)])
        .collect();
    want_rows.sort();
    assert_eq!(rows, want_rows);
    // -e prints the name's bytes as they are: the NUL is part of it
    let raw = listing(&["-n", "-e"]);
    assert!(raw.split('\n').any(|l| l == "cib\0"), "{raw:?}");

    // A corosync running on this host (someone's) gives the tool its
    // cfg service: the listing is ours, the addresses corosync's.
    let corosync_cfg = std::fs::read_to_string("/proc/net/unix")
        .map(|t| t.contains("@cfg"))
        .unwrap_or(false);
    if corosync_cfg {
        let o = tool_cmd(&ours, &[]).output().unwrap();
        println!(
            "with this host's running corosync for cfg: exit {:?}\n{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout)
        );
    }
}

/// `install.sh --prefix` lays out a usable library: a program built with
/// its pkg-config file (or its -I/-L) runs against cpgd.
#[test]
fn the_install_script_installs_a_usable_library() {
    let b = built();
    let prefix = target_dir().join(format!("capi-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&prefix);
    let o = Command::new(manifest().join("install.sh"))
        .arg("--prefix")
        .arg(&prefix)
        .arg("--from")
        .arg(&b.lib)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in [
        "lib/libcpg.so.4",
        "lib/libcpg.so",
        "lib/pkgconfig/libcpg.pc",
        "include/corosync/cpg.h",
        "include/corosync/corotypes.h",
    ] {
        assert!(prefix.join(f).exists(), "{f} not installed");
    }
    let pc = std::fs::read_to_string(prefix.join("lib/pkgconfig/libcpg.pc")).unwrap();
    assert!(
        pc.contains(&format!("libdir={}", prefix.join("lib").display())),
        "{pc}"
    );
    let flags: Vec<String> = match which("pkg-config") {
        Some(pkg) => {
            let o = Command::new(pkg)
                .args(["--cflags", "--libs", "libcpg"])
                .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
                .output()
                .unwrap();
            assert!(o.status.success());
            String::from_utf8(o.stdout)
                .unwrap()
                .split_whitespace()
                .map(str::to_string)
                .collect()
        }
        None => {
            println!("pkg-config is not installed: building with -I/-L from the prefix");
            vec![
                format!("-I{}", prefix.join("include").display()),
                format!("-L{}", prefix.join("lib").display()),
                "-lcpg".into(),
            ]
        }
    };
    let out = prefix.join("order");
    let o = Command::new(cc())
        .args(["-std=gnu11", "-Wall", "-Werror", "-pthread", "-o"])
        .arg(&out)
        .arg(manifest().join("tests/c/order.c"))
        .args(&flags)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c = Cluster::start("install", 1);
    let mut cmd = Command::new(&out);
    cmd.env("CPGD_SOCKET", c.socket(1))
        .env("LD_LIBRARY_PATH", prefix.join("lib"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (code, stdout, stderr) = wait_output(cmd.spawn().unwrap(), LONG);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let _ = std::fs::remove_dir_all(&prefix);
}
