//! The cluster behind Redis Sentinel: 1 primary, 1 replica and 3 sentinels on
//! loopback, real processes. Killed under a flow of messages, the primary is
//! replaced by the replica, and the machines follow by themselves.

#![cfg(feature = "cluster")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::machines::connected;
use common::redis::{free_port, Redis};
use common::{get, poll, Program};
use nix::sys::signal::Signal;

/// `INFO sentinel` of `sentinel`.
fn sentinel_info(sentinel: &Redis) -> String {
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", sentinel.port)).unwrap();
    let Ok(mut connection) = client.get_connection() else {
        return String::new();
    };
    redis::cmd("INFO")
        .arg("sentinel")
        .query(&mut connection)
        .unwrap_or_default()
}

#[test]
fn after_a_failover_messages_cross_again_with_no_program_restarted() {
    let Some(primary) = Redis::start() else {
        return;
    };
    let replica_of = primary.port.to_string();
    let Some(_replica) = Redis::start_with(
        free_port(),
        None,
        &["--replicaof", "127.0.0.1", &replica_of],
    ) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("multinode-sentinel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sentinels: Vec<Redis> = (0..3)
        .map(|_| Redis::start_sentinel(&dir, primary.port))
        .collect();
    let ready = poll(Duration::from_secs(30), || {
        sentinels
            .iter()
            .all(|s| {
                sentinel_info(s).contains("status=ok")
                    && sentinel_info(s).contains("slaves=1,sentinels=3")
            })
            .then_some(())
    });
    assert!(
        ready.is_some(),
        "the sentinels know the replica and each other"
    );
    let hosts: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    let url = format!("redis+sentinel://{}/main", hosts.join(","));
    let machine = |name| {
        Program::start(
            "mesh_probe",
            &[
                ("MULTINODE_NODES", "2"),
                ("MULTINODE_CLUSTER", &url),
                ("MULTINODE_MACHINE", name),
            ],
        )
    };
    let (a, b) = (machine("a"), machine("b"));
    b.ready();
    connected(&a, &b, "a");
    let pids: Vec<u32> = [&a, &b]
        .iter()
        .flat_map(|p| [p.pid(), p.node_pid(1, 1)])
        .collect();
    // A flow of broadcasts from a, 20 a second, all along.
    let flowing = Arc::new(AtomicBool::new(true));
    let flow = {
        let (addr, flowing) = (a.ready(), flowing.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while flowing.load(Ordering::Relaxed) {
                n += 1;
                let _ = get(addr, &format!("/broadcast?tag=flow{n}"));
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    primary.signal(Signal::SIGKILL);
    let failed_over = poll(Duration::from_secs(30), || {
        sentinel_info(&sentinels[0])
            .contains(&format!("address=127.0.0.1:{}", _replica.port))
            .then_some(())
    });
    assert!(failed_over.is_some(), "the sentinels promoted the replica");
    for program in [&a, &b] {
        program.wait_for("connection to Redis is back", 1, Duration::from_secs(30));
    }
    // Broadcasts sent after everything came back cross.
    let again = poll(Duration::from_secs(30), || {
        let tag = format!(
            "after{}",
            std::time::UNIX_EPOCH.elapsed().unwrap().as_millis()
        );
        get(a.ready(), &format!("/broadcast?tag={tag}")).ok()?;
        std::thread::sleep(Duration::from_millis(200));
        (b.count(&format!("got tag {tag} from a/")) == 2).then_some(())
    });
    flowing.store(false, Ordering::Relaxed);
    flow.join().unwrap();
    assert!(
        again.is_some(),
        "no broadcast crossed after the failover: {:?}",
        b.log()
    );
    let now: Vec<u32> = [&a, &b]
        .iter()
        .flat_map(|p| [p.pid(), p.node_pid(1, 1)])
        .collect();
    assert_eq!(pids, now, "no process was restarted");
    for program in [&a, &b] {
        assert_eq!(program.count("node started node=1 generation=2"), 0);
        assert_eq!(program.count("panicked"), 0);
        // One line when each connection's outage starts, one when it ends.
        let (lost, back) = (program.count("lost the"), program.count("Redis is back"));
        assert!(lost >= 1 && lost == back, "{lost} lost, {back} back");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
