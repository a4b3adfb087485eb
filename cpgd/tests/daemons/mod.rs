//! cpgd as real processes for the tests that need them: one daemon per
//! node on 127.0.0.1, each with its own config and socket, killed when the
//! set is dropped.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use cpg_std::config::ConfigFile;

use crate::procs::{local_nodes, DEADLINE};

/// Where a daemon's log goes.
#[derive(Debug, Clone, Copy)]
enum Logs {
    /// `warn` and above on the test's stderr.
    Inherit,
    /// `info` and above into `cpgd-N.log` (read back with [`Daemons::log`]).
    Files,
}

/// The cpgd processes of a test, one per node, each with its own socket.
pub struct Daemons {
    dir: PathBuf,
    file: ConfigFile,
    procs: Vec<Option<Child>>,
    logs: Logs,
}

impl Daemons {
    /// `n` daemons (2 s token) logging warnings to stderr, `tweak`
    /// applied to their common config.
    pub fn start(name: &str, n: u32, tweak: impl FnOnce(&mut ConfigFile)) -> Daemons {
        Daemons::start_with(name, n, Logs::Inherit, tweak)
    }

    /// As [`Daemons::start`], each daemon logging at `info` into its own
    /// file, for tests that look for an operator's line.
    pub fn start_logged(name: &str, n: u32) -> Daemons {
        Daemons::start_with(name, n, Logs::Files, |_| {})
    }

    fn start_with(name: &str, n: u32, logs: Logs, tweak: impl FnOnce(&mut ConfigFile)) -> Daemons {
        let dir = std::env::temp_dir().join(format!("cpgd-tests-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut file = ConfigFile::new(name, &local_nodes(n as usize));
        file.state_dir = dir.join("state");
        file.totem.token_ms = Some(2000);
        file.totem.token_coefficient_ms = Some(0);
        tweak(&mut file);
        let mut d = Daemons {
            dir,
            file,
            procs: (0..n).map(|_| None).collect(),
            logs,
        };
        for id in 1..=n {
            d.spawn(id);
        }
        d
    }

    pub fn socket(&self, id: u32) -> PathBuf {
        self.dir.join(format!("cpgd-{id}.sock"))
    }

    fn config(&self, id: u32) -> PathBuf {
        self.dir.join(format!("cpgd-{id}.toml"))
    }

    fn log_path(&self, id: u32) -> PathBuf {
        self.dir.join(format!("cpgd-{id}.log"))
    }

    /// What daemon `id` logged so far (started with `start_logged`).
    pub fn log(&self, id: u32) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// Start (or restart) daemon `id` and wait until it accepts.
    pub fn spawn(&mut self, id: u32) {
        let mut f = self.file.clone();
        f.ipc.socket = self.socket(id);
        std::fs::write(self.config(id), f.to_toml()).unwrap();
        let (level, stderr) = match self.logs {
            Logs::Inherit => ("warn", Stdio::inherit()),
            Logs::Files => (
                "info",
                Stdio::from(std::fs::File::create(self.log_path(id)).unwrap()),
            ),
        };
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_cpgd"))
            .arg("--config")
            .arg(self.config(id))
            .args(["--nodeid", &id.to_string(), "--log-level", level])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn cpgd");
        self.procs[id as usize - 1] = Some(child);
        let end = Instant::now() + DEADLINE;
        while std::os::unix::net::UnixStream::connect(self.socket(id)).is_err() {
            assert!(Instant::now() < end, "cpgd {id} never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL daemon `id`.
    pub fn kill(&mut self, id: u32) {
        let mut c = self.procs[id as usize - 1].take().expect("running");
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for c in self.procs.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
