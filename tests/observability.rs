//! Observability from outside, on real processes: the admin listener's
//! `/metrics` read by Prometheus' own Python parser (Debian's
//! `python3-prometheus-client`, which `.ci/run` installs), the status page in
//! headless Chromium, and a program's own JSON subscriber.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{get, poll, Program};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(20);

/// The admin listener's address, from the master's log.
fn admin(program: &Program) -> SocketAddr {
    program.wait_for("admin on http://", 1, WAIT);
    let log = program.log();
    let line = log.iter().find(|l| l.contains("admin on http://")).unwrap();
    let rest = &line[line.find("admin on http://").unwrap() + "admin on http://".len()..];
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// `/metrics` parsed by prometheus_client: `{name: {node label or "": value}}`.
fn scrape(addr: SocketAddr) -> BTreeMap<String, BTreeMap<String, f64>> {
    let (status, text) = get(addr, "/metrics").unwrap();
    assert_eq!(status, 200, "{text}");
    let parser = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        out.setdefault(sample.name, {})[sample.labels.get("node", "")] = sample.value
print(json.dumps(out))
"#;
    // Debian's python3, which the package is for (not a python3 of pyenv's).
    let python3 = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| !p.starts_with('/') || std::path::Path::new(p).exists())
        .unwrap();
    let mut python = Command::new(python3)
        .args(["-c", parser])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    python
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = python.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the Prometheus parser refused the text ({}); install python3-prometheus-client:\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn value(metrics: &BTreeMap<String, BTreeMap<String, f64>>, name: &str, node: &str) -> f64 {
    metrics
        .get(name)
        .and_then(|m| m.get(node))
        .copied()
        .unwrap_or_else(|| panic!("no {name}{{node={node:?}}} in {metrics:?}"))
}

fn start(nodes: &str, extra: &[(&str, &str)]) -> Program {
    let mut env = vec![
        ("MULTINODE_NODES", nodes),
        ("MULTINODE_ADMIN", "127.0.0.1:0"),
    ];
    env.extend_from_slice(extra);
    Program::start("probe", &env)
}

#[test]
fn metrics_count_every_request_of_every_node() {
    let program = start("4", &[]);
    let addr = program.ready();
    let admin = admin(&program);
    const N: usize = 400;
    for _ in 0..N {
        assert_eq!(get(addr, "/").unwrap().0, 200);
    }
    // A request is counted once its answer is written.
    let metrics = poll(WAIT, || {
        let metrics = scrape(admin);
        let served: f64 = metrics["multinode_node_requests_total"].values().sum();
        (served == N as f64).then_some(metrics)
    })
    .unwrap_or_else(|| panic!("the nodes' requests do not sum to {N}: {:?}", scrape(admin)));
    for node in ["0", "1", "2", "3"] {
        assert_eq!(value(&metrics, "multinode_node_ready", node), 1.0);
        assert!(
            value(&metrics, "multinode_node_requests_total", node) > 0.0,
            "node {node} served some"
        );
        assert!(value(&metrics, "multinode_node_resident_memory_bytes", node) > 1e5);
        // The process metrics of Prometheus's clients, labelled by node.
        assert!(value(&metrics, "process_resident_memory_bytes", node) > 1e5);
        assert!(value(&metrics, "process_cpu_seconds_total", node) >= 0.0);
        let fds = value(&metrics, "process_open_fds", node);
        assert!(fds >= 3.0 && fds < value(&metrics, "process_max_fds", node));
        let now = std::time::UNIX_EPOCH.elapsed().unwrap().as_secs_f64();
        let started = value(&metrics, "process_start_time_seconds", node);
        assert!(
            started <= now + 1.0 && started > now - 600.0,
            "{started} {now}"
        );
        assert!(value(&metrics, "multinode_node_uptime_seconds", node) >= 0.0);
    }
    assert_eq!(value(&metrics, "multinode_reloads_total", ""), 0.0);
    // The same text from a node, for a route of the program's own.
    let (_, text) = get(addr, "/metrics").unwrap();
    assert!(
        text.contains("multinode_node_requests_total{node=\"3\"}"),
        "{text}"
    );
}

#[test]
fn counters_survive_a_worker_restart_and_the_restart_shows() {
    let program = start("2", &[]);
    let addr = program.ready();
    let admin = admin(&program);
    for _ in 0..100 {
        get(addr, "/").unwrap();
    }
    let before = poll(WAIT, || {
        let metrics = scrape(admin);
        let served = value(&metrics, "multinode_node_requests_total", "1");
        (served > 0.0).then_some(served)
    })
    .expect("node 1 served some");
    let worker = *program.workers().iter().next().unwrap();
    kill(Pid::from_raw(worker as i32), Signal::SIGKILL).unwrap();
    let metrics = poll(WAIT, || {
        let metrics = scrape(admin);
        let restarted = value(&metrics, "multinode_node_restarts_total", "1") == 1.0
            && value(&metrics, "multinode_node_ready", "1") == 1.0;
        restarted.then_some(metrics)
    })
    .expect("node 1 restarted and ready");
    assert_eq!(value(&metrics, "multinode_node_last_exit_signal", "1"), 9.0);
    assert_eq!(value(&metrics, "multinode_node_generation", "1"), 2.0);
    assert!(
        value(&metrics, "multinode_node_requests_total", "1") >= before,
        "a slot's counter does not go back when its node restarts"
    );
}

#[test]
fn the_programs_own_counter_is_reported_per_node_and_summed() {
    let program = start("3", &[]);
    let addr = program.ready();
    let admin = admin(&program);
    let mut counted: BTreeMap<String, f64> = BTreeMap::new();
    const M: usize = 150;
    for _ in 0..M {
        let (_, body) = get(addr, "/count").unwrap();
        let node = body.split_whitespace().nth(1).unwrap().to_owned();
        *counted.entry(node).or_default() += 1.0;
    }
    assert!(
        counted.len() >= 2,
        "the counts came from several nodes: {counted:?}"
    );
    let metrics = scrape(admin);
    for (node, count) in &counted {
        assert_eq!(
            value(&metrics, "probe_orders_total", node),
            *count,
            "node {node}"
        );
    }
    assert_eq!(
        value(&metrics, "probe_orders_total", ""),
        M as f64,
        "the sum"
    );
}

#[test]
fn the_status_page_shows_every_node() {
    let Some(browser) = common::browser::launch() else {
        return;
    };
    let program = start("3", &[]);
    let addr = program.ready();
    let admin = admin(&program);
    for _ in 0..50 {
        get(addr, "/").unwrap();
    }
    let tab = browser.new_tab().unwrap();
    tab.navigate_to(&format!("http://{admin}/"))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    tab.wait_for_element("tbody tr").unwrap();
    // Read at once: the page reloads itself every 2 s.
    let script = "JSON.stringify([document.querySelectorAll('tbody tr').length, \
                  document.querySelector('table').innerText, document.querySelector('ol').innerText])";
    let read = tab.evaluate(script, false).unwrap().value.unwrap();
    let (rows, text, events): (usize, String, String) =
        serde_json::from_str(read.as_str().unwrap()).unwrap();
    assert_eq!(rows, 4, "one row per node, and the totals:\n{text}");
    for pid in std::iter::once(program.pid()).chain(program.workers()) {
        assert!(text.contains(&pid.to_string()), "pid {pid} in:\n{text}");
    }
    assert_eq!(text.matches("serving").count(), 3, "{text}");
    assert!(events.contains("all 3 nodes ready"), "{events}");
    common::browser::screenshot(&tab, "status-page.png");
}

#[test]
fn a_programs_own_json_subscriber_gets_multinodes_events_with_node_and_pid() {
    let mut program = start("2", &[("PROBE_JSON_LOGS", "1")]);
    let ready = poll(WAIT, || {
        program
            .log()
            .into_iter()
            .find(|l| l.contains("nodes ready"))
    })
    .expect("the ready event, as JSON");
    let event: serde_json::Value = serde_json::from_str(&ready).expect("a JSON line");
    let master = &event["spans"][0];
    assert_eq!(master["name"], "master", "{event}");
    assert_eq!(master["pid"], program.pid(), "{event}");
    program.signal(Signal::SIGTERM);
    program.wait_exit(WAIT);
    let draining: Vec<serde_json::Value> = program
        .log()
        .iter()
        .filter(|l| l.contains("draining"))
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(draining.len(), 2, "each node drains: {draining:?}");
    for event in draining {
        let node = &event["span"];
        assert_eq!(node["name"], "node", "{event}");
        assert!(
            node["id"].is_u64() && node["generation"] == 1 && node["pid"].is_u64(),
            "{event}"
        );
    }
}

#[test]
fn the_message_layer_is_counted_per_node() {
    let program = Program::start(
        "mesh_probe",
        &[("MULTINODE_NODES", "3"), ("MULTINODE_ADMIN", "127.0.0.1:0")],
    );
    let addr = program.ready();
    let admin = admin(&program);
    let total = |metrics: &BTreeMap<String, BTreeMap<String, f64>>, name: &str| -> f64 {
        metrics[name].values().sum()
    };
    // Each node says hello to the 2 others at start; the board may count
    // them after the server is ready, so wait for all 6 before measuring.
    let before = poll(WAIT, || {
        let now = scrape(admin);
        (total(&now, "multinode_mesh_messages_received_total") == 6.0
            && total(&now, "multinode_mesh_messages_sent_total") == 6.0)
            .then_some(now)
    })
    .unwrap_or_else(|| panic!("the 6 hellos counted: {:?}", scrape(admin)));
    const B: usize = 10;
    for i in 0..B {
        let (status, body) = get(addr, &format!("/broadcast?tag=count{i}")).unwrap();
        assert_eq!(status, 200, "{body}");
    }
    // Each broadcast goes to the 2 other nodes.
    let after = poll(WAIT, || {
        let now = scrape(admin);
        let received = total(&now, "multinode_mesh_messages_received_total")
            - total(&before, "multinode_mesh_messages_received_total");
        (received == 2.0 * B as f64).then_some(now)
    })
    .unwrap_or_else(|| panic!("20 messages received: {:?}", scrape(admin)));
    let sent = total(&after, "multinode_mesh_messages_sent_total")
        - total(&before, "multinode_mesh_messages_sent_total");
    assert_eq!(sent, 2.0 * B as f64);
    assert!(
        total(&after, "multinode_mesh_bytes_sent_total")
            > total(&before, "multinode_mesh_bytes_sent_total")
    );
    assert_eq!(
        total(&after, "multinode_mesh_sends_refused_full_total"),
        0.0
    );
    assert!(after.contains_key("multinode_mesh_queued"), "{after:?}");
}
