//! Machines meeting through Redis (the `cluster` feature): each master claims its
//! machine's name in a `redis-server` the test starts, keeps it while it runs,
//! and gives it back when it stops. Real processes, a real Redis.

#![cfg(feature = "cluster")]

mod common;

use std::time::Duration;

use common::machines::{connected, deaf_machine, mesh_machine};
use common::redis::{free_port, Redis};
use common::{get, poll, Program};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(20);

fn machine(redis: &Redis, name: &str) -> Program {
    Program::start(
        "probe",
        &[
            ("MULTINODE_NODES", "2"),
            ("MULTINODE_CLUSTER", &redis.url()),
            ("MULTINODE_MACHINE", name),
        ],
    )
}

/// Who holds machine `name` of program (namespace) `program`.
fn holder_in(redis: &Redis, program: &str, name: &str) -> String {
    redis
        .command(&["GET", &format!("multinode:{program}:machine:{name}")])
        .unwrap()
}

fn holder(redis: &Redis, name: &str) -> String {
    holder_in(redis, "probe", name)
}

#[test]
fn two_masters_cannot_claim_one_machine_name() {
    let Some(redis) = Redis::start() else { return };
    let first = machine(&redis, "m1");
    let addr = first.ready();
    assert!(holder(&redis, "m1").starts_with(&first.pid().to_string()));
    let mut second = machine(&redis, "m1");
    let status = second.wait_exit(WAIT);
    assert_eq!(status.code(), Some(2), "{:?}", second.log());
    second.wait_for("machine name \"m1\" is held by another master", 1, WAIT);
    second.assert_no_process_left();
    assert_eq!(get(addr, "/").unwrap().0, 200, "the first serves on");
}

#[test]
fn a_stopped_master_gives_its_name_back_and_a_killed_one_loses_it_within_the_ttl() {
    let Some(redis) = Redis::start() else { return };
    let mut stopped = machine(&redis, "m2");
    stopped.ready();
    stopped.signal(Signal::SIGTERM);
    stopped.wait_exit(WAIT);
    assert_eq!(holder(&redis, "m2"), "$-1", "given back at stop");

    let killed = machine(&redis, "m3");
    killed.ready();
    killpg(Pid::from_raw(killed.pid() as i32), Signal::SIGKILL).unwrap();
    let freed = poll(Duration::from_secs(8), || {
        (holder(&redis, "m3") == "$-1").then_some(())
    });
    assert!(freed.is_some(), "a dead master's name expires (TTL 5 s)");
    let again = machine(&redis, "m3");
    again.ready();
}

#[test]
fn a_master_starts_without_redis_and_joins_once_it_answers() {
    let port = free_port();
    let url = format!("redis://:s3cret-pass@127.0.0.1:{port}");
    let program = Program::start(
        "probe",
        &[
            ("MULTINODE_NODES", "2"),
            ("MULTINODE_CLUSTER", &url),
            ("MULTINODE_MACHINE", "late"),
        ],
    );
    let addr = program.ready();
    assert_eq!(get(addr, "/").unwrap().0, 200);
    program.wait_for("starting alone", 1, WAIT);
    let Some(redis) = Redis::start_on(port, Some("s3cret-pass")) else {
        return;
    };
    let joined = poll(WAIT, || {
        holder(&redis, "late")
            .starts_with(&program.pid().to_string())
            .then_some(())
    });
    assert!(joined.is_some(), "{:?}", program.log());
    program.wait_for("the cluster's Redis answers: joined the cluster", 1, WAIT);
    let log = program.log().join("\n");
    assert!(
        !log.contains("s3cret-pass"),
        "the password is never logged:\n{log}"
    );
}

