//! Redis as a shared and untrusted part of the cluster: programs share one
//! Redis under their own namespaces; what comes from Redis is checked (its
//! sender, its type, its size) and never starves the local mesh; finding the
//! machines costs no scan of the keyspace; a name is one machine's; the
//! password is in nobody's environment. Real processes, a real `redis-server`.

#![cfg(feature = "cluster")]

mod common;

use std::time::Duration;

use common::machines::{
    connected, deaf_machine, mesh_machine, mesh_machine_with, seen_by_every_node,
};
use common::redis::{free_port, Redis};
use common::{get, poll, Program};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(20);

/// The other machines `program`'s answering node sees.
fn machines_seen(program: &Program) -> String {
    get(program.ready(), "/machines").unwrap().1
}

#[test]
fn two_programs_on_one_redis_never_see_each_others_machines_or_messages() {
    let Some(redis) = Redis::start() else { return };
    let shop = |name| mesh_machine_with(&redis, name, "2", &[("MULTINODE_NAMESPACE", "shop")]);
    let (a, c) = (shop("a"), shop("c"));
    let b = mesh_machine_with(&redis, "b", "2", &[("MULTINODE_NAMESPACE", "blog")]);
    b.ready();
    connected(&c, &a, "c"); // the same namespace meets
    get(b.ready(), "/broadcast?tag=fromblog").unwrap();
    let addr = c.ready();
    let mut n = 0;
    let later = poll(WAIT, || {
        n += 1;
        get(addr, &format!("/broadcast?tag=after{n}")).ok()?;
        std::thread::sleep(Duration::from_millis(50));
        (a.count(&format!("got tag after{n} from c/")) > 0).then_some(())
    });
    assert!(later.is_some(), "c's broadcast after b's reached a");
    assert_eq!(a.count("fromblog"), 0, "a heard the other program's b");
    // Whichever node answers.
    let seen = poll(WAIT, || {
        (machines_seen(&a).trim() == r#"["c"]"#).then_some(())
    });
    assert!(seen.is_some(), "a sees c only: {}", machines_seen(&a));
    for _ in 0..4 {
        assert_eq!(machines_seen(&b).trim(), "[]");
    }
    let keys = redis
        .command(&["EXISTS", "multinode:shop:machine:a"])
        .unwrap();
    assert_eq!(keys, ":1", "the claim carries the namespace");
}

#[test]
fn a_deploy_with_another_message_type_is_dropped_with_a_line_never_decoded() {
    let Some(redis) = Redis::start() else { return };
    let shared = [("MULTINODE_NAMESPACE", "shared")];
    let a = mesh_machine_with(&redis, "a", "2", &shared);
    let chat = Program::start(
        "chat",
        &[
            ("MULTINODE_NODES", "1"),
            ("MULTINODE_CLUSTER", &redis.url()),
            ("MULTINODE_MACHINE", "chat"),
            ("MULTINODE_NAMESPACE", "shared"),
        ],
    );
    chat.ready();
    a.wait_for("cluster: machine chat joined", 2, WAIT);
    let needle = "dropped a message from node a/";
    let dropped = poll(WAIT, || {
        get(a.ready(), "/broadcast?tag=tochat").ok()?;
        std::thread::sleep(Duration::from_millis(100));
        (chat.count("its message type is not this node's") > 0).then_some(())
    });
    assert!(dropped.is_some(), "no line: {:?}", chat.log());
    assert!(chat.count(needle) > 0);
    assert_eq!(chat.count("malformed"), 0, "nothing decoded as chat's type");
    assert_eq!(chat.count("panicked"), 0);
}

#[test]
fn a_message_from_redis_over_max_frame_len_is_dropped_and_counted() {
    let Some(redis) = Redis::start() else { return };
    let a = mesh_machine(&redis, "a", "2");
    let admin = format!("127.0.0.1:{}", free_port());
    let b = mesh_machine_with(
        &redis,
        "b",
        "2",
        &[("MESH_MAX_FRAME", "4096"), ("MULTINODE_ADMIN", &admin)],
    );
    b.ready();
    connected(&a, &b, "a");
    seen_by_every_node(&a, 2, r#"["b"]"#); // whichever answers sends to b
    get(a.ready(), "/broadcast?tag=big&pad=10000").unwrap();
    b.wait_for("bytes from node a/", 1, WAIT);
    b.wait_for("over max_frame_len (4096)", 1, WAIT);
    let counted = poll(WAIT, || {
        let total = metric_sum(&admin, "multinode_cluster_dropped_oversized_total");
        (total == 2.0).then_some(()) // one for each node of b
    });
    assert!(counted.is_some(), "the 2 drops are counted");
    assert_eq!(b.count("got tag bigxxx"), 0);
    connected(&a, &b, "a"); // and messages cross on
}

/// The sum over the nodes of metric `name` from the admin listener at `admin`.
fn metric_sum(admin: &str, name: &str) -> f64 {
    let Ok((_, metrics)) = get(admin.parse().unwrap(), "/metrics") else {
        return 0.0;
    };
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `PUBLISH channel payload`, the payload as bytes.
fn publish(redis: &Redis, channel: &str, payload: &[u8]) -> i64 {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_connection().unwrap();
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query(&mut connection)
        .unwrap()
}

#[test]
fn a_sender_that_is_not_a_live_machine_is_dropped_and_counted() {
    let Some(redis) = Redis::start() else { return };
    let a = mesh_machine(&redis, "a", "2");
    let admin = format!("127.0.0.1:{}", free_port());
    let b = mesh_machine_with(&redis, "b", "2", &[("MULTINODE_ADMIN", &admin)]);
    b.ready();
    connected(&a, &b, "a");
    // An envelope as postcard writes it: machine "ghost", node 0, the
    // fingerprint of mesh_probe's `Msg`, and a body that is a `Tag("x")`.
    let line = b
        .log()
        .into_iter()
        .find(|l| l.contains("message fingerprint"));
    let fingerprint: u32 = line.unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    let mut ghost = vec![5];
    ghost.extend_from_slice(b"ghost");
    ghost.push(0);
    let mut kind = fingerprint;
    while kind >= 0x80 {
        ghost.push(kind as u8 | 0x80);
        kind >>= 7;
    }
    ghost.push(kind as u8);
    ghost.extend_from_slice(&[3, 1, 1, b'x']);
    assert_eq!(publish(&redis, "multinode:mesh_probe:to:b", &ghost), 2);
    b.wait_for(
        "dropped a message from \"ghost\", not a live machine of namespace \"mesh_probe\"",
        1,
        WAIT,
    );
    let counted = poll(WAIT, || {
        let total = metric_sum(&admin, "multinode_cluster_dropped_unknown_sender_total");
        (total == 2.0).then_some(()) // one for each node of b
    });
    assert!(counted.is_some(), "the 2 drops are counted");
    assert_eq!(b.count("got tag x from"), 0);
    connected(&a, &b, "a");
}

#[test]
fn a_flood_from_other_machines_does_not_hold_back_a_local_message() {
    let Some(redis) = Redis::start() else { return };
    let a = mesh_machine(&redis, "a", "2");
    let b = deaf_machine(&redis, "2", 1);
    connected(&a, &b, "a");
    seen_by_every_node(&a, 2, r#"["b"]"#); // whichever answers sends to b
    let flooded = get(a.ready(), "/flood?to=b/1&count=100000").unwrap().1;
    assert!(flooded.contains("flooded 100000"), "{flooded}");
    let client = redis::Client::open(redis.url()).unwrap();
    let published = || -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut client.get_connection().unwrap())
            .unwrap();
        let calls = info.split("cmdstat_publish:calls=").nth(1).unwrap_or("0");
        calls.split(',').next().unwrap().parse().unwrap()
    };
    let delivered = poll(WAIT, || {
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut client.get_connection().unwrap())
            .unwrap();
        let empty = clients.lines().all(|l| l.contains(" omem=0 "));
        (empty && published() >= 100_000).then_some(())
    });
    assert!(delivered.is_some(), "the flood sits in node 1's backlog");
    let stamped = poll(WAIT, || {
        let (status, _) = get(b.ready(), "/stamp?to=1").ok()?;
        (status == 200).then_some(())
    });
    assert!(stamped.is_some(), "node 0 of b stamped node 1");
    let deaf = b.node_pid(1, 1);
    nix::sys::signal::kill(Pid::from_raw(deaf as i32), Signal::SIGUSR1).unwrap();
    b.wait_for("node 1 got a stamp after", 1, WAIT);
    let line = b
        .log()
        .into_iter()
        .find(|l| l.contains("node 1 got a stamp after"))
        .unwrap();
    let blobs: u64 = line
        .split("after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    eprintln!("the local stamp, behind 100 000 remote messages: {line}");
    assert!(
        blobs <= 2,
        "{blobs} remote messages went before the local one"
    );
}

#[test]
fn finding_the_machines_scans_no_keyspace_and_does_not_flap_among_2_million_keys() {
    let Some(redis) = Redis::start_with(free_port(), None, &["--enable-debug-command", "local"])
    else {
        return;
    };
    assert_eq!(
        redis
            .command(&["DEBUG", "POPULATE", "2000000", "app"])
            .unwrap(),
        "+OK"
    );
    let a = mesh_machine(&redis, "a", "2");
    let b = mesh_machine(&redis, "b", "2");
    b.ready();
    connected(&a, &b, "a");
    redis.command(&["CONFIG", "RESETSTAT"]).unwrap();
    let nodes = poll(WAIT, || {
        let seen = get(a.ready(), "/nodes").ok()?.1;
        (seen.trim() == r#"["b/0", "b/1"]"#).then_some(())
    });
    assert!(nodes.is_some(), "a sees b's nodes");
    // Ten readings by each of the four nodes (`FLAP_SECONDS=60`: a minute).
    let seconds = std::env::var("FLAP_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok());
    std::thread::sleep(Duration::from_secs(seconds.unwrap_or(10)));
    let client = redis::Client::open(redis.url()).unwrap();
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut client.get_connection().unwrap())
        .unwrap();
    assert!(stats.contains("cmdstat_evalsha"), "the nodes read: {stats}");
    assert!(!stats.contains("cmdstat_scan"), "{stats}");
    assert!(!stats.contains("cmdstat_keys"), "{stats}");
    for (program, other) in [(&a, "b"), (&b, "a")] {
        assert_eq!(program.count(&format!("machine {other} left")), 0);
        assert_eq!(program.count(&format!("machine {other} joined")), 2);
    }
}

#[test]
fn a_late_claim_that_finds_the_name_taken_stops_the_master_with_exit_2() {
    let port = free_port();
    let password = "late-pass";
    let url = format!("redis://:{password}@127.0.0.1:{port}");
    let mut late = Program::start(
        "probe",
        &[
            ("MULTINODE_NODES", "2"),
            ("MULTINODE_CLUSTER", &url),
            ("MULTINODE_MACHINE", "twin"),
        ],
    );
    let addr = late.ready();
    late.wait_for("starting alone", 1, WAIT);
    // Redis comes, asking another password until the name is taken.
    let Some(redis) = Redis::start_on(port, Some("not-yet")) else {
        return;
    };
    let key = "multinode:probe:machine:twin";
    assert_eq!(
        redis
            .command(&["SET", key, "1:other", "PX", "60000"])
            .unwrap(),
        "+OK"
    );
    assert_eq!(
        redis
            .command(&["CONFIG", "SET", "requirepass", password])
            .unwrap(),
        "+OK"
    );
    let status = late.wait_exit(WAIT);
    assert_eq!(status.code(), Some(2), "{:?}", late.log());
    late.wait_for(
        "machine name \"twin\" is held by another master in this cluster",
        1,
        WAIT,
    );
    late.assert_no_process_left();
    assert!(get(addr, "/").is_err(), "stopped");
    let mut redis = redis;
    redis.password = Some(password.into());
    assert_eq!(
        redis.command(&["GET", key]).unwrap(),
        "1:other",
        "not taken"
    );
}

#[test]
fn the_password_is_in_no_environment_a_body_gives_its_children() {
    let Some(redis) = Redis::start_on(free_port(), Some("env-s3cret")) else {
        return;
    };
    let program = Program::start(
        "probe",
        &[
            ("MULTINODE_NODES", "2"),
            ("MULTINODE_CLUSTER", &redis.url()),
            ("MULTINODE_MACHINE", "env"),
        ],
    );
    let addr = program.ready();
    let mut pids = std::collections::BTreeSet::new();
    let both = poll(WAIT, || {
        let (_, env) = get(addr, "/child-env").ok()?;
        assert!(!env.contains("env-s3cret"), "{env}");
        assert!(!env.contains("MULTINODE_CLUSTER"), "{env}");
        let (_, me) = get(addr, "/").ok()?;
        pids.insert(common::pid_in(&me));
        (pids.len() == 2).then_some(())
    });
    assert!(both.is_some(), "both nodes answered");
    for worker in program.workers() {
        let environ = std::fs::read(format!("/proc/{worker}/environ")).unwrap();
        let environ = String::from_utf8_lossy(&environ);
        assert!(!environ.contains("env-s3cret"), "worker {worker}");
    }
    let log = program.log().join("\n");
    assert!(!log.contains("env-s3cret"), "{log}");
}
