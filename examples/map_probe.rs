//! A fixture for `tests/map.rs`: 4 nodes sharing a `multinode::map::Map<String,
//! String>`. Not an example to copy; see `examples/sessions`.
//!
//! Every answer starts `node {id} generation {g}: `, then:
//! - `GET /` : `keys {n} digest {d}` (a hash of the sorted live entries);
//! - `GET /put?key=K&value=V[&ttl_ms=T][&pad=N]`: writes K (V padded with N
//!   `x`), `ok`, or the error with 413 (too large) or 507 (full);
//! - `GET /get?key=K`: the value, or 404.
//!
//! Each node logs `map of {n} keys; probe up: node {id} generation {g} pid
//! {pid}` once its map holds its snapshot, then:
//! - `MAP_WRITES=n`: writes n random values and removals over 64 keys, at
//!   once on every node, and logs `node {id} wrote {n}`;
//! - `MAP_FILL=n`: node 0 writes `fill0`..`fill{n-1}` and logs `node 0 filled {n}`;
//! - `MAP_MAX_FRAME=n`, `MAP_MAX_ENTRIES=n`: the map's bounds.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use multinode::map::{Map, MapError, Options};
use multinode::Nodes;
use tracing::info;

fn env(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.parse().ok()
}

#[multinode::main(port = 0, nodes = 4, balance = "reuse_port")]
async fn main(mut nodes: Nodes) -> std::io::Result<()> {
    let (id, generation) = (nodes.id(), nodes.generation());
    let mut options = Options::new();
    if let Some(max) = env("MAP_MAX_FRAME") {
        options = options.mesh(multinode::mesh::Options::new().max_frame_len(max));
    }
    if let Some(max) = env("MAP_MAX_ENTRIES") {
        options = options.max_entries(max);
    }
    let map: Map<String, String> = nodes.take_map(options).await.expect("taken once");
    let (keys, pid) = (map.len(), std::process::id());
    info!("map of {keys} keys; probe up: node {id} generation {generation} pid {pid}");
    if let Some(n) = env("MAP_WRITES") {
        tokio::spawn(write_randomly(map.clone(), id, n));
    }
    if let (Some(n), 0) = (env("MAP_FILL"), id) {
        for k in 0..n {
            map.insert(format!("fill{k}"), format!("value {k}"))
                .await
                .unwrap();
        }
        info!("node 0 filled {n}");
    }
    let who = format!("node {id} generation {generation}: ");
    let app = Router::new()
        .route(
            "/",
            get({
                let (map, who) = (map.clone(), who.clone());
                move || async move { format!("{who}keys {} digest {}", map.len(), digest(&map)) }
            }),
        )
        .route(
            "/put",
            get({
                let (map, who) = (map.clone(), who.clone());
                move |Query(q): Query<HashMap<String, String>>| async move {
                    let pad = q.get("pad").and_then(|p| p.parse().ok()).unwrap_or(0);
                    let value = format!(
                        "{}{}",
                        q.get("value").cloned().unwrap_or_default(),
                        "x".repeat(pad)
                    );
                    let key = q.get("key").cloned().unwrap_or_default();
                    let written = match q.get("ttl_ms").and_then(|t| t.parse().ok()) {
                        Some(ms) => map.insert_for(key, value, Duration::from_millis(ms)).await,
                        None => map.insert(key, value).await,
                    };
                    match written {
                        Ok(()) => (StatusCode::OK, format!("{who}ok")),
                        Err(e @ MapError::Full { .. }) => {
                            (StatusCode::INSUFFICIENT_STORAGE, format!("{who}{e}"))
                        }
                        Err(e) => (StatusCode::PAYLOAD_TOO_LARGE, format!("{who}{e}")),
                    }
                }
            }),
        )
        .route(
            "/get",
            get(move |Query(q): Query<HashMap<String, String>>| async move {
                match map.get(q.get("key").map_or("", String::as_str)) {
                    Some(value) => (StatusCode::OK, format!("{who}{value}")),
                    None => (StatusCode::NOT_FOUND, format!("{who}none")),
                }
            }),
        );
    multinode::http::serve(nodes, app).await
}

/// A hash of the live entries in key order: equal copies, equal digests.
fn digest(map: &Map<String, String>) -> u64 {
    let mut entries = map.entries();
    entries.sort();
    entries.iter().fold(0xcbf2_9ce4_8422_2325, |hash, (k, v)| {
        let bytes = k.bytes().chain([0]).chain(v.bytes()).chain([1]);
        bytes.fold(hash, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    })
}

/// `n` writes over 64 keys, one in five a removal, yielding between them so
/// that every node's writes interleave.
async fn write_randomly(map: Map<String, String>, id: usize, n: usize) {
    let mut state = (std::process::id() as u64) << 16 | id as u64 | 1;
    for i in 0..n {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let key = format!("k{}", state % 64);
        if state % 5 == 4 {
            map.remove(&key).await.unwrap();
        } else {
            map.insert(key, format!("{id}.{i}")).await.unwrap();
        }
        tokio::task::yield_now().await;
    }
    info!("node {id} wrote {n}");
}