#[test]
fn bad_cluster_settings_are_one_line_naming_the_variable() {
    for (vars, expected) in [
        (
            vec![("MULTINODE_CLUSTER", "http://:pw@host")],
            "MULTINODE_CLUSTER=\"http://:***@host\"",
        ),
        (
            vec![
                ("MULTINODE_CLUSTER", "redis://127.0.0.1:1"),
                ("MULTINODE_MACHINE", "a/b"),
            ],
            "MULTINODE_MACHINE=\"a/b\"",
        ),
        (
            vec![("MULTINODE_CLUSTER", "redis+unix:///tmp/x.sock?db=x&pass=pw")],
            "MULTINODE_CLUSTER=\"redis+unix:///tmp/x.sock?db=x&pass=***\"",
        ),
        (
            vec![("MULTINODE_CLUSTER", "redis://:p/w@127.0.0.1:x")],
            "MULTINODE_CLUSTER=\"redis://:***@127.0.0.1:x\"",
        ),
        (
            vec![("MULTINODE_CLUSTER", "redis+sentinel://:pw@h:x/main")],
            "MULTINODE_CLUSTER=\"redis+sentinel://:***@h:x/main\"",
        ),
    ] {
        let mut program = Program::start("probe", &vars);
        let status = program.wait_exit(WAIT);
        assert_eq!(status.code(), Some(2));
        program.wait_for(expected, 1, WAIT); // stderr is read by a thread
        let log = program.log();
        let log = log.join("\n");
        assert!(!log.contains("pw") && !log.contains("p/w"), "{log}");
        program.assert_no_process_left();
    }
}

#[test]
fn every_node_hears_each_broadcast_of_another_machine_once_and_in_order() {
    let Some(redis) = Redis::start() else { return };
    let a = mesh_machine(&redis, "a", "2");
    let b = mesh_machine(&redis, "b", "3");
    b.ready();
    connected(&a, &b, "a");
    let addr = a.ready();
    let sent: Vec<(usize, String)> = (0..60)
        .map(|i| {
            let (_, body) = get(addr, &format!("/broadcast?tag=t{i}")).unwrap();
            let sender = body.split_whitespace().nth(1).unwrap().parse().unwrap();
            (sender, format!("t{i}"))
        })
        .collect();
    for node in 0..3 {
        let all = poll(WAIT, || {
            let got = b.count(&format!("node {node} got tag t"));
            (got >= sent.len()).then_some(())
        });
        assert!(all.is_some(), "node {node} of b: {:?}", b.log());
    }
    std::thread::sleep(Duration::from_millis(200)); // a duplicate would show by now
    for node in 0..3 {
        let log = b.log();
        let heard: Vec<&String> = log
            .iter()
            .filter(|l| l.contains(&format!("node {node} got tag t")))
            .collect();
        assert_eq!(heard.len(), sent.len(), "each once on node {node} of b");
        for sender in [0, 1] {
            let from_sender = format!(" from a/{sender}");
            let order: Vec<&str> = heard
                .iter()
                .filter(|l| l.ends_with(&from_sender))
                .map(|l| {
                    l.split("got tag ")
                        .nth(1)
                        .unwrap()
                        .split(' ')
                        .next()
                        .unwrap()
                })
                .collect();
            let expected: Vec<&str> = sent
                .iter()
                .filter(|(s, _)| *s == sender)
                .map(|(_, tag)| tag.as_str())
                .collect();
            assert_eq!(
                order, expected,
                "node {node} of b, from a/{sender}: in order"
            );
        }
    }
    // On its own machine a broadcast comes once, over the local stream.
    for (sender, tag) in &sent {
        let other = 1 - sender;
        let local = a.count(&format!("node {other} got tag {tag} from {sender}"));
        let looped = a.count(&format!("node {other} got tag {tag} from a/"));
        assert_eq!((local, looped), (1, 0), "{tag} on a's node {other}");
    }
}

