//! examples/sessions from outside: a session made on one node is served by
//! every node, counts made anywhere are seen everywhere, and a worker
//! SIGKILLed loses no session, over raw HTTP and in headless Chromium.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{browser, poll, Program};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(20);

/// One request on a fresh connection: (status, head, body).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: &str,
    body: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (status, head.to_owned(), body.to_owned())
}

/// Logs in as `user`: the cookie to send back.
fn login(addr: SocketAddr, user: &str) -> String {
    let (status, head, body) = request(addr, "POST", "/login", "", &format!("user={user}"));
    assert_eq!(status, 303, "{head}\n{body}");
    let line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie: sid="))
        .unwrap_or_else(|| panic!("no session cookie: {head}"));
    line["set-cookie: ".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// `/api/session` on fresh connections until each of the 4 nodes answered:
/// node → (pid, user, count).
fn from_every_node(
    addr: SocketAddr,
    cookie: &str,
) -> BTreeMap<u64, (u64, serde_json::Value, serde_json::Value)> {
    let mut seen = BTreeMap::new();
    let all = poll(WAIT, || {
        let (status, _, body) = request(addr, "GET", "/api/session", cookie, "");
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        let node = json["node"].as_u64().unwrap();
        let pid = json["pid"].as_u64().unwrap();
        seen.insert(node, (pid, json["user"].clone(), json["count"].clone()));
        (seen.len() == 4).then_some(())
    });
    assert!(all.is_some(), "not every node answered: {seen:?}");
    seen
}

/// Waits until every node serves `cookie`'s session as `user` with `count`.
fn everywhere(addr: SocketAddr, cookie: &str, user: &str, count: u64) -> BTreeMap<u64, u64> {
    let mut last = BTreeMap::new();
    let agreed = poll(WAIT, || {
        last = from_every_node(addr, cookie);
        last.values()
            .all(|(_, u, c)| u == user && *c == count)
            .then(|| {
                last.iter()
                    .map(|(node, (pid, _, _))| (*node, *pid))
                    .collect()
            })
    });
    agreed.unwrap_or_else(|| panic!("not every node serves {user} with {count}: {last:?}"))
}

#[test]
fn any_node_serves_any_session_and_a_killed_worker_loses_none() {
    // reuse_port: fresh connections spread over the nodes by hash.
    let program = Program::start("sessions", &[("MULTINODE_BALANCE", "reuse_port")]);
    let addr = program.ready();
    let cookie = login(addr, "ann");
    let other = login(addr, "bob");
    everywhere(addr, &cookie, "ann", 0);
    for n in 1..=3 {
        let (status, _, body) = request(addr, "POST", "/count", &cookie, "");
        assert_eq!(status, 303, "{body}");
        everywhere(addr, &cookie, "ann", n);
    }
    let pids = everywhere(addr, &other, "bob", 0);
    let victim = pids[&2];
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    let after = everywhere(addr, &cookie, "ann", 3);
    assert_ne!(after[&2], victim, "node 2 answered from a new process");
    everywhere(addr, &other, "bob", 0);
    // Logged out on one node: gone on every node.
    let (status, _, _) = request(addr, "POST", "/logout", &cookie, "");
    assert_eq!(status, 303);
    let gone = poll(WAIT, || {
        from_every_node(addr, &cookie)
            .values()
            .all(|(_, user, _)| user.is_null())
            .then_some(())
    });
    assert!(gone.is_some(), "a logged-out session is still served");
}

/// A browser whose page is served by a worker, so that killing that worker
/// makes the browser go to another node: a new browser (a new connection)
/// until the kernel's hash puts it on one.
fn browser_on_a_worker(
    program: &Program,
    url: &str,
) -> Option<(
    headless_chrome::Browser,
    std::sync::Arc<headless_chrome::Tab>,
)> {
    for _ in 0..20 {
        let browser = browser::launch()?;
        let tab = browser.new_tab().unwrap();
        tab.navigate_to(url)
            .unwrap()
            .wait_until_navigated()
            .unwrap();
        let pid: u32 = tab
            .wait_for_element("#pid")
            .unwrap()
            .get_inner_text()
            .unwrap()
            .parse()
            .unwrap();
        if pid != program.pid() {
            return Some((browser, tab));
        }
    }
    panic!("20 browsers in a row were served by the master");
}

#[test]
fn a_browser_session_survives_its_node_being_killed() {
    let program = Program::start("sessions", &[("MULTINODE_BALANCE", "reuse_port")]);
    let url = format!("http://{}/", program.ready());
    let Some((_browser, tab)) = browser_on_a_worker(&program, &url) else {
        return;
    };
    tab.wait_for_element("#name").unwrap().click().unwrap();
    tab.type_str("carol").unwrap();
    tab.wait_for_element("#login").unwrap().click().unwrap();
    let text = |selector: &str| {
        tab.wait_for_element_with_custom_timeout(selector, WAIT)
            .unwrap()
            .get_inner_text()
            .unwrap()
    };
    assert_eq!(text("#user"), "carol");
    for n in 1..=3 {
        tab.wait_for_element("#add").unwrap().click().unwrap();
        let counted = poll(WAIT, || (text("#count") == n.to_string()).then_some(()));
        assert!(counted.is_some(), "the page shows count {n}");
    }
    // The worker that served the page (its keep-alive connection) dies: the
    // browser's next request goes to another node.
    let victim: u32 = text("#pid").parse().unwrap();
    assert_ne!(victim, program.pid());
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    let survived = poll(WAIT, || {
        tab.navigate_to(&url).ok()?.wait_until_navigated().ok()?;
        let pid: u32 = text("#pid").parse().ok()?;
        (pid != victim).then_some(())
    });
    assert!(survived.is_some(), "the browser found no other node");
    assert_eq!(
        text("#user"),
        "carol",
        "the session did not survive the kill"
    );
    assert_eq!(text("#count"), "3");
    tab.wait_for_element("#add").unwrap().click().unwrap();
    let counted = poll(WAIT, || (text("#count") == "4").then_some(()));
    assert!(counted.is_some(), "the page counts on after the kill");
    browser::screenshot(&tab, "sessions.png");
}
