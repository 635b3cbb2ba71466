//! A chat room served by four processes: a message posted to any of them reaches
//! every browser connected to any of them, over the mesh.
//!
//! ```text
//! cargo run --example chat
//! # open http://127.0.0.1:8000/ in two browsers; each shows the node it is connected through
//! curl -N http://127.0.0.1:8000/events                         # the stream, as JSON lines
//! curl -d '{"user":"ann","text":"hi"}' -H 'content-type: application/json' \
//!      http://127.0.0.1:8000/messages                          # 202, and everyone sees it
//! ```

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::{stream, Stream, StreamExt};
use multinode::Nodes;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Limits on what a client may send.
const MAX_TEXT: usize = 4096;
const MAX_NAME: usize = 64;
const MAX_BODY: usize = 16 * 1024;
/// How many messages a browser may fall behind before it is dropped (it
/// reconnects by itself).
const BACKLOG: usize = 256;

/// One chat message, as it crosses the mesh and as each browser gets it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Message {
    user: String,
    text: String,
    /// The node the message was posted through.
    node: usize,
    /// Milliseconds since the Unix epoch.
    at: u64,
}

/// What `POST /messages` takes.
#[derive(Deserialize)]
struct Post {
    user: String,
    text: String,
}

/// What every request handler of this node shares.
#[derive(Clone)]
struct Room {
    node: usize,
    /// To the other nodes.
    mesh: multinode::mesh::Sender<Message>,
    /// To this node's browsers.
    local: broadcast::Sender<Message>,
    /// Ends the event streams when this node stops, so that it can drain.
    stopping: CancellationToken,
}

#[multinode::main(port = 8000, nodes = 4)]
async fn main(mut nodes: Nodes) -> std::io::Result<()> {
    let (mesh, mut from_other_nodes) = nodes.take_messages::<Message>().expect("taken once");
    let (local, _) = broadcast::channel(BACKLOG);
    // A message posted on another node goes to this node's browsers too.
    let to_browsers = local.clone();
    tokio::spawn(async move {
        while let Some((_node, message)) = from_other_nodes.recv().await {
            let _ = to_browsers.send(message);
        }
    });
    let stopping = CancellationToken::new();
    let shutdown = nodes.shutdown();
    let stop = stopping.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop.cancel();
    });
    let node = nodes.id();
    let room = Room {
        node,
        mesh,
        local,
        stopping,
    };
    let app = Router::new()
        .route("/", get(Html(include_str!("page.html"))))
        .route("/events", get(events))
        .route("/messages", axum::routing::post(post_message))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(
            move |mut response: Response| async move {
                // Which process answered: users can see the spread.
                response
                    .headers_mut()
                    .insert("x-multinode-node", HeaderValue::from(node));
                response
            },
        ))
        .with_state(room);
    let service = hyper_util::service::TowerToHyperService::new(app);
    multinode::http::serve(nodes, service).await
}

/// `GET /events`: a `welcome` event naming this node, then one event per message,
/// as JSON; comments keep idle proxies from closing it.
async fn events(State(room): State<Room>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let welcome = Event::default()
        .event("welcome")
        .data(format!("{{\"node\":{}}}", room.node));
    let messages = stream::unfold(room.local.subscribe(), |mut receiver| async move {
        // A browser too far behind (Lagged) is dropped here, not buffered.
        let message = receiver.recv().await.ok()?;
        let event = Event::default().json_data(&message).ok()?;
        Some((event, receiver))
    });
    let stream = stream::once(async { welcome })
        .chain(messages)
        .map(Ok)
        .take_until(room.stopping.cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// `POST /messages`: checks the message, shows it to this node's browsers and
/// broadcasts it to every other node. 202 Accepted, or a 4xx saying what is wrong.
async fn post_message(
    State(room): State<Room>,
    body: Result<Json<Post>, JsonRejection>,
) -> Result<StatusCode, (StatusCode, String)> {
    let Json(post) = body.map_err(|rejected| (rejected.status(), rejected.body_text()))?;
    let invalid = |why: &str| Err((StatusCode::UNPROCESSABLE_ENTITY, why.to_owned()));
    let user = post.user.trim();
    if user.is_empty() {
        return invalid("`user` must not be empty");
    }
    if user.len() > MAX_NAME {
        return invalid(&format!("`user` is over {MAX_NAME} bytes"));
    }
    if post.text.trim().is_empty() {
        return invalid("`text` must not be empty");
    }
    if post.text.len() > MAX_TEXT {
        return invalid(&format!("`text` is over {MAX_TEXT} bytes"));
    }
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let message = Message {
        user: user.to_owned(),
        text: post.text,
        node: room.node,
        at,
    };
    let _ = room.local.send(message.clone());
    room.mesh
        .broadcast(&message)
        .await
        .map_err(|error| (StatusCode::SERVICE_UNAVAILABLE, error.to_string()))?;
    Ok(StatusCode::ACCEPTED)
}