#[test]
fn a_send_crosses_machines_and_fails_with_gone_once_the_machine_left() {
    let Some(redis) = Redis::start() else { return };
    let a = mesh_machine(&redis, "a", "2");
    let b = mesh_machine(&redis, "b", "3");
    b.ready();
    connected(&a, &b, "a");
    let addr = a.ready();
    let listed = poll(WAIT, || {
        let (_, nodes) = get(addr, "/nodes").ok()?;
        (nodes.trim() == r#"["b/0", "b/1", "b/2"]"#).then_some(())
    });
    assert!(listed.is_some(), "a lists the 3 nodes of b");
    // Each node of a reads the machines every second: until then, b is not
    // one it knows (UnknownNode), and nothing is sent.
    let sent = poll(WAIT, || {
        let (_, body) = get(addr, "/send?to=b/1&tag=direct").ok()?;
        body.contains("sent direct to b/1").then_some(())
    });
    assert!(sent.is_some(), "a send from a to b/1");
    b.wait_for("node 1 got tag direct from a/", 1, WAIT);
    assert_eq!(b.count("node 0 got tag direct"), 0, "to node 1 only");
    // A node of its own machine named with the machine's name: the local way.
    let (_, body) = get(addr, "/send?to=a/1&tag=home").unwrap();
    if body.starts_with("node 0 ") {
        a.wait_for("node 1 got tag home from 0", 1, WAIT);
    } else {
        assert!(body.contains("could not send"), "node 1 to itself: {body}");
    }
    // Each node of a is told (every second), whichever answers next.
    a.wait_for("sees machines [\"b\"]", 2, WAIT);
    let (_, machines) = get(addr, "/machines").unwrap();
    assert_eq!(machines.trim(), "[\"b\"]");
    killpg(Pid::from_raw(b.pid() as i32), Signal::SIGKILL).unwrap();
    a.wait_for("sees machines []", 2, Duration::from_secs(10));
    assert_eq!(a.count("cluster: machine b left"), 2);
    let (_, nodes) = get(addr, "/nodes").unwrap();
    assert_eq!(nodes.trim(), "[]", "the nodes of a machine that left");
    let gone = poll(Duration::from_secs(10), || {
        let (_, body) = get(addr, "/send?to=b/1&tag=late").ok()?;
        body.contains("gone").then_some(body)
    });
    assert!(
        gone.is_some(),
        "a send to a machine that left fails with Gone"
    );
}

#[test]
fn garbage_on_the_cluster_channel_is_dropped_and_messages_cross_on() {
    let Some(redis) = Redis::start() else { return };
    let a = mesh_machine(&redis, "a", "2");
    let b = mesh_machine(&redis, "b", "2");
    b.ready();
    connected(&a, &b, "a");
    assert_eq!(
        redis
            .command(&["PUBLISH", "multinode:mesh_probe:to:b", "garbage"])
            .unwrap(),
        ":2",
        "the 2 nodes of b, and only they, subscribe to b's broadcasts"
    );
    b.wait_for(
        "dropped a message that is not one on multinode:mesh_probe:to:b",
        1,
        WAIT,
    );
    connected(&a, &b, "a");
    assert!(b.count("panicked") == 0 && b.count("closing the stream") == 0);
}

/// The most memory (KiB) a node that reads nothing may reach while 256 MiB
/// are published to it: its 32 MiB backlog, its own 10 MiB or so, and room
/// for the allocator's slack.
const DEAF_NODE_KIB: u64 = 96 * 1024;

#[test]
fn a_node_that_takes_nothing_holds_a_bounded_backlog_and_says_what_it_dropped() {
    let Some(redis) = Redis::start() else { return };
    let a = mesh_machine(&redis, "a", "2");
    let b = deaf_machine(&redis, "3", 2);
    let deaf = b.node_pid(2, 1);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut publisher = client.get_connection().unwrap();
    let channel = "multinode:mesh_probe:to:b:2"; // node 2's own
    let mut publish = |payload: &[u8]| -> i64 {
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query(&mut publisher)
            .unwrap()
    };
    let subscribed = poll(WAIT, || (publish(b"hello?") == 1).then_some(()));
    assert!(subscribed.is_some(), "node 2 of b never subscribed");
    let mib = vec![b'x'; 1024 * 1024]; // not a message: garbage once read
    for _ in 0..256 {
        assert_eq!(publish(&mib), 1);
    }
    // Node 2 has read what Redis sent once Redis's output buffers are empty.
    let drained = poll(WAIT, || {
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut client.get_connection().unwrap())
            .unwrap();
        clients
            .lines()
            .all(|l| l.contains(" omem=0 "))
            .then_some(())
    });
    assert!(drained.is_some(), "Redis still holds node 2's messages");
    let peak = peak_kib(deaf);
    assert!(
        peak < DEAF_NODE_KIB,
        "node 2 reached {peak} KiB holding what it did not read"
    );
    nix::sys::signal::kill(Pid::from_raw(deaf as i32), Signal::SIGUSR1).unwrap();
    b.wait_for("node 2 reading", 1, WAIT);
    b.wait_for(
        "messages from other machines: this node took them more slowly than they came",
        1,
        WAIT,
    );
    connected(&a, &b, "a");
    assert_eq!(b.count("panicked"), 0);
}

