//! Three nodes in this process on the loopback network, one member each:
//! everyone says hello, everyone hears every hello in the same order, then
//! one member leaves and the others see it. No config files, no sockets.
//!
//! `cargo run -p cpg-std --example hello`

use std::time::Duration;

use cpg_std::loopback::LoopbackNet;
use cpg_std::{ConfigBuilder, Event, GroupName, Guarantee, Member};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let net = LoopbackNet::new();
    let ids = [1, 2, 3];
    let nodes = ids
        .iter()
        .map(|&id| {
            let config = ConfigBuilder::new("hello")
                .local_nodes(&ids, 5405)
                .this_node(id)
                .fast_timers()
                .build()?;
            Ok(net.start(&config)?)
        })
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;

    let group = GroupName::new(b"hello")?;
    let members = nodes
        .iter()
        .map(|node| Member::join(node, &group))
        .collect::<Result<Vec<_>, _>>()?;
    // wait until each member sees all three
    for m in &members {
        while let Some(ev) = m.next_timeout(Duration::from_secs(10))? {
            if matches!(&ev, Event::Membership(c) if c.members.len() == ids.len()) {
                break;
            }
        }
    }

    for m in &members {
        m.send(
            Guarantee::Agreed,
            format!("hello from {}", m.addr().nodeid).as_bytes(),
        )?;
    }
    for m in &members {
        let mut heard = Vec::new();
        while heard.len() < members.len() {
            match m.next_timeout(Duration::from_secs(10))? {
                Some(Event::Message(msg)) => heard.push(String::from_utf8_lossy(&msg).into_owned()),
                Some(_) => {}
                None => return Err("timed out".into()),
            }
        }
        println!("node {} heard {heard:?}", m.addr().nodeid);
    }

    let mut members = members;
    let leaver = members.remove(0);
    let gone = leaver.addr();
    drop(leaver); // Drop leaves the group
    for m in &members {
        loop {
            if let Some(Event::Membership(c)) = m.next_timeout(Duration::from_secs(10))? {
                if c.left.iter().any(|(who, _)| *who == gone) {
                    println!("node {} saw {gone:?} leave: {:?}", m.addr().nodeid, c.left);
                    break;
                }
            }
        }
    }
    Ok(())
}
