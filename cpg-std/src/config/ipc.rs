//! `[ipc]`: how `cpgd` serves client processes (`docs/spec/ipc.md`): its
//! socket, who may connect, and the shared memory of each connection.
//! The embedded node ignores the section.
//!
//! ```toml
//! [ipc]
//! socket = "/run/cpgd/cpgd.sock"
//! uids = [1000]          # besides root and cpgd's own uid (Corosync's uidgid)
//! gids = [985]
//! request_ring_bytes = 1048576
//! event_ring_bytes = 8388608
//! max_connections = 1024
//! zc_classes = [ { slot_size = 65536, count = 32 }, { slot_size = 1048576, count = 8 } ]
//! cpu = "auto"           # or "any", or a CPU number
//! ```

use std::path::PathBuf;

use cpg_core::ipc::{RING_CAPACITY_MAX, RING_CAPACITY_MIN};
use cpg_core::pool::{ClassSpec, PoolConfig};
use serde::{Deserialize, Serialize};

use super::ranges::Range;
use super::{ClassEntry, ConfigError};

/// Where `cpgd` listens unless configured (and where clients look unless
/// told: an argument, then `CPGD_SOCKET`).
pub const DEFAULT_SOCKET: &str = "/run/cpgd/cpgd.sock";

/// `ipc.request_ring_bytes` and `ipc.event_ring_bytes` (also powers of two).
pub const IPC_RING_BYTES: Range = Range {
    field: "ipc.*_ring_bytes",
    min: RING_CAPACITY_MIN as u64,
    max: RING_CAPACITY_MAX as u64,
    unit: "bytes",
    zero: None,
};
/// `ipc.max_connections`.
pub const IPC_MAX_CONNECTIONS: Range = Range {
    field: "ipc.max_connections",
    min: 1,
    max: 65536,
    unit: "",
    zero: None,
};
/// `ipc.zc_classes[].slot_size` (also a multiple of 4096).
pub const IPC_ZC_SLOT_SIZE: Range = Range {
    field: "ipc.zc_classes.slot_size",
    min: 4096,
    max: 1 << 30,
    unit: "bytes",
    zero: None,
};
/// `ipc.zc_classes[].count`.
pub const IPC_ZC_SLOT_COUNT: Range = Range {
    field: "ipc.zc_classes.count",
    min: 1,
    max: 4096,
    unit: "",
    zero: None,
};

/// The `[ipc]` section as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpcSection {
    /// The daemon's Unix socket.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Users allowed to connect besides root and the daemon's own user.
    #[serde(default)]
    pub uids: Vec<u32>,
    /// Groups whose members (by the peer's primary gid) may connect.
    #[serde(default)]
    pub gids: Vec<u32>,
    /// Data bytes of each connection's request ring.
    #[serde(default = "default_request_ring")]
    pub request_ring_bytes: usize,
    /// Data bytes of each connection's event ring.
    #[serde(default = "default_event_ring")]
    pub event_ring_bytes: usize,
    /// Connections served at once (more are refused with NO_RESOURCES).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Each connection's zero-copy slots (no headroom: headers never live in
    /// client memory), smallest first; the largest bounds `zcb_alloc`.
    #[serde(default = "default_zc_classes")]
    pub zc_classes: Vec<ClassEntry>,
    /// Where the daemon's threads run: `"auto"`, `"any"` or a CPU number
    /// (see [`DaemonCpu`]).
    #[serde(default)]
    pub cpu: CpuSetting,
}

/// `ipc.cpu` as written: a word or a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CpuSetting {
    Number(u32),
    Word(String),
}

impl Default for CpuSetting {
    fn default() -> Self {
        CpuSetting::Word("auto".into())
    }
}

/// Where cpgd's threads run. Its engine thread and its IPC thread hand
/// every message to each other (requests in, deliveries out); on two CPUs
/// each handoff is a wake-up across CPUs and the message's cache lines
/// move with it, on one CPU neither. Corosync runs its one thread on one
/// CPU at a time anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonCpu {
    /// Every thread on one CPU of those the process may use, picked by
    /// node id (so several nodes on one host, as in tests, spread over
    /// them); nothing on a process allowed a single CPU.
    Auto,
    /// Wherever the kernel puts them.
    Any,
    /// Every thread on this CPU (it must be one the process may use).
    Fixed(u32),
}

fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}
fn default_request_ring() -> usize {
    1 << 20
}
fn default_event_ring() -> usize {
    8 << 20
}
fn default_max_connections() -> usize {
    1024
}
fn default_zc_classes() -> Vec<ClassEntry> {
    vec![
        ClassEntry {
            slot_size: 64 * 1024,
            count: 32,
        },
        ClassEntry {
            slot_size: 1024 * 1024,
            count: 8,
        },
    ]
}

impl Default for IpcSection {
    fn default() -> Self {
        IpcSection {
            socket: default_socket(),
            uids: Vec::new(),
            gids: Vec::new(),
            request_ring_bytes: default_request_ring(),
            event_ring_bytes: default_event_ring(),
            max_connections: default_max_connections(),
            zc_classes: default_zc_classes(),
            cpu: CpuSetting::default(),
        }
    }
}