#[test]
fn a_node_that_takes_nothing_subscribes_again_after_redis_restarts() {
    let Some(redis) = Redis::start() else { return };
    let port = redis.port;
    let b = deaf_machine(&redis, "2", 1);
    let subscribers = |redis: &Redis| {
        redis
            .command(&["PUBLISH", "multinode:mesh_probe:to:b:1", "anyone?"])
            .unwrap()
    };
    let subscribed = poll(WAIT, || (subscribers(&redis) == ":1").then_some(()));
    assert!(subscribed.is_some(), "node 1 of b never subscribed");
    drop(redis);
    let Some(redis) = Redis::start_on(port, None) else {
        return;
    };
    let again = poll(WAIT, || (subscribers(&redis) == ":1").then_some(()));
    assert!(
        again.is_some(),
        "node 1, which takes nothing, did not subscribe again: {:?}",
        b.log()
    );
    b.wait_for("the subscription connection to Redis is back", 2, WAIT);
}

/// The most resident memory `pid` ever had, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn redis_restarted_under_traffic_the_local_mesh_goes_on_and_the_bridge_recovers() {
    let Some(redis) = Redis::start() else { return };
    let port = redis.port;
    let a = mesh_machine(&redis, "a", "2");
    let b = mesh_machine(&redis, "b", "2");
    b.ready();
    connected(&a, &b, "a");
    let addr = a.ready();
    drop(redis);
    // Messages on one machine never touch Redis.
    for i in 0..20 {
        let (_, body) = get(addr, &format!("/broadcast?tag=alone{i}")).unwrap();
        let sender: usize = body.split_whitespace().nth(1).unwrap().parse().unwrap();
        let needle = format!("node {} got tag alone{i} from {sender}", 1 - sender);
        a.wait_for(&needle, 1, WAIT);
    }
    let (_, body) = get(addr, "/send?to=b/1&tag=during").unwrap();
    assert!(
        body.contains("could not send"),
        "fails fast during the outage: {body}"
    );
    let Some(_redis) = Redis::start_on(port, None) else {
        return;
    };
    connected(&a, &b, "a");
    // One line per node when the outage starts, one when it ends: a's nodes
    // published into it, b's only listened.
    let lost = a.count("lost the publishing connection");
    assert!(
        (1..=2).contains(&lost),
        "one line per node and outage, got {lost}"
    );
    for program in [&a, &b] {
        program.wait_for("the subscription connection to Redis is back", 2, WAIT);
        assert_eq!(program.count("lost the subscription connection"), 2);
    }
}

