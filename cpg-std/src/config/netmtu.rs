//! `netmtu = "auto"` (the default) or a number of bytes, and how "auto"
//! becomes a number: the smallest path MTU the kernel knows to any other
//! node of the node list (`IP_MTU` / `IPV6_MTU` of a socket bound to this
//! node's address and connected to the peer, `cpg_uring::path_mtu`).
//!
//! # When it is read
//! Once, when a node starts on a real transport ([`crate::Node::start`],
//! so `cpgd`, `cpgtool node` and `cpgtool bench` too), before the engine
//! and the receive buffers are made. Not again on a ring change: the engine
//! drops any frame over its own `frame_max` (a frame a node of another
//! budget sends would never be taken), so every node of a ring must keep
//! one budget, and one node changing it alone mid-ring would break that.
//! The node list is the ring's possible peer set, so the minimum over it
//! is what any ring of these nodes can carry. On a network whose links all
//! have one MTU (one LAN, loopback) every node reads the same; where links
//! differ, set one explicit `netmtu` on every node.
//!
//! A peer whose path cannot be read (no route yet) counts as
//! [`limits::NETMTU_DEFAULT`]; a node alone in its node list reads the path
//! to its own address (loopback's 65,536, capped at 65,535). The in-process
//! loopback transport has no kernel path: it uses the default 1500.

use std::fmt;
use std::net::SocketAddr;

use cpg_core::limits;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ConfigError, NodeConfig, RX_HEADROOM};

/// `netmtu`: the whole IP packet on the path, as Corosync's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetMtu {
    /// Read from the kernel at start (see the module docs).
    #[default]
    Auto,
    /// This many bytes (576..=65,535), whatever the kernel says.
    Bytes(usize),
}

impl From<usize> for NetMtu {
    fn from(v: usize) -> NetMtu {
        NetMtu::Bytes(v)
    }
}

impl fmt::Display for NetMtu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetMtu::Auto => f.write_str("auto"),
            NetMtu::Bytes(v) => write!(f, "{v}"),
        }
    }
}

impl Serialize for NetMtu {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            NetMtu::Auto => s.serialize_str("auto"),
            NetMtu::Bytes(v) => s.serialize_u64(*v as u64),
        }
    }
}

