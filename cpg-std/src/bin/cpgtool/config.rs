//! The cluster configuration cpgtool writes and the node it starts.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::path::Path;

use clap::ValueEnum;
use cpg_std::config::{ConfigFile, TransportKind};
use cpg_std::crypto::{generate_key, Crypto};
use cpg_std::{GroupName, Node, NodeConfig};

use crate::error::{Error, Res};

/// `--transport`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum Transport {
    /// io_uring (cpg-uring), registered buffers.
    #[default]
    Uring,
    /// Plain UDP syscalls, no io_uring (`transport = "udp"`).
    Udp,
}

impl From<Transport> for TransportKind {
    fn from(t: Transport) -> TransportKind {
        match t {
            Transport::Uring => TransportKind::Uring,
            Transport::Udp => TransportKind::Udp,
        }
    }
}

/// Load `config` and start its node (`nodeid` overrides the file's).
pub(crate) fn start_node(config: &Path, nodeid: Option<u32>) -> Res<Node> {
    start_node_with(config, nodeid).map(|(node, _)| node)
}

/// [`start_node`], with the node's validated settings.
pub(crate) fn start_node_with(config: &Path, nodeid: Option<u32>) -> Res<(Node, NodeConfig)> {
    let c = ConfigFile::load(config)?.validate(nodeid)?;
    let node = Node::start(&c).map_err(|source| Error::Start {
        node: c.node_id,
        source,
    })?;
    Ok((node, c))
}

pub(crate) fn group_name(s: &str) -> Res<GroupName> {
    GroupName::new(s.as_bytes()).map_err(|source| Error::GroupName {
        name: s.into(),
        source,
    })
}

/// `n` free UDP ports on 127.0.0.1 (free when this returns).
fn free_ports(n: u32) -> Res<Vec<SocketAddrV4>> {
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|source| Error::Io {
            what: "bind 127.0.0.1:0",
            source,
        })?;
    socks
        .iter()
        .map(|s| match s.local_addr() {
            Ok(SocketAddr::V4(a)) => Ok(a),
            _ => Err(Error::NoLoopback),
        })
        .collect()
}

/// `--crypto`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum CryptoArg {
    /// No sealing (warned about at start).
    None,
    /// Frames authenticated, in clear.
    Authenticate,
    /// Frames encrypted and authenticated.
    #[default]
    Encrypt,
}

impl From<CryptoArg> for Crypto {
    fn from(c: CryptoArg) -> Crypto {
        match c {
            CryptoArg::None => Crypto::None,
            CryptoArg::Authenticate => Crypto::Authenticate,
            CryptoArg::Encrypt => Crypto::Encrypt,
        }
    }
}

/// What a written config protects frames with: the mode, and the key
/// file (made by `keygen` if it does not exist yet).
#[derive(Debug, Clone)]
pub(crate) struct Protection {
    pub crypto: Crypto,
    pub key_file: std::path::PathBuf,
}

impl Protection {
    /// `crypto` with the key `authkey` beside the config file `out`.
    pub(crate) fn beside(out: &Path, crypto: Crypto) -> Protection {
        let dir = out.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = dir.map_or_else(|| Path::new(".").to_path_buf(), Path::to_path_buf);
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        Protection {
            crypto,
            key_file: dir.join("authkey"),
        }
    }

    fn apply(&self, f: &mut ConfigFile) -> Res<()> {
        f.crypto = self.crypto;
        if self.crypto == Crypto::None {
            return Ok(());
        }
        if !self.key_file.exists() {
            generate_key(&self.key_file)?;
        }
        f.key_file = Some(self.key_file.clone());
        Ok(())
    }
}

/// Write a config for `n` nodes on free 127.0.0.1 ports to `out`.
pub(crate) fn write_config(
    n: u32,
    out: &Path,
    state_dir: &Path,
    token_ms: u64,
    transport: TransportKind,
    protection: &Protection,
) -> Res<()> {
    write_config_with(n, out, state_dir, token_ms, transport, protection, |_| {})
}

/// [`write_config`], with `tweak` applied to the file before writing.
pub(crate) fn write_config_with(
    n: u32,
    out: &Path,
    state_dir: &Path,
    token_ms: u64,
    transport: TransportKind,
    protection: &Protection,
    tweak: impl FnOnce(&mut ConfigFile),
) -> Res<()> {
    let addrs = free_ports(n)?;
    let nodes: Vec<(u32, SocketAddrV4)> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (i as u32 + 1, *a))
        .collect();
    let mut f = ConfigFile::new("cpgtool", &nodes);
    f.state_dir = state_dir.to_path_buf();
    f.totem.token_ms = Some(token_ms);
    f.transport = transport;
    protection.apply(&mut f)?;
    tweak(&mut f);
    std::fs::write(out, f.to_toml()).map_err(|source| Error::File {
        path: out.to_path_buf(),
        source,
    })
}

/// `cpgtool config --from-corosync FILE --out F`: corosync.conf as our
/// TOML; what is not carried over one to one is named on stderr.
pub(crate) fn from_corosync(conf: &Path, out: &Path) -> Res<()> {
    let (f, notes) = cpg_std::config::corosync::load(conf)?;
    for n in &notes {
        eprintln!("cpgtool config: {}: {}", conf.display(), n.0);
    }
    std::fs::write(out, f.to_toml()).map_err(|source| Error::File {
        path: out.to_path_buf(),
        source,
    })?;
    println!(
        "cpgtool config: wrote {} from {} ({} node(s); {} note(s) above)",
        out.display(),
        conf.display(),
        f.nodelist.len(),
        notes.len()
    );
    Ok(())
}