#[test]
fn a_hung_redis_makes_sends_fail_and_leaves_the_local_mesh_and_the_stop_alone() {
    let Some(redis) = Redis::start() else { return };
    let mut a = mesh_machine(&redis, "a", "2");
    let b = mesh_machine(&redis, "b", "2");
    b.ready();
    connected(&a, &b, "a");
    let addr = a.ready();
    // Its sockets stay open and the kernel still answers for it: only the
    // replies never come.
    redis.signal(Signal::SIGSTOP);
    let failed = poll(WAIT, || {
        let (_, body) = get(addr, "/send?to=b/1&tag=hung").ok()?;
        body.contains("could not send").then_some(())
    });
    assert!(
        failed.is_some(),
        "sends to another machine never failed: {:?}",
        a.log()
    );
    for i in 0..20 {
        let (_, body) = get(addr, &format!("/broadcast?tag=alone{i}")).unwrap();
        let sender: usize = body.split_whitespace().nth(1).unwrap().parse().unwrap();
        let needle = format!("node {} got tag alone{i} from {sender}", 1 - sender);
        a.wait_for(&needle, 1, WAIT);
    }
    a.wait_for("lost the publishing connection", 1, WAIT);
    redis.signal(Signal::SIGCONT);
    connected(&a, &b, "a");
    // And a master stops in its own time while Redis hangs.
    redis.signal(Signal::SIGSTOP);
    a.signal(Signal::SIGTERM);
    assert!(a.wait_exit(WAIT).success());
    a.assert_no_process_left();
}

#[test]
fn the_chat_example_on_two_machines_is_one_room() {
    let Some(redis) = Redis::start() else { return };
    let Some(browser) = common::browser::launch() else {
        return;
    };
    let machine = |name| {
        Program::start(
            "chat",
            &[
                ("MULTINODE_NODES", "2"),
                ("MULTINODE_CLUSTER", &redis.url()),
                ("MULTINODE_MACHINE", name),
            ],
        )
    };
    let (one, two) = (machine("one"), machine("two"));
    let (url_one, url_two) = (
        format!("http://{}/", one.ready()),
        format!("http://{}/", two.ready()),
    );
    // Each machine sees the other before anyone posts (pub/sub replays nothing).
    for program in [&one, &two] {
        program.wait_for("cluster: machine", 2, WAIT);
    }
    let a = browser.new_tab().unwrap();
    common::browser::open_chat(&a, &url_one);
    let b = browser.new_tab().unwrap();
    common::browser::open_chat(&b, &url_two);
    let shows = |tab: &headless_chrome::Tab, text: &str| {
        let script = format!("document.body.innerText.includes({text:?})");
        let shown = tab.evaluate(&script, false).map(|result| result.value);
        matches!(shown, Ok(Some(serde_json::Value::Bool(true))))
    };
    // Posted on one until the page on two shows it: the subscriptions are up.
    let warm = r#"{"user":"warm","text":"warming up"}"#;
    let crossed = poll(WAIT, || {
        post(one.ready(), warm);
        shows(&b, "warming up").then_some(())
    });
    assert!(crossed.is_some(), "a message posted on one reaches two");
    let text = "from machine one";
    common::browser::post_in_page(&a, "ann", text);
    let shown = poll(WAIT, || shows(&b, text).then_some(()));
    assert!(
        shown.is_some(),
        "the page on two shows what the page on one posted"
    );
    common::browser::screenshot(&a, "cluster-chat-one.png");
    common::browser::screenshot(&b, "cluster-chat-two.png");
}

/// POSTs a chat message (JSON) to the chat example at `addr`.
fn post(addr: std::net::SocketAddr, body: &str) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!(
        "POST /messages HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(request.as_bytes());
    let _ = stream.read_to_end(&mut Vec::new());
}

