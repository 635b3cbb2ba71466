//! The admin listener (`admin = "127.0.0.1:9100"`): `GET /metrics` in the
//! Prometheus text format, `GET /` a status page, and `GET /livez` and `GET
//! /readyz` for load balancers and orchestrators, served by a thread of the
//! master's own, so that it answers while every worker is busy or restarting,
//! and a storm of scrapes never delays supervision: at most a few connections
//! at once (the rest wait in the kernel's backlog), and each text rendered at
//! most once in a short while. Everything it shows is read from shared memory
//! (`board.rs`, the load table) and the supervisor's journal of lifecycle
//! events.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::shm::load_table::TABLE_SLOTS;
use crate::shm::segment::Segment;

mod health;
mod page;

/// How many lifecycle events the status page shows.
const JOURNAL: usize = 30;
/// The admin connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 8;
/// How long a rendered text is served again before it is rendered anew.
const FRESH: Duration = Duration::from_millis(100);

/// The master's recent lifecycle events (started, ready, exited, reload
/// steps), newest last.
#[derive(Clone, Default)]
pub(crate) struct Journal(Arc<Mutex<VecDeque<(SystemTime, String)>>>);

impl Journal {
    pub(crate) fn record(&self, event: String) {
        let mut events = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() == JOURNAL {
            events.pop_front();
        }
        events.push_back((SystemTime::now(), event));
    }

    fn events(&self) -> Vec<(SystemTime, String)> {
        let events = self.0.lock().unwrap_or_else(|e| e.into_inner());
        events.iter().cloned().collect()
    }
}

/// Requests per second of each slot, over the last second (sampled).
#[derive(Default)]
struct Rates {
    last: Vec<u64>,
    per_second: Vec<f64>,
}

/// The last text rendered for each page, and when.
#[derive(Default)]
struct Rendered {
    metrics: Option<(Instant, Bytes)>,
    page: Option<(Instant, Bytes)>,
}

/// `slot`'s text: the one rendered less than [`FRESH`] ago, or a new one.
fn cached(slot: &mut Option<(Instant, Bytes)>, render: impl FnOnce() -> String) -> Bytes {
    let now = Instant::now();
    match slot {
        Some((at, text)) if now.duration_since(*at) < FRESH => text.clone(),
        _ => {
            let text = Bytes::from(render());
            *slot = Some((now, text.clone()));
            text
        }
    }
}

/// Serves `listener` on a thread of its own, with a runtime of its own, for as
/// long as the process runs.
pub(crate) fn spawn(listener: TcpListener, shm: Arc<Segment>, journal: Journal) {
    let serving = move || match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(serve(listener, shm, journal)),
        Err(error) => tracing::error!("the admin listener: cannot start its runtime: {error}"),
    };
    let thread = std::thread::Builder::new().name("multinode-admin".into());
    if let Err(error) = thread.spawn(serving) {
        tracing::error!("the admin listener: cannot start its thread: {error}");
    }
}

/// Serves `listener` until the runtime ends.
async fn serve(listener: TcpListener, shm: Arc<Segment>, journal: Journal) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
    {
        Ok(listener) => listener,
        Err(error) => return tracing::error!("the admin listener: {error}"),
    };
    let rates = Arc::new(Mutex::new(Rates::default()));
    let rendered = Arc::new(Mutex::new(Rendered::default()));
    let room = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(sample(shm.clone(), rates.clone()));
    loop {
        let Ok(place) = room.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await; // out of descriptors
            continue;
        };
        let (shm, journal) = (shm.clone(), journal.clone());
        let (rates, rendered) = (rates.clone(), rendered.clone());
        let service = hyper::service::service_fn(move |request| {
            let answer = answer(&request, (&shm, &journal), (&rates, &rendered));
            async move { Ok::<_, Infallible>(answer) }
        });
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(60), connection).await;
            drop(place);
        });
    }
}

/// The requests each slot served in the last second, every second.
async fn sample(shm: Arc<Segment>, rates: Arc<Mutex<Rates>>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        // Only the slots that serve: the table has room for 1 025.
        let end = shm.table().serving_end().min(TABLE_SLOTS);
        let now: Vec<u64> = (0..end).map(|s| shm.table().totals(s).1).collect();
        let mut rates = rates.lock().unwrap_or_else(|e| e.into_inner());
        if rates.last.len() == now.len() {
            rates.per_second = now
                .iter()
                .zip(&rates.last)
                .map(|(n, l)| n.saturating_sub(*l) as f64)
                .collect();
        }
        rates.last = now;
    }
}

fn answer(
    request: &Request<hyper::body::Incoming>,
    (shm, journal): (&Segment, &Journal),
    (rates, rendered): (&Mutex<Rates>, &Mutex<Rendered>),
) -> Response<Full<Bytes>> {
    let mut rendered = rendered.lock().unwrap_or_else(|e| e.into_inner());
    let (status, kind, body) = match (request.method(), request.uri().path()) {
        (&hyper::Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            cached(&mut rendered.metrics, || crate::metrics::text(shm)),
        ),
        (&hyper::Method::GET, "/livez") => health::live(shm),
        (&hyper::Method::GET, "/readyz") => health::ready(shm),
        (&hyper::Method::GET, "/") => {
            let html = cached(&mut rendered.page, || {
                let rates = rates.lock().unwrap_or_else(|e| e.into_inner());
                page::render(shm, &rates.per_second, &journal.events())
            });
            (StatusCode::OK, "text/html; charset=utf-8", html)
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"not found: GET /metrics, /livez, /readyz or /\n"),
        ),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if let Ok(kind) = hyper::header::HeaderValue::from_str(kind) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, kind);
    }
    response
}
