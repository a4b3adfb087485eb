//! The cluster configuration cpgtool writes and the node it starts.

use std::net::{SocketAddrV4, UdpSocket};
use std::path::Path;

use cpg_std::config::{ConfigFile, TransportKind};
use cpg_std::{GroupName, Node};

use crate::Res;

pub(crate) fn start_node(config: &Path, nodeid: Option<u32>) -> Res<Node> {
    let file = ConfigFile::load(config).map_err(|e| e.to_string())?;
    let c = file.validate(nodeid).map_err(|e| e.to_string())?;
    Node::start(&c).map_err(|e| format!("node {}: {e}", c.node_id))
}

pub(crate) fn group_name(s: &str) -> Res<GroupName> {
    GroupName::new(s.as_bytes()).map_err(|e| format!("group {s:?}: {e}"))
}

pub(crate) fn free_ports(n: u32) -> Res<Vec<SocketAddrV4>> {
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    socks
        .iter()
        .map(|s| match s.local_addr() {
            Ok(std::net::SocketAddr::V4(a)) => Ok(a),
            _ => Err("no IPv4 loopback address".to_string()),
        })
        .collect()
}

pub(crate) fn write_config(
    n: u32,
    out: &Path,
    state_dir: &Path,
    token_ms: u64,
    transport: TransportKind,
) -> Res<()> {
    write_config_with(n, out, state_dir, token_ms, transport, |_| {})
}

pub(crate) fn write_config_with(
    n: u32,
    out: &Path,
    state_dir: &Path,
    token_ms: u64,
    transport: TransportKind,
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
    tweak(&mut f);
    std::fs::write(out, f.to_toml()).map_err(|e| format!("{}: {e}", out.display()))
}