#[test]
fn machines_meet_over_tls() {
    let dir = std::env::temp_dir().join(format!("multinode-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let Some(redis) = Redis::start_tls(&dir) else {
        return;
    };
    let ca = dir.join("ca.pem");
    let machine = |name: &str| {
        Program::start(
            "mesh_probe",
            &[
                ("MULTINODE_NODES", "2"),
                ("MULTINODE_CLUSTER", &redis.url()),
                ("MULTINODE_MACHINE", name),
                ("SSL_CERT_FILE", ca.to_str().unwrap()), // trust the test's CA
            ],
        )
    };
    let (a, b) = (machine("a"), machine("b"));
    b.ready();
    a.wait_for("joined the cluster", 1, WAIT);
    connected(&a, &b, "a");
    drop(redis);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_upgrade_hands_the_machines_name_to_the_new_master() {
    let Some(redis) = Redis::start() else { return };
    let mut program = machine(&redis, "up");
    let addr = program.ready();
    let old = program.pid().to_string();
    assert!(
        holder(&redis, "up").starts_with(&format!("{old}:")),
        "the master's claim"
    );
    program.signal(Signal::SIGUSR2);
    assert!(program.wait_exit(WAIT).success(), "{:?}", program.log());
    let new = poll(WAIT, || {
        let held = holder(&redis, "up");
        let pid = held.split(':').next()?.parse::<u32>().ok()?;
        (pid.to_string() != old && common::is_alive(pid)).then_some(pid)
    });
    assert!(
        new.is_some(),
        "the new master holds the name: {}",
        holder(&redis, "up")
    );
    assert_eq!(get(addr, "/").unwrap().0, 200);
    assert_eq!(program.count("upgrade failed"), 0);
    nix::sys::signal::kill(Pid::from_raw(new.unwrap() as i32), Signal::SIGTERM).unwrap();
    let released = poll(WAIT, || (holder(&redis, "up") == "$-1").then_some(()));
    assert!(released.is_some(), "given back when the new master stops");
}

#[test]
fn an_upgraded_machine_keeps_its_default_name_and_hears_each_message_once() {
    let Some(redis) = Redis::start() else { return };
    // Machine a has the default name (host and master pid); its old tree
    // drains slowly, so that both trees run when b broadcasts.
    let mut a = Program::start(
        "mesh_probe",
        &[
            ("MULTINODE_NODES", "2"),
            ("MULTINODE_CLUSTER", &redis.url()),
            ("MESH_LINGER_MS", "3000"),
        ],
    );
    let b = mesh_machine(&redis, "b", "2");
    a.ready();
    connected(&b, &a, "b");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let name = format!("{}-{}", host.trim(), a.pid());
    assert!(
        holder_in(&redis, "mesh_probe", &name).starts_with(&format!("{}:", a.pid())),
        "a's claim"
    );
    a.signal(Signal::SIGUSR2);
    a.wait_for("this master drains and exits", 1, WAIT);
    // The old nodes left a's channel as they began to drain; the new ones
    // subscribe as they start (what is published in between is lost: pub/sub
    // is at most once).
    let channel = format!("multinode:mesh_probe:to:{name}");
    let client = redis::Client::open(redis.url()).unwrap();
    let subscribed = poll(WAIT, || {
        let (_, numsub): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query(&mut client.get_connection().ok()?)
            .ok()?;
        (numsub == 2).then_some(())
    });
    assert!(subscribed.is_some());
    let addr = b.ready();
    for i in 0..5 {
        get(addr, &format!("/broadcast?tag=after{i}")).unwrap();
    }
    for node in 0..2 {
        for i in 0..5 {
            let needle = format!("node {node} got tag after{i} from b/");
            let heard = poll(WAIT, || (a.count(&needle) >= 1).then_some(()));
            assert!(heard.is_some(), "{needle}: {:?}", a.log());
            let twice = poll(Duration::from_millis(300), || {
                (a.count(&needle) > 1).then_some(())
            });
            assert!(twice.is_none(), "{needle}: heard twice");
        }
    }
    assert!(a.wait_exit(WAIT).success());
    let taken = holder_in(&redis, "mesh_probe", &name);
    let new: u32 = taken.split(':').next().unwrap().parse().unwrap();
    assert!(
        new != a.pid() && common::is_alive(new),
        "the new master holds {name}: {taken}"
    );
    assert_eq!(
        b.count(&format!("machine {name} left")),
        0,
        "b never saw a leave"
    );
    nix::sys::signal::kill(Pid::from_raw(new as i32), Signal::SIGTERM).unwrap();
}
