//! Sessions in memory, shared by every process: an axum app with a login form,
//! a session cookie and a per-session counter, served by 4 nodes. Any node
//! serves any session, and a node that crashes (even SIGKILL) loses none: the
//! sessions live in a `multinode::map::Map`, which every node holds, and a
//! restarted node takes a snapshot from the others before it serves.
//!
//! ```text
//! cargo run --example sessions
//! open http://127.0.0.1:3000/        # log in, count, log out
//! pkill -KILL -f 'sessions' -n       # the newest worker: your session stays
//! ```
//!
//! `SESSIONS_STORE=local` keeps the sessions in one `Mutex<HashMap>` of the
//! process instead (right with `MULTINODE_NODES=1` only): the benchmark's
//! reference (`bench/sessions.py`).

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, State};
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use multinode::map::{Map, Options};
use multinode::Nodes;
use serde::{Deserialize, Serialize};

/// What a session holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Session {
    user: String,
    count: u64,
}

/// Where the sessions are kept.
#[derive(Clone)]
enum Store {
    /// Every node's copy of one map.
    Shared(Map<String, Session>),
    /// This process alone: the benchmark's reference.
    Local(Arc<Mutex<HashMap<String, Session>>>),
}

impl Store {
    fn get(&self, id: &str) -> Option<Session> {
        match self {
            Store::Shared(map) => map.get(id),
            Store::Local(map) => map.lock().unwrap().get(id).cloned(),
        }
    }

    async fn put(&self, id: String, session: Session) -> Result<(), String> {
        match self {
            Store::Shared(map) => map.insert(id, session).await.map_err(|e| e.to_string()),
            Store::Local(map) => {
                map.lock().unwrap().insert(id, session);
                Ok(())
            }
        }
    }

    async fn remove(&self, id: &str) {
        match self {
            Store::Shared(map) => {
                let _ = map.remove(id).await; // a removal is never too large
            }
            Store::Local(map) => {
                map.lock().unwrap().remove(id);
            }
        }
    }
}

#[derive(Clone)]
struct App {
    store: Store,
    node: usize,
}

/// A session lives 30 minutes after its last write.
const SESSION_TTL: Duration = Duration::from_secs(30 * 60);

#[multinode::main(port = 3000, nodes = 4)]
async fn main(mut nodes: Nodes) -> std::io::Result<()> {
    let store = match std::env::var("SESSIONS_STORE").as_deref() {
        Ok("local") => Store::Local(Arc::default()),
        _ => {
            let options = Options::new().ttl(SESSION_TTL).max_entries(1_000_000);
            // Resolves once this node holds every session the others hold.
            Store::Shared(nodes.take_map(options).await.expect("taken once"))
        }
    };
    let app = App {
        store,
        node: nodes.id(),
    };
    let router = Router::new()
        .route("/", get(page))
        .route("/login", post(login))
        .route("/count", post(count))
        .route("/logout", post(logout))
        .route("/api/session", get(api))
        .with_state(app);
    multinode::http::serve(nodes, router).await
}

/// The `sid` cookie's value.
fn session_id(headers: &HeaderMap) -> Option<String> {
    let cookies = headers.get(COOKIE)?.to_str().ok()?;
    cookies.split(';').find_map(|c| {
        let value = c.trim().strip_prefix("sid=")?;
        Some(value.to_owned())
    })
}

fn current(app: &App, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = session_id(headers)?;
    let session = app.store.get(&id)?;
    Some((id, session))
}

/// 128 random bits from the kernel, in hex: a session id nobody guesses.
fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn back_home(cookie: Option<String>) -> Response {
    let mut response = (StatusCode::SEE_OTHER, [(LOCATION, "/")]).into_response();
    if let Some(cookie) = cookie {
        response
            .headers_mut()
            .insert(SET_COOKIE, cookie.parse().expect("a valid cookie"));
    }
    response
}

async fn page(State(app): State<App>, headers: HeaderMap) -> Html<String> {
    let node = app.node;
    let body = match current(&app, &headers) {
        Some((_, session)) => format!(
            r#"<p>Hello, <b id="user">{user}</b>. You counted <b id="count">{count}</b> times.</p>
<form method="post" action="/count"><button id="add">Count</button></form>
<form method="post" action="/logout"><button id="logout">Log out</button></form>"#,
            user = escape(&session.user),
            count = session.count
        ),
        None => r#"<form method="post" action="/login">
<label>Name <input id="name" name="user" autofocus></label> <button id="login">Log in</button>
</form>"#
            .to_owned(),
    };
    Html(format!(
        r#"<!doctype html><meta charset="utf-8"><title>multinode sessions</title>
<h1>Sessions</h1>{body}<p><small>Served by node <span id="node">{node}</span>, process <span id="pid">{pid}</span>.</small></p>"#,
        pid = std::process::id()
    ))
}

#[derive(Deserialize)]
struct Login {
    user: String,
}

async fn login(State(app): State<App>, Form(form): Form<Login>) -> Response {
    let user = form.user.trim();
    if user.is_empty() || user.len() > 64 {
        return (StatusCode::BAD_REQUEST, "a name of 1 to 64 bytes, please\n").into_response();
    }
    let id = new_session_id();
    let session = Session {
        user: user.to_owned(),
        count: 0,
    };
    if let Err(error) = app.store.put(id.clone(), session).await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")).into_response();
    }
    back_home(Some(format!(
        "sid={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
        SESSION_TTL.as_secs()
    )))
}

/// One more on the session's counter. Two counts of one session on two
/// nodes at the same instant keep one: the map keeps the later write.
async fn count(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Some((id, mut session)) = current(&app, &headers) {
        session.count += 1;
        if let Err(error) = app.store.put(id, session).await {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")).into_response();
        }
    }
    back_home(None)
}

async fn logout(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        app.store.remove(&id).await;
    }
    back_home(Some("sid=; Path=/; Max-Age=0".to_owned()))
}

#[derive(Serialize)]
struct Seen {
    node: usize,
    pid: u32,
    user: Option<String>,
    count: Option<u64>,
}

/// The session as JSON, and the node that answered.
async fn api(State(app): State<App>, headers: HeaderMap) -> Json<Seen> {
    let session = current(&app, &headers).map(|(_, s)| s);
    Json(Seen {
        node: app.node,
        pid: std::process::id(),
        user: session.as_ref().map(|s| s.user.clone()),
        count: session.map(|s| s.count),
    })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
