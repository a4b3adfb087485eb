use super::*;

const GOOD: &str = r#"
cluster_name = "t"
state_dir = "/tmp/x"
[[nodelist]]
nodeid = 1
addr = "127.0.0.1:5405"
[[nodelist]]
nodeid = 2
addr = "127.0.0.1:5406"
[totem]
token_ms = 1000
"#;

fn err(text: &str, id: Option<u32>) -> String {
    let f = match ConfigFile::parse(text, "t.toml") {
        Ok(f) => f,
        Err(e) => return e.to_string(),
    };
    f.validate(id)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

#[test]
fn good_file_validates() {
    let f = ConfigFile::parse(GOOD, "t.toml").unwrap();
    let c = f.validate(Some(2)).unwrap();
    assert_eq!(c.node_id, 2);
    assert_eq!(c.engine.nodes.as_slice(), &[1, 2]);
    assert_eq!(c.engine.token.as_millis(), 1000);
    assert_eq!(c.engine.cluster_id, cluster_id_of("t"));
    assert_eq!(c.addr().port(), 5406);
    assert!(c.zcb_max >= ZCB_MAX_MIN);
    // round trip through the writer
    let again = ConfigFile::parse(&f.to_toml(), "again").unwrap();
    assert_eq!(again, f);
}

/// The io_uring error's hint names a line this parser takes.
#[test]
fn the_udp_setting_the_hint_names_parses() {
    let text = format!("{TRANSPORT_UDP_SETTING}\n{GOOD}");
    let f = ConfigFile::parse(&text, "t.toml").unwrap();
    assert_eq!(f.transport, TransportKind::Udp);
    assert_eq!(f.validate(Some(1)).unwrap().transport, TransportKind::Udp);
}

#[test]
fn errors_name_the_setting() {
    assert!(err(GOOD, None).contains("nodeid is not set"));
    assert!(err(GOOD, Some(3)).contains("nodeid 3 is not in the nodelist"));
    let dup = GOOD.replace("nodeid = 2", "nodeid = 1");
    assert!(err(&dup, Some(1)).contains("nodeid 1 appears twice"));
    let same = GOOD.replace("5406", "5405");
    assert!(err(&same, Some(1)).contains("both use 127.0.0.1:5405"));
    let bad_addr = GOOD.replace("127.0.0.1:5406", "localhost:x");
    let e = err(&bad_addr, Some(1));
    assert!(e.contains("t.toml") && e.contains("line"), "{e}");
    let unknown = format!("{GOOD}\nbogus = 1\n");
    assert!(err(&unknown, Some(1)).contains("bogus"));
    let short = GOOD.replace("token_ms = 1000", "token_ms = 5");
    assert!(err(&short, Some(1)).contains("totem.token_ms = 5 is outside"));
    let mtu = format!("netmtu = 100\n{GOOD}");
    assert!(err(&mtu, Some(1)).contains("netmtu = 100"));
    let q = format!("handle_queue_bytes = 10\n{GOOD}");
    assert!(err(&q, Some(1)).contains("handle_queue_bytes = 10"));
    let pool = format!("{GOOD}\n[pool]\nclasses = [{{ slot_size = 4096, count = 4 }}]\n");
    assert!(err(&pool, Some(1)).contains("largest slot class"));
    let rx = format!("{GOOD}\n[pool]\nrx_buffers = 1000\n");
    assert!(err(&rx, Some(1)).contains("rx_buffers = 1000"));
    let zero = GOOD.replace("nodeid = 2", "nodeid = 0");
    assert!(err(&zero, Some(1)).contains("nodeid 0"));
    let port = GOOD.replace("5406", "0");
    assert!(err(&port, Some(1)).contains("port 0"));
    assert!(err("cluster_name = \"x\"\nnodelist = []\n", Some(1)).contains("nodelist is empty"));
}

#[test]
fn huge_timer_is_a_typed_error() {
    // Found by the `config` fuzz target (cpg-std/fuzz): the largest TOML
    // integer as a timer overflowed the ms → ns conversion (a panic with
    // overflow checks, a wrapped timer without). Now refused by range,
    // in milliseconds, before the conversion.
    for key in [
        "token_ms",
        "token_coefficient_ms",
        "join_ms",
        "consensus_ms",
        "merge_ms",
        "hold_ms",
    ] {
        let text = GOOD.replace("token_ms = 1000", &format!("{key} = 9223372036854775807"));
        let e = err(&text, Some(1));
        let want = format!("totem.{key} = 9223372036854775807 is outside");
        assert!(
            e.contains(&want) && e.contains("..=3600000 ms"),
            "{key}: {e}"
        );
    }
}
/// `GOOD` with `key = value` set: `totem.K` and `pool.K` in their
/// tables, other keys at the top level.
fn with_setting(key: &str, value: &str) -> String {
    if let Some(k) = key.strip_prefix("totem.") {
        let text = GOOD.replace(
            "token_ms = 1000",
            &format!("token_ms = 1000\n{k} = {value}"),
        );
        text.replace("token_ms = 1000\ntoken_ms", "token_ms")
    } else if let Some(k) = key.strip_prefix("pool.") {
        format!("{GOOD}\n[pool]\n{k} = {value}\n")
    } else {
        format!("{key} = {value}\n{GOOD}")
    }
}

#[test]
fn timers_near_u64_max_are_refused_with_field_value_and_range() {
    // Security issue "Config and tool edges": 18446744074360 ms is
    // 2^64 ns + 650.4 ms; converted with a wrapping ms -> ns it was a
    // 650 ms token. join_ms = u64::MAX was refused as "consensus must be
    // >= join". Every timer is now range-checked in milliseconds, before
    // any arithmetic, and the error names the field, the value and the range.
    for (key, value) in [
        ("totem.token_ms", "18446744074360"),
        ("totem.token_ms", "18446744073709551615"),
        ("totem.join_ms", "18446744073709551615"),
        ("totem.consensus_ms", "18446744073709551615"),
        ("totem.merge_ms", "3600001"),
        ("totem.hold_ms", "18446744073709551615"),
        ("totem.token_coefficient_ms", "18446744073709551615"),
    ] {
        let e = err(&with_setting(key, value), Some(1));
        assert!(
            e.contains(&format!("{key} = {value}")) && e.contains("..=3600000 ms"),
            "{key} = {value}: {e}"
        );
        assert!(!e.contains("consensus must be"), "{key}: {e}");
    }
}

#[test]
fn every_numeric_setting_has_a_range() {
    // (setting, a value outside its range, the range as the error quotes it)
    for (key, bad, range) in [
        ("netmtu", "100", "576..=65535"),
        ("netmtu", "18446744073709551615", "576..=65535"),
        ("max_message_size", "0", "1..=1073741824"),
        ("max_message_size", "1073741825", "1..=1073741824"),
        ("handle_queue_bytes", "10", "65538..=68719476736"),
        (
            "handle_queue_bytes",
            "18446744073709551615",
            "65538..=68719476736",
        ),
        ("zc_copy_threshold", "1048577", "0..=1048576"),
        ("totem.token_ms", "5", "30..=3600000"),
        ("totem.token_coefficient_ms", "3600001", "0..=3600000"),
        ("totem.join_ms", "0", "30..=3600000"),
        ("totem.consensus_ms", "10", "30..=3600000"),
        ("totem.merge_ms", "29", "30..=3600000"),
        ("totem.hold_ms", "13", "14..=3600000"),
        ("totem.token_retransmits_before_loss_const", "0", "1..=100"),
        (
            "totem.token_retransmits_before_loss_const",
            "4294967295",
            "1..=100",
        ),
        ("totem.fail_recv_const", "0", "1..=1000000"),
        ("totem.seqno_unchanged_const", "4294967295", "1..=1000000"),
        ("totem.max_messages", "0", "1..=4096"),
        ("totem.window_size", "4097", "1..=4096"),
        ("totem.miss_count_const", "1001", "1..=1000"),
        ("totem.send_queue_frames", "0", "1..=1048576"),
        (
            "totem.send_queue_frames",
            "18446744073709551615",
            "1..=1048576",
        ),
        ("pool.headroom", "100", "256..=65536"),
        ("pool.rx_buffers", "1000", "2..=32768"),
        ("pool.rx_buffer_size", "18446744073709551615", "..=1048576"),
    ] {
        let e = err(&with_setting(key, bad), Some(1));
        assert!(
            e.contains(&format!("{key} = {bad}")) && e.contains(range),
            "want `{key} = {bad}` and `{range}` in: {e}"
        );
    }
}

#[test]
fn range_bounds_are_accepted() {
    // each range's ends validate (with the settings a relation needs)
    for (key, value, with) in [
        ("netmtu", "576", ""),
        ("netmtu", "65535", ""),
        ("max_message_size", "1", ""),
        ("max_message_size", "1073741824", ""),
        ("handle_queue_bytes", "65538", "max_message_size = 1"),
        ("handle_queue_bytes", "68719476736", ""),
        ("zc_copy_threshold", "0", ""),
        ("zc_copy_threshold", "1048576", ""),
        ("totem.token_ms", "3600000", ""),
        ("totem.token_coefficient_ms", "0", ""),
        ("totem.token_coefficient_ms", "3600000", ""),
        ("totem.join_ms", "30", ""),
        ("totem.join_ms", "3600000", "consensus_ms = 3600000"),
        ("totem.consensus_ms", "0", ""),
        ("totem.consensus_ms", "3600000", ""),
        ("totem.merge_ms", "30", ""),
        ("totem.merge_ms", "3600000", ""),
        ("totem.hold_ms", "0", ""),
        ("totem.hold_ms", "14", ""),
        ("totem.hold_ms", "3600000", ""),
        ("totem.token_retransmits_before_loss_const", "1", ""),
        (
            "totem.token_retransmits_before_loss_const",
            "100",
            "token_ms = 3600000",
        ),
        ("totem.fail_recv_const", "1", ""),
        ("totem.seqno_unchanged_const", "1000000", ""),
        ("totem.max_messages", "1", ""),
        ("totem.max_messages", "4096", "window_size = 4096"),
        ("totem.window_size", "4096", ""),
        ("totem.miss_count_const", "1000", ""),
        ("totem.send_queue_frames", "1", ""),
        ("totem.send_queue_frames", "1048576", ""),
        ("pool.headroom", "256", ""),
        ("pool.rx_buffers", "2", ""),
        ("pool.rx_buffers", "32768", ""),
        ("pool.rx_buffer_size", "1048576", ""),
    ] {
        let mut text = with_setting(key, value);
        if with.starts_with("max_message_size") {
            text = format!("{with}\n{text}");
        } else if with.starts_with("token_ms") {
            text = text.replace("token_ms = 1000", with);
        } else if !with.is_empty() {
            text = text.replace("[totem]\n", &format!("[totem]\n{with}\n"));
        }
        let f = ConfigFile::parse(&text, "t.toml").unwrap();
        if let Err(e) = f.validate(Some(1)) {
            panic!("{key} = {value} ({with}): {e}");
        }
    }
}

#[test]
fn readme_lists_every_range() {
    let readme = include_str!("../../../README.md");
    for r in ranges::ALL {
        let row = format!("| `{}` | `{r}` |", r.field);
        assert!(readme.contains(&row), "README lacks the row {row}");
    }
}

#[test]
fn oversized_config_is_refused_before_parsing() {
    // A 100 MB file used to be read, parsed, and quoted whole in the
    // error (a 100 MB message). It is refused by size, unread.
    let dir = std::env::temp_dir().join(format!("cpg-std-config-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.toml");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(100_000_000).unwrap(); // sparse: 100 MB of NULs
    drop(f);
    let e = ConfigFile::load(&path).unwrap_err().to_string();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(e.len() < 300, "{} bytes of error", e.len());
    assert!(e.contains("100000000") && e.contains("1048576"), "{e}");
    // the same limit for text handed to `parse`
    let text = format!("{GOOD}\n#{}\n", "x".repeat(1 << 20));
    let e = err(&text, Some(1));
    assert!(e.len() < 300 && e.contains("1048576"), "{e}");
}

#[test]
fn parse_errors_quote_a_short_excerpt() {
    let long = "y".repeat(500_000);
    for text in [
        format!("{long} = 1\n{GOOD}"),
        format!("cluster_id = \"{long}\"\n{GOOD}"),
        format!("{GOOD}\nbogus{long} = 1\n"),
        format!("{GOOD}\n\"{long}"),
    ] {
        let e = err(&text, Some(1));
        assert!(e.len() < 600, "{} bytes of error: {e}", e.len());
        assert!(e.contains("t.toml") && e.contains("line"), "{e}");
        assert!(!e.contains(&"y".repeat(81)), "{e}");
    }
}

#[test]
fn empty_state_dir_is_refused() {
    // It used to run and write `ringseq-N` into the working directory.
    let text = GOOD.replace("state_dir = \"/tmp/x\"", "state_dir = \"\"");
    let e = err(&text, Some(1));
    assert!(e.contains("state_dir"), "{e}");
}

#[test]
fn the_default_queue_cap_holds_two_maximum_size_messages() {
    // Security issue "Isolation", item 9: both defaulted to 64 MiB, so one
    // small undispatched event and one maximum-size message evicted a
    // handle. The cap is now derived from max_message_size unless set.
    let c = ConfigFile::parse(GOOD, "t.toml")
        .unwrap()
        .validate(Some(1))
        .unwrap();
    let max = c.engine.max_message_size;
    assert_eq!(max, limits::MAX_MESSAGE_SIZE_DEFAULT);
    assert_eq!(c.handle_queue_bytes, 2 * max + 64 * 1024);
    assert_eq!(c.handle_queue_bytes, HANDLE_QUEUE_BYTES_DEFAULT);
    assert_eq!(c.slow_consumer, SlowConsumer::Evict);
    c.check_queue().unwrap();
    // what ConfigFile::new writes derives it too
    let f = ConfigFile::new(
        "t",
        &[(1, "127.0.0.1:5405".parse::<std::net::SocketAddr>().unwrap())],
    );
    assert_eq!(
        f.validate(Some(1)).unwrap().handle_queue_bytes,
        HANDLE_QUEUE_BYTES_DEFAULT
    );
    // derived from a configured max_message_size
    let text = format!("max_message_size = 1048576\n{GOOD}");
    let c = ConfigFile::parse(&text, "t.toml")
        .unwrap()
        .validate(Some(1))
        .unwrap();
    assert_eq!(c.handle_queue_bytes, 2 * 1048576 + 65536);
    // and given explicitly, at least that much
    let text = format!("max_message_size = 1048576\nhandle_queue_bytes = 2162688\n{GOOD}");
    let c = ConfigFile::parse(&text, "t.toml")
        .unwrap()
        .validate(Some(1))
        .unwrap();
    assert_eq!(c.handle_queue_bytes, 2162688);
}

#[test]
fn a_queue_cap_below_two_maximum_size_messages_is_refused_naming_both() {
    for (max, cap) in [
        ("1048576", "2162687"),
        // the old defaults: 64 MiB each
        ("67108864", "67108864"),
    ] {
        let text = format!("max_message_size = {max}\nhandle_queue_bytes = {cap}\n{GOOD}");
        let f = ConfigFile::parse(&text, "t.toml").unwrap();
        let e = f.validate(Some(1)).unwrap_err();
        assert!(matches!(e, ConfigError::QueueTooSmall { .. }), "{e:?}");
        let e = e.to_string();
        for want in [
            format!("handle_queue_bytes = {cap}"),
            format!("max_message_size = {max}"),
            "2 × max_message_size + 65536".to_string(),
            "handle_queue_bytes = 0".to_string(),
        ] {
            assert!(e.contains(&want), "want `{want}` in: {e}");
        }
    }
    // a NodeConfig changed after validation is checked again
    let mut c = NodeConfig::in_memory(1, &[1]);
    c.handle_queue_bytes = c.engine.max_message_size;
    assert!(matches!(
        c.check_queue(),
        Err(ConfigError::QueueTooSmall { .. })
    ));
}

#[test]
fn slow_consumer_policy_parses_and_defaults_to_evict() {
    for (v, want) in [
        ("evict", SlowConsumer::Evict),
        ("throttle", SlowConsumer::Throttle),
    ] {
        let text = format!("slow_consumer = \"{v}\"\n{GOOD}");
        let f = ConfigFile::parse(&text, "t.toml").unwrap();
        assert_eq!(f.slow_consumer, want);
        assert_eq!(f.validate(Some(1)).unwrap().slow_consumer, want);
        let again = ConfigFile::parse(&f.to_toml(), "again").unwrap();
        assert_eq!(again, f);
    }
    let e = err(&format!("slow_consumer = \"wait\"\n{GOOD}"), Some(1));
    assert!(
        e.contains("wait") && e.contains("evict") && e.contains("throttle"),
        "{e}"
    );
}

#[test]
fn the_throttle_is_bounded_by_the_token() {
    // two nodes, token 1000 ms: a quarter of the token over two nodes is
    // 125 ms, above the 100 ms ceiling
    let c = ConfigFile::parse(GOOD, "t.toml")
        .unwrap()
        .validate(Some(1))
        .unwrap();
    assert_eq!(c.throttle_budget(), std::time::Duration::from_millis(100));
    assert_eq!(
        c.throttle_stall_limit(),
        std::time::Duration::from_millis(1000)
    );
    // token 200 ms: 200 / (4 × 2) = 25 ms per rotation
    let text = GOOD.replace("token_ms = 1000", "token_ms = 200");
    let c = ConfigFile::parse(&text, "t.toml")
        .unwrap()
        .validate(Some(1))
        .unwrap();
    assert_eq!(c.throttle_budget(), std::time::Duration::from_millis(25));
    assert_eq!(
        c.throttle_stall_limit(),
        std::time::Duration::from_millis(200)
    );
}

#[test]
fn ipv6_nodes_and_their_frame_budget() {
    let v6 = GOOD
        .replace("127.0.0.1:5405", "[fd00::1]:5405")
        .replace("127.0.0.1:5406", "[fd00::2]:5405");
    let f = ConfigFile::parse(&v6, "t.toml").unwrap();
    let c = f.validate(Some(2)).unwrap();
    assert_eq!(c.addr(), "[fd00::2]:5405".parse().unwrap());
    assert_eq!(c.engine.frame_overhead, limits::IPV6_UDP_OVERHEAD);
    assert_eq!(c.engine.frame_max(), 1500 - 48);
    let v4 = ConfigFile::parse(GOOD, "t.toml").unwrap();
    let c4 = v4.validate(Some(2)).unwrap();
    assert_eq!(c4.engine.frame_max(), 1500 - 28);
    // the seal's trailer comes on top of the IPv6 headers
    let sealed = format!("crypto = \"encrypt\"\nkey_file = \"/k\"\n{v6}");
    let c = ConfigFile::parse(&sealed, "t.toml")
        .unwrap()
        .validate(Some(1))
        .unwrap();
    assert_eq!(
        c.engine.frame_overhead,
        limits::IPV6_UDP_OVERHEAD + cpg_core::seal::SEAL_OVERHEAD
    );
    // round trip keeps the brackets
    let again = ConfigFile::parse(&f.to_toml(), "again").unwrap();
    assert_eq!(again, f);
    // one family per link
    let mixed = GOOD.replace("127.0.0.1:5406", "[fd00::2]:5405");
    let e = ConfigFile::parse(&mixed, "t.toml")
        .unwrap()
        .validate(Some(1))
        .unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::LinkFamilyMismatch {
                link: 0,
                a: 1,
                b: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("one family per link"), "{e}");
}
