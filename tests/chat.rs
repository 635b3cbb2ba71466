//! examples/chat, seen from outside: Server-Sent Events from every node, a
//! message posted once reaching each stream once, bad input, a client that stops
//! reading, and two real browser pages (headless Chromium) on different nodes.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{browser, get, Program};

/// One `GET /events` stream: the node that serves it, and its lines.
struct Events {
    node: usize,
    reader: BufReader<TcpStream>,
}

impl Events {
    fn open(addr: SocketAddr) -> Events {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(stream, "GET /events HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        let mut reader = BufReader::new(stream);
        let mut node = None;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end().to_ascii_lowercase();
            if line.is_empty() {
                break;
            }
            if let Some(value) = line.strip_prefix("x-multinode-node:") {
                node = value.trim().parse().ok();
            }
        }
        Events {
            node: node.expect("every response names its node"),
            reader,
        }
    }

    /// The next chat message's JSON (the `welcome` event and comments skipped);
    /// `None` at the end of the stream.
    fn next_message(&mut self) -> Option<String> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if let Some(data) = line.trim_end().strip_prefix("data: ") {
                if data.contains("\"user\"") {
                    return Some(data.to_owned());
                }
            }
        }
    }
}

/// `POST /messages` with `body` as JSON: (status, body).
fn post(addr: SocketAddr, body: &str) -> (u16, String) {
    post_as(addr, "application/json", body)
}

fn post_as(addr: SocketAddr, content_type: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST /messages HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response); // a refused body may reset
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let text = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, text)
}

/// Event streams until every one of `nodes` serves at least one.
fn streams_on_every_node(addr: SocketAddr, nodes: usize) -> Vec<Events> {
    let mut streams: Vec<Events> = Vec::new();
    for _ in 0..40 {
        streams.push(Events::open(addr));
        let covered: std::collections::BTreeSet<usize> = streams.iter().map(|s| s.node).collect();
        if covered.len() == nodes {
            return streams;
        }
    }
    panic!("40 event streams did not cover {nodes} nodes");
}

#[test]
fn a_message_posted_once_reaches_every_stream_on_every_node_once() {
    let program = Program::start("chat", &[]);
    let addr = program.ready();
    let mut streams = streams_on_every_node(addr, 4);
    let mut per_node = BTreeMap::new();
    for (user, text) in [("ann", "first"), ("bob", "second")] {
        let (status, body) = post(addr, &format!(r#"{{"user":"{user}","text":"{text}"}}"#));
        assert_eq!(status, 202, "{body}");
        // Every stream's next message is this one: the one before came once.
        for stream in &mut streams {
            let message = stream.next_message().expect("the message");
            let expected = format!(r#""text":"{text}""#);
            assert!(
                message.contains(&expected),
                "node {}: {message}",
                stream.node
            );
            *per_node.entry(stream.node).or_insert(0) += 1;
        }
    }
    assert_eq!(per_node.len(), 4, "{per_node:?}");
}

#[test]
fn bad_input_gets_a_clear_4xx_and_the_server_keeps_serving() {
    let program = Program::start("chat", &[]);
    let addr = program.ready();
    let long_text = "x".repeat(4097);
    let huge_body = format!(r#"{{"user":"ann","text":"{}"}}"#, "y".repeat(20_000));
    let cases = [
        ("not json", "{oops".to_owned(), 400, "JSON"),
        (
            "a missing field",
            r#"{"user":"ann"}"#.to_owned(),
            422,
            "missing field `text`",
        ),
        (
            "an empty name",
            r#"{"user":"  ","text":"hi"}"#.to_owned(),
            422,
            "`user` must not be empty",
        ),
        (
            "an empty text",
            r#"{"user":"ann","text":""}"#.to_owned(),
            422,
            "`text` must not be empty",
        ),
        (
            "a text over 4 KiB",
            format!(r#"{{"user":"ann","text":"{long_text}"}}"#),
            422,
            "over 4096 bytes",
        ),
        ("a body over the limit", huge_body, 413, ""),
    ];
    for (what, body, status, says) in cases {
        let (got, text) = post(addr, &body);
        assert_eq!(got, status, "{what}: {text}");
        assert!(text.contains(says), "{what}: {text:?} should say {says:?}");
    }
    let (got, _) = post_as(addr, "text/plain", r#"{"user":"ann","text":"hi"}"#);
    assert_eq!(got, 415, "not JSON by its content type");
    assert_eq!(get(addr, "/").unwrap().0, 200);
    assert_eq!(post(addr, r#"{"user":"ann","text":"still here"}"#).0, 202);
    assert_eq!(program.count("node exited"), 0, "no node died");
}

#[test]
fn a_client_that_stops_reading_is_dropped_not_buffered() {
    let program = Program::start("chat", &[("MULTINODE_NODES", "2")]);
    let addr = program.ready();
    let mut stalled = Events::open(addr);
    // 1 500 messages of 4 KiB (6 MB): far more than the socket buffers and the
    // 256 a browser may fall behind.
    let text = "z".repeat(4000);
    for n in 0..1500 {
        let (status, body) = post(addr, &format!(r#"{{"user":"u{n}","text":"{text}"}}"#));
        assert_eq!(status, 202, "{body}");
    }
    let mut received = 0;
    while stalled.next_message().is_some() {
        received += 1;
        assert!(
            received < 1500,
            "the stalled client got everything: it was buffered"
        );
    }
    assert!(
        received > 0,
        "it got what fitted in the buffers, then the end"
    );
    // Another client still gets new messages.
    let mut fresh = Events::open(addr);
    assert_eq!(post(addr, r#"{"user":"ann","text":"after"}"#).0, 202);
    assert!(fresh.next_message().unwrap().contains("after"));
}

#[test]
fn two_browser_pages_on_different_nodes_chat() {
    let Some(browser) = browser::launch() else {
        return;
    };
    let program = Program::start("chat", &[]);
    let url = format!("http://{}/", program.ready());
    let a = browser.new_tab().unwrap();
    let a_node = browser::open_chat(&a, &url);
    let b = browser.new_tab().unwrap();
    let mut b_node = browser::open_chat(&b, &url);
    for _ in 0..10 {
        if b_node != a_node {
            break;
        }
        b_node = browser::open_chat(&b, &url); // a new event stream, most likely to another node
    }
    assert_ne!(
        a_node, b_node,
        "the two pages' event streams are on different nodes"
    );

    let text = "hello from A <b>not bold</b>";
    browser::post_in_page(&a, "alice", text);
    let shown = browser::first_message(&b);
    assert!(shown.contains("alice") && shown.contains(text), "{shown:?}");
    let injected = b
        .evaluate("document.querySelectorAll('#messages b').length", false)
        .unwrap()
        .value
        .unwrap();
    assert_eq!(
        injected,
        serde_json::json!(0),
        "text is shown as text, never as HTML"
    );
    browser::screenshot(&a, "chat-a.png");
    browser::screenshot(&b, "chat-b.png");
}
