//! The admin listener (`admin = "127.0.0.1:9100"`): `GET /metrics` in the
//! Prometheus text format and `GET /` a status page, served by the master's
//! supervision thread, so that it answers while every worker is busy or
//! restarting. Everything it shows is read from shared memory (`board.rs`,
//! the load table) and the supervisor's journal of lifecycle events.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::shm::load_table::TABLE_SLOTS;
use crate::shm::segment::Segment;

mod page;

/// How many lifecycle events the status page shows.
const JOURNAL: usize = 30;

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

/// Serves `listener` until the runtime ends.
pub(crate) async fn serve(listener: TcpListener, shm: Arc<Segment>, journal: Journal) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
    {
        Ok(listener) => listener,
        Err(error) => return tracing::error!("the admin listener: {error}"),
    };
    let rates = Arc::new(Mutex::new(Rates::default()));
    tokio::spawn(sample(shm.clone(), rates.clone()));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await; // out of descriptors
            continue;
        };
        let (shm, journal, rates) = (shm.clone(), journal.clone(), rates.clone());
        let service = hyper::service::service_fn(move |request| {
            let answer = answer(&request, &shm, &journal, &rates);
            async move { Ok::<_, Infallible>(answer) }
        });
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(60), connection).await;
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
    shm: &Segment,
    journal: &Journal,
    rates: &Mutex<Rates>,
) -> Response<Full<Bytes>> {
    let (status, kind, body) = match (request.method(), request.uri().path()) {
        (&hyper::Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            crate::metrics::text(shm),
        ),
        (&hyper::Method::GET, "/") => {
            let per_second = rates
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .per_second
                .clone();
            let html = page::render(shm, &per_second, &journal.events());
            (StatusCode::OK, "text/html; charset=utf-8", html)
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: GET /metrics or GET /\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(kind) = hyper::header::HeaderValue::from_str(kind) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, kind);
    }
    response
}
