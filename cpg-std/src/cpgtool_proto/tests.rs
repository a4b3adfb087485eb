use super::*;

fn line(msg: &impl Serialize) -> String {
    let mut v = Vec::new();
    emit(&mut v, msg);
    String::from_utf8(v).unwrap()
}

#[test]
fn commands_parse_with_the_nodes_defaults() {
    let c: Command = serde_json::from_str(r#"{"cmd":"stream","count":5}"#).unwrap();
    let mut s = Stream::new(5, 64);
    assert_eq!(c, Command::Stream(s.clone()));
    let c: Command = serde_json::from_str(
        r#"{"cmd":"stream","count":5,"size":8,"size_max":9,"zc":true,"rate":3,"guarantee":"safe"}"#,
    )
    .unwrap();
    (s.size, s.size_max, s.zc, s.rate, s.guarantee) = (8, Some(9), true, 3, Guarantee::Safe);
    assert_eq!(c, Command::Stream(s));
    let c: Command = serde_json::from_str(r#"{"cmd":"big"}"#).unwrap();
    assert_eq!(
        c,
        Command::Big {
            size: 1 << 20,
            zc: false,
            guarantee: Guarantee::Agreed
        }
    );
    assert_eq!(
        line(&Command::StopStream),
        "{\"cmd\":\"stop_stream\"}\n".to_string()
    );
    assert!(serde_json::from_str::<Command>(r#"{"cmd":"nope"}"#).is_err());
    assert!(serde_json::from_str::<Command>(r#"{"cmd":"mcast","guarantee":"x"}"#).is_err());
}

#[test]
fn replies_keep_their_shapes() {
    assert_eq!(
        line(&Reply::Join(Ok(()).into())),
        "{\"ok\":true,\"re\":\"join\"}\n"
    );
    assert_eq!(
        line(&Reply::Mcast(Err(CsError::TryAgain).into())),
        format!(
            "{{\"err\":{},\"error\":\"{}\",\"ok\":false,\"re\":\"mcast\"}}\n",
            CsError::TryAgain.code(),
            CsError::TryAgain
        )
    );
    let m = Reply::Members(MembersReply::List {
        members: vec![Addr(1, 7)],
    });
    assert_eq!(line(&m), "{\"members\":[[1,7]],\"re\":\"members\"}\n");
    let s = Reply::Stream {
        sent: 3,
        first: 0,
        err: None,
        error: None,
    };
    assert_eq!(
        line(&s),
        "{\"err\":null,\"first\":0,\"re\":\"stream\",\"sent\":3}\n"
    );
    for r in [m, s, Reply::Leave(Err(CsError::NotExist).into())] {
        let back: Report = serde_json::from_str(&line(&r)).unwrap();
        assert_eq!(back, Report::Reply(r));
    }
}

#[test]
fn a_reply_answers_the_command_named_alike() {
    let join = Command::Join { group: "g".into() };
    let ok = Reply::Join(Ok(()).into());
    assert!(join.is_answered_by(&ok));
    assert!(!join.is_answered_by(&Reply::Leave(Ok(()).into())));
    assert!(!Command::Quit.is_answered_by(&ok));
    assert!(
        Command::Stream(Stream::new(1, 1)).is_answered_by(&Reply::Stream {
            sent: 1,
            first: 0,
            err: None,
            error: None
        })
    );
    assert_eq!(ok.outcome().map(|o| o.ok), Some(true));
    let members = Reply::Members(MembersReply::List { members: vec![] });
    assert!(Command::Members { group: "g".into() }.is_answered_by(&members));
    assert_eq!(members.outcome(), None);
}

#[test]
fn the_reader_turns_lines_into_reports() {
    let (tx, rx) = std::sync::mpsc::channel();
    let text = format!(
        "{}\nnot json\n{}\n",
        serde_json::to_string(&Reply::Join(Ok(()).into())).unwrap(),
        serde_json::to_string(&Event::Ready { nodeid: 1, pid: 2 }).unwrap()
    );
    spawn_reader(7, std::io::Cursor::new(text), tx)
        .join()
        .unwrap();
    let got: Vec<_> = rx.iter().collect();
    assert_eq!(
        got,
        [
            (7, Report::Reply(Reply::Join(Ok(()).into()))),
            (7, Report::Event(Event::Ready { nodeid: 1, pid: 2 }))
        ]
    );
}

#[test]
fn events_round_trip() {
    let c = Event::Confchg(Confchg {
        group: "g".into(),
        members: vec![Addr(1, 2)],
        left: vec![Change(3, 4, Change::NODEDOWN)],
        joined: vec![],
        delivered: 9,
        digest: "00ff".into(),
    });
    assert_eq!(
        line(&c),
        "{\"delivered\":9,\"digest\":\"00ff\",\"ev\":\"confchg\",\"group\":\"g\",\
         \"joined\":[],\"left\":[[3,4,3]],\"members\":[[1,2]]}\n"
    );
    let d = Event::Deliver(Deliver {
        from: Addr(1, 2),
        len: 10,
        origin: None,
        seq: None,
        intact: None,
        digest: "ab".into(),
        delivered: 1,
    });
    for e in [c, d, Event::Ready { nodeid: 1, pid: 2 }] {
        let back: Report = serde_json::from_str(&line(&e)).unwrap();
        assert_eq!(back, Report::Event(e));
    }
}
const LIMITS: Limits = Limits {
    max_message_size: 1 << 20,
};

fn error_of(r: Result<Command, Box<Reply>>) -> String {
    match r.map_err(|b| *b) {
        Err(Reply::Error { error }) => error,
        other => panic!("not an error reply: {other:?}"),
    }
}

#[test]
fn arguments_out_of_bounds_are_refused_with_the_commands_reply() {
    // Security issue "Config and tool edges": this line panicked the
    // node ("capacity overflow") allocating its message.
    let r = parse_line(br#"{"cmd":"big","size":18446744073709551615}"#, &LIMITS).map_err(|b| *b);
    let Err(Reply::Big(o)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(o.err, Some(CsError::TooBig.code()));
    assert!(o
        .error
        .unwrap()
        .contains("18446744073709551615 is above max_message_size 1048576"));
    let cases: [(&[u8], Option<CsError>); 6] = [
        (
            br#"{"cmd":"big","size":1048577,"zc":true}"#,
            Some(CsError::TooBig),
        ),
        (br#"{"cmd":"stream","size":1048577}"#, Some(CsError::TooBig)),
        (
            br#"{"cmd":"stream","size_max":18446744073709551615}"#,
            Some(CsError::TooBig),
        ),
        (
            br#"{"cmd":"stream","size":9,"size_max":8}"#,
            Some(CsError::InvalidParam),
        ),
        (br#"{"cmd":"mcast","data":"x"}"#, None),
        (br#"{"cmd":"join","group":"g"}"#, None),
    ];
    for (line, code) in cases {
        let code = code.map(CsError::code);
        match parse_line(line, &LIMITS).map_err(|b| *b) {
            Ok(_) => assert_eq!(code, None),
            Err(Reply::Stream { err, sent: 0, .. }) => assert_eq!(err, code),
            Err(Reply::Big(o)) => assert_eq!(o.err, code),
            Err(r) => panic!("{r:?}"),
        }
    }
    let long = format!(r#"{{"cmd":"members","group":"{}"}}"#, "n".repeat(129));
    let r = parse_line(long.as_bytes(), &LIMITS).map_err(|b| *b);
    assert!(
        matches!(&r, Err(Reply::Members(MembersReply::Failed(o))) if o.err == Some(CsError::NameTooLong.code())),
        "{r:?}"
    );
    let at_limit = format!(r#"{{"cmd":"big","size":{}}}"#, LIMITS.max_message_size);
    assert!(parse_line(at_limit.as_bytes(), &LIMITS).is_ok());
}

#[test]
fn unreadable_lines_are_errors_quoting_short_excerpts() {
    let e = error_of(parse_line(&[0xff, b'{', b'}'], &LIMITS));
    assert!(e.contains("not UTF-8"), "{e}");
    for line in [
        format!(r#"{{"cmd":"{}"}}"#, "v".repeat(100_000)),
        format!(r#"{{"cmd":"big","size":"{}"}}"#, "v".repeat(100_000)),
        format!(r#"{{"cmd":"big","size":"\"{}"}}"#, "v\\\"".repeat(50_000)),
    ] {
        let e = error_of(parse_line(line.as_bytes(), &LIMITS));
        assert!(e.len() < 500 && !e.contains(&"v".repeat(81)), "{e}");
    }
    for line in ["", "null", "[]", "{}", r#"{"cmd":"big","size":-1}"#, "{{{{"] {
        error_of(parse_line(line.as_bytes(), &LIMITS));
    }
}

#[test]
fn read_line_never_holds_more_than_the_limit() {
    let input = b"short\nabcdefghij\n\nlast".to_vec();
    let mut r = std::io::BufReader::with_capacity(3, &input[..]);
    let mut buf = Vec::new();
    let mut got = Vec::new();
    loop {
        let l = read_line(&mut r, &mut buf, 5).unwrap();
        assert!(buf.len() <= 5);
        if l == Line::End {
            break;
        }
        got.push((l, String::from_utf8(buf.clone()).unwrap()));
    }
    assert_eq!(
        got,
        [
            (Line::Complete, "short".to_string()),
            (Line::TooLong { len: 10 }, "abcde".to_string()),
            (Line::Complete, String::new()),
            (Line::Complete, "last".to_string()),
        ]
    );
}

/// Pieces random command lines are made of: keys, values, numbers at
/// and around every boundary, wrong types.
fn line_strategy() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let cmd = prop_oneof![
        Just("join"),
        Just("leave"),
        Just("mcast"),
        Just("stream"),
        Just("stop_stream"),
        Just("big"),
        Just("members"),
        Just("status"),
        Just("nope"),
    ];
    let key = prop_oneof![
        Just("size"),
        Just("size_max"),
        Just("count"),
        Just("rate"),
        Just("zc"),
        Just("guarantee"),
        Just("group"),
        Just("data"),
        Just("cmd"),
    ];
    let value = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_string()),
        Just("1e300".to_string()),
        Just("-0.5".to_string()),
        (0usize..3).prop_map(|k| (LIMITS.max_message_size + k - 1).to_string()),
        "[a-z\\\\\"]{0,200}".prop_map(|t| format!("\"{t}\"")),
        Just("true".to_string()),
        Just("null".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("\"safe\"".to_string()),
    ];
    (cmd, proptest::collection::vec((key, value), 0..5)).prop_map(|(cmd, fields)| {
        let mut line = format!(r#"{{"cmd":"{cmd}""#);
        for (k, v) in fields {
            line.push_str(&format!(r#","{k}":{v}"#));
        }
        line.push('}');
        line
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    #[test]
    fn any_bytes_are_answered_never_a_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
        if let Err(reply) = parse_line(&bytes, &LIMITS) {
            proptest::prop_assert!(line(&reply).len() < 1000);
        }
    }

    #[test]
    fn command_like_lines_are_checked_or_answered(text in line_strategy()) {
        match parse_line(text.as_bytes(), &LIMITS) {
            // whatever parses is within the limits
            Ok(cmd) => {
                proptest::prop_assert_eq!(cmd.check(&LIMITS), Ok(()));
                if let Command::Big { size, .. } = cmd {
                    proptest::prop_assert!(size <= LIMITS.max_message_size);
                }
                if let Command::Stream(s) = cmd {
                    proptest::prop_assert!(s.size <= s.size_max.unwrap_or(s.size));
                    proptest::prop_assert!(s.size_max.unwrap_or(s.size) <= LIMITS.max_message_size);
                }
            }
            Err(reply) => {
                let l = line(&reply);
                proptest::prop_assert!(l.len() < 1000, "{}", l);
                let back: Report = serde_json::from_str(&l).unwrap();
                proptest::prop_assert_eq!(back, Report::Reply(*reply));
            }
        }
    }
}