impl<'de> Deserialize<'de> for NetMtu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NetMtu, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = NetMtu;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"auto\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<NetMtu, E> {
                match v {
                    "auto" => Ok(NetMtu::Auto),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NetMtu, E> {
                // out of range values are refused by validation, naming the range
                Ok(NetMtu::Bytes(usize::try_from(v).unwrap_or(usize::MAX)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NetMtu, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl NodeConfig {
    /// This configuration with `netmtu = "auto"` resolved against the
    /// kernel's path MTUs (see the module docs); unchanged for an explicit
    /// `netmtu`. The receive buffers follow the new frame budget unless
    /// `pool.rx_buffer_size` was set, which then caps it; so does the send
    /// queue unless `totem.send_queue_frames` was set.
    ///
    /// # Errors
    /// A path MTU below 576 ([`ConfigError::PathMtuTooSmall`]), or a node
    /// list whose control frames do not fit the budget read
    /// ([`ConfigError::Engine`]).
    pub fn with_path_mtu(&self) -> Result<NodeConfig, ConfigError> {
        let mut c = self.clone();
        if self.netmtu != NetMtu::Auto {
            return Ok(c);
        }
        let (node, mtu) = self.path_mtu_min();
        if mtu < limits::NETMTU_MIN {
            return Err(ConfigError::PathMtuTooSmall { node, mtu });
        }
        let mut mtu = mtu.min(limits::NETMTU_MAX);
        if self.rx_buffer_size_fixed {
            let fits = (self.rx_buffer_size - RX_HEADROOM) + self.engine.frame_overhead;
            mtu = mtu.min(fits);
        }
        c.engine.netmtu = mtu;
        if !self.send_queue_frames_fixed {
            c.engine.send_queue_frames = limits::send_queue_frames_for(mtu);
        }
        cpg_core::engine::validate_config(&c.engine).map_err(ConfigError::Engine)?;
        if !self.rx_buffer_size_fixed {
            c.rx_buffer_size = super::rx_buffer_size_for(c.engine.frame_max(), c.gro, c.transport);
        }
        Ok(c)
    }

    /// The smallest path MTU to a peer of the node list, over every link
    /// (a frame must fit whichever link carries it; to this node's own
    /// address when it is alone), and the node it was read for.
    fn path_mtu_min(&self) -> (cpg_core::NodeId, usize) {
        let mut links: Vec<&[(cpg_core::NodeId, SocketAddr)]> = vec![&self.nodes];
        links.extend(self.links.extra.iter().map(|l| l.addrs.as_slice()));
        let mut least: Option<(cpg_core::NodeId, usize)> = None;
        for addrs in links {
            let Some(me) = addrs
                .iter()
                .find(|(n, _)| *n == self.node_id)
                .map(|&(_, a)| a)
            else {
                continue;
            };
            let read = |addr| cpg_uring::path_mtu(me.ip(), addr).unwrap_or(limits::NETMTU_DEFAULT);
            let m = addrs
                .iter()
                .filter(|(n, _)| *n != self.node_id)
                .map(|&(n, a)| (n, read(a)))
                .min_by_key(|&(_, m)| m)
                .unwrap_or_else(|| (self.node_id, read(me)));
            if least.is_none_or(|(_, l)| m.1 < l) {
                least = Some(m);
            }
        }
        least.unwrap_or((self.node_id, limits::NETMTU_DEFAULT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigFile;
    use std::net::{Ipv4Addr, SocketAddrV4};

    fn lo(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
    }

    fn file(netmtu: &str) -> ConfigFile {
        let text = format!(
            "cluster_name = \"c\"\n{netmtu}\n[[nodelist]]\nnodeid = 1\naddr = \"127.0.0.1:5405\"\n\
             [[nodelist]]\nnodeid = 2\naddr = \"127.0.0.1:5406\"\n"
        );
        ConfigFile::parse(&text, "t.toml").unwrap()
    }

    #[test]
    fn parse_auto_number_and_default() {
        assert_eq!(file("").netmtu, NetMtu::Auto);
        assert_eq!(file("netmtu = \"auto\"").netmtu, NetMtu::Auto);
        assert_eq!(file("netmtu = 9000").netmtu, NetMtu::Bytes(9000));
        let bad = "cluster_name = \"c\"\nnetmtu = \"big\"\n[[nodelist]]\nnodeid = 1\naddr = \"127.0.0.1:5405\"\n";
        let e = ConfigFile::parse(bad, "t.toml").unwrap_err().to_string();
        assert!(e.contains("\"auto\" or a number"), "{e}");
        // written back as it was read
        let mut f = ConfigFile::new("c", &[(1, lo(5405))]);
        assert!(f.to_toml().contains("netmtu = \"auto\""), "{}", f.to_toml());
        f.netmtu = NetMtu::Bytes(9000);
        assert!(f.to_toml().contains("netmtu = 9000"), "{}", f.to_toml());
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn auto_on_loopback_is_the_largest_frame() {
        let lo_mtu = cpg_uring::path_mtu(lo(0).ip().to_owned().into(), lo(9).into()).unwrap();
        let c = file("").validate(Some(1)).unwrap();
        // before it is resolved: the default's budget (the in-process transport's)
        assert_eq!(c.engine.netmtu, limits::NETMTU_DEFAULT);
        let r = c.with_path_mtu().unwrap();
        assert_eq!(r.engine.netmtu, lo_mtu.min(limits::NETMTU_MAX));
        if lo_mtu >= limits::NETMTU_MAX {
            assert_eq!(r.engine.frame_max(), limits::FRAME_MAX);
        }
        assert!(r.rx_buffer_size >= r.engine.frame_max() + RX_HEADROOM);
        // alone: the path to itself
        let mut alone = ConfigFile::new("c", &[(1, lo(5405))]);
        alone.state_dir = std::env::temp_dir();
        let a = alone.validate(Some(1)).unwrap().with_path_mtu().unwrap();
        assert_eq!(a.engine.netmtu, r.engine.netmtu);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn explicit_wins_and_fixed_rx_buffers_cap_auto() {
        let c = file("netmtu = 1500").validate(Some(1)).unwrap();
        let r = c.with_path_mtu().unwrap();
        assert_eq!(r.engine.netmtu, 1500);
        assert_eq!(r.rx_buffer_size, c.rx_buffer_size);
        let mut f = file("");
        f.pool.rx_buffer_size = Some(9024);
        let r = f.validate(Some(1)).unwrap().with_path_mtu().unwrap();
        assert!(
            r.engine.frame_max() + RX_HEADROOM <= 9024,
            "{}",
            r.engine.netmtu
        );
        assert_eq!(r.rx_buffer_size, 9024);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn gro_sizes_the_receive_buffers_for_a_coalesced_receive_unless_set() {
        let gro = cpg_uring::GRO_RX_BUFFER_SIZE;
        let r = |toml: &str| {
            file(toml)
                .validate(Some(1))
                .unwrap()
                .with_path_mtu()
                .unwrap()
        };
        let on = r("netmtu = 1500");
        assert!(on.gro);
        assert_eq!(on.rx_buffer_size, gro);
        let off = r("netmtu = 1500\ngro = false");
        assert_eq!(
            off.rx_buffer_size,
            (off.engine.frame_max() + RX_HEADROOM).next_multiple_of(64)
        );
        assert!(off.rx_buffer_size < 2048);
        // the syscall transport has no GRO: frame-sized buffers
        let udp = r("netmtu = 1500\ntransport = \"udp\"");
        assert_eq!(udp.rx_buffer_size, off.rx_buffer_size);
        // auto on loopback (65,535): still room for the GRO cmsg
        assert!(r("").rx_buffer_size >= gro);
        // set by hand: kept, GRO then off in the driver if it is smaller
        let mut f = file("netmtu = 1500");
        f.pool.rx_buffer_size = Some(2048);
        assert_eq!(
            f.validate(Some(1))
                .unwrap()
                .with_path_mtu()
                .unwrap()
                .rx_buffer_size,
            2048
        );
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn the_send_queue_follows_the_netmtu_unless_set() {
        let q = |toml: &str| file(toml).validate(Some(1)).unwrap();
        assert_eq!(q("netmtu = 1500").engine.send_queue_frames, 2796);
        assert_eq!(q("netmtu = 9000").engine.send_queue_frames, 466);
        let r = q("").with_path_mtu().unwrap();
        assert_eq!(
            r.engine.send_queue_frames,
            limits::send_queue_frames_for(r.engine.netmtu)
        );
        let mut f = file("netmtu = 9000");
        f.totem.send_queue_frames = Some(100);
        assert_eq!(f.validate(Some(1)).unwrap().engine.send_queue_frames, 100);
        let mut f = file("");
        f.totem.send_queue_frames = Some(100);
        let r = f.validate(Some(1)).unwrap().with_path_mtu().unwrap();
        assert_eq!(r.engine.send_queue_frames, 100, "set: never derived");
    }

    /// A veth pair into a network namespace of its own (root and `ip`
    /// only; removed on drop, the namespace's end with it).
    struct Veth {
        ns: String,
        dev: String,
    }

    impl Veth {
        fn ip(args: &[&str]) -> bool {
            std::process::Command::new("ip")
                .args(args)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        }

        /// `10.213.<n>.1` here, `10.213.<n>.2` in the namespace.
        fn new(n: u8) -> Option<Veth> {
            if !rustix::process::geteuid().is_root() {
                return None;
            }
            let pid = std::process::id();
            let v = Veth {
                ns: format!("cpgmtu{pid}"),
                dev: format!("cpgm{}", pid % 100_000),
            };
            let peer = format!("{}p", v.dev);
            let (me, other) = (format!("10.213.{n}.1/24"), format!("10.213.{n}.2/24"));
            let ok = Veth::ip(&["netns", "add", &v.ns])
                && Veth::ip(&["link", "add", &v.dev, "type", "veth", "peer", "name", &peer])
                && Veth::ip(&["link", "set", &peer, "netns", &v.ns])
                && Veth::ip(&["addr", "add", &me, "dev", &v.dev])
                && Veth::ip(&["link", "set", &v.dev, "up"])
                && Veth::ip(&["-n", &v.ns, "addr", "add", &other, "dev", &peer])
                && Veth::ip(&["-n", &v.ns, "link", "set", &peer, "up"]);
            ok.then_some(v)
        }

        fn set_mtu(&self, mtu: usize) {
            assert!(Veth::ip(&[
                "link",
                "set",
                &self.dev,
                "mtu",
                &mtu.to_string()
            ]));
        }
    }

    impl Drop for Veth {
        fn drop(&mut self) {
            Veth::ip(&["link", "del", &self.dev]);
            Veth::ip(&["netns", "del", &self.ns]);
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn auto_reads_a_veth_links_mtu() {
        let Some(veth) = Veth::new(77) else {
            eprintln!("skipped: needs root and `ip` (a veth pair into a namespace)");
            return;
        };
        let text = "cluster_name = \"c\"\nstate_dir = \"/tmp\"\n\
            [[nodelist]]\nnodeid = 1\naddr = \"10.213.77.1:5405\"\n\
            [[nodelist]]\nnodeid = 2\naddr = \"10.213.77.2:5405\"\n";
        let c = ConfigFile::parse(text, "t.toml")
            .unwrap()
            .validate(Some(1))
            .unwrap();
        for mtu in [1500, 9000, 1500] {
            veth.set_mtu(mtu);
            let r = c.with_path_mtu().unwrap();
            assert_eq!(r.engine.netmtu, mtu);
            assert_eq!(r.engine.frame_max(), mtu - limits::IPV4_UDP_OVERHEAD);
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn unreachable_peer_counts_as_the_default() {
        // 192.0.2.0/24 (TEST-NET-1) is routed on few hosts: either no route
        // (the default counts) or a real route's MTU.
        let mut c = file("").validate(Some(1)).unwrap();
        c.nodes[1].1 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 5406).into();
        let r = c.with_path_mtu().unwrap();
        let read = cpg_uring::path_mtu(Ipv4Addr::LOCALHOST.into(), c.nodes[1].1);
        assert_eq!(
            r.engine.netmtu,
            read.unwrap_or(limits::NETMTU_DEFAULT)
                .min(limits::NETMTU_MAX)
        );
    }
}