/// The validated `[ipc]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpcConfig {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// Users allowed besides root and the daemon's own.
    pub uids: Vec<u32>,
    /// Groups allowed.
    pub gids: Vec<u32>,
    /// Request ring capacity.
    pub request_ring_bytes: usize,
    /// Event ring capacity.
    pub event_ring_bytes: usize,
    /// Connections at once.
    pub max_connections: usize,
    /// One connection's zero-copy pool (headroom 0).
    pub zc_pool: PoolConfig,
    /// Where the daemon's threads run.
    pub cpu: DaemonCpu,
}

impl IpcSection {
    /// Check every setting.
    ///
    /// # Errors
    /// The first setting out of range, a ring size that is not a power of
    /// two, a slot size that is not a multiple of a page, or classes the
    /// pool refuses.
    pub fn validate(&self) -> Result<IpcConfig, ConfigError> {
        if self.socket.as_os_str().is_empty() {
            return Err(ConfigError::Ipc("ipc.socket is empty".into()));
        }
        for (name, v) in [
            ("ipc.request_ring_bytes", self.request_ring_bytes),
            ("ipc.event_ring_bytes", self.event_ring_bytes),
        ] {
            IPC_RING_BYTES.check_usize(v)?;
            if !v.is_power_of_two() {
                return Err(ConfigError::Ipc(format!(
                    "{name} = {v} is not a power of two"
                )));
            }
        }
        IPC_MAX_CONNECTIONS.check_usize(self.max_connections)?;
        let mut classes = Vec::new();
        for c in &self.zc_classes {
            IPC_ZC_SLOT_SIZE.check_usize(c.slot_size)?;
            IPC_ZC_SLOT_COUNT.check_usize(c.count)?;
            if c.slot_size % 4096 != 0 {
                return Err(ConfigError::Ipc(format!(
                    "ipc.zc_classes.slot_size = {} is not a multiple of 4096",
                    c.slot_size
                )));
            }
            classes.push(ClassSpec::new(c.slot_size, c.count));
        }
        let zc_pool = PoolConfig::new(0, &classes)
            .map_err(|e| ConfigError::Ipc(format!("ipc.zc_classes: {e:?}")))?;
        let len = zc_pool
            .region_len()
            .map_err(|e| ConfigError::Ipc(format!("ipc.zc_classes: {e:?}")))?;
        if len > 1 << 34 {
            return Err(ConfigError::Ipc(format!(
                "ipc.zc_classes: {len} bytes per connection, above 16 GiB"
            )));
        }
        let cpu = match &self.cpu {
            CpuSetting::Number(n) => DaemonCpu::Fixed(*n),
            CpuSetting::Word(w) if w == "auto" => DaemonCpu::Auto,
            CpuSetting::Word(w) if w == "any" => DaemonCpu::Any,
            CpuSetting::Word(w) => {
                return Err(ConfigError::Ipc(format!(
                    "ipc.cpu = {w:?}: \"auto\", \"any\" or a CPU number"
                )))
            }
        };
        Ok(IpcConfig {
            cpu,
            socket: self.socket.clone(),
            uids: self.uids.clone(),
            gids: self.gids.clone(),
            request_ring_bytes: self.request_ring_bytes,
            event_ring_bytes: self.event_ring_bytes,
            max_connections: self.max_connections,
            zc_pool,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        let ok = IpcSection::default().validate().unwrap();
        assert_eq!(ok.socket, PathBuf::from(DEFAULT_SOCKET));
        let mut s = IpcSection {
            request_ring_bytes: 3 << 16,
            ..IpcSection::default()
        };
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("power of two"));
        s.request_ring_bytes = 1 << 12;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("ipc.*_ring_bytes"));
        s.request_ring_bytes = 1 << 20;
        s.zc_classes[0].slot_size = 5000;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("multiple of 4096"));
        s.zc_classes = vec![];
        assert!(s.validate().is_err());
        assert_eq!(ok.cpu, DaemonCpu::Auto);
    }

    #[test]
    fn cpu_is_auto_any_or_a_number() {
        let parse = |text: &str| -> Result<DaemonCpu, String> {
            let s: IpcSection = toml::from_str(text).map_err(|e| e.to_string())?;
            s.validate().map(|c| c.cpu).map_err(|e| e.to_string())
        };
        assert_eq!(parse("cpu = \"auto\""), Ok(DaemonCpu::Auto));
        assert_eq!(parse("cpu = \"any\""), Ok(DaemonCpu::Any));
        assert_eq!(parse("cpu = 3"), Ok(DaemonCpu::Fixed(3)));
        assert!(parse("cpu = \"fast\"").unwrap_err().contains("ipc.cpu"));
        assert!(parse("cpu = -1").is_err());
        assert!(parse("cpu = 1.5").is_err());
    }
}
