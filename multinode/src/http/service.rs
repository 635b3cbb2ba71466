//! What `serve` takes, as it is: a hyper service (`hyper::service::service_fn`)
//! or a tower one (an axum `Router`, or anything built with tower).

use hyper::Request;
use hyper_util::service::TowerToHyperService;

use super::body::Body;

/// A service that [`serve`](super::serve) and [`Server::new`](super::Server::new)
/// take: every `hyper::service::Service<Request<Body>>`, and every
/// `tower::Service<Request<Body>>` that is `Clone`, such as an axum `Router`.
/// `Marker` is [`Hyper`] or [`Tower`], and Rust infers it: there is nothing to
/// write.
///
/// ```no_run
/// #[multinode::main(nodes = 2)]
/// async fn main(nodes: multinode::Nodes) -> std::io::Result<()> {
///     let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi\n" }));
///     multinode::http::serve(nodes, app).await
/// }
/// ```
pub trait IntoService<Marker> {
    /// The hyper service it becomes.
    type Service;

    /// Makes it a hyper service.
    ///
    /// ```
    /// use multinode::http::{Body, IntoService};
    /// let service = hyper::service::service_fn(|_: hyper::Request<Body>| async {
    ///     Ok::<_, std::convert::Infallible>(hyper::Response::new(String::from("hi")))
    /// });
    /// let _hyper_service = service.into_service();
    /// ```
    fn into_service(self) -> Self::Service;
}

/// The [`IntoService`] marker of hyper services: they are served as they are.
///
/// ```
/// fn hyper_service<S: multinode::http::IntoService<multinode::http::Hyper>>(_: S) {}
/// hyper_service(hyper::service::service_fn(|_: hyper::Request<multinode::http::Body>| async {
///     Ok::<_, std::convert::Infallible>(hyper::Response::new(String::new()))
/// }));
/// ```
#[derive(Debug)]
pub enum Hyper {}

/// The [`IntoService`] marker of tower services: each request is served by a
/// clone of the service, once it is ready (hyper-util's `TowerToHyperService`).
///
/// ```
/// fn tower_service<S: multinode::http::IntoService<multinode::http::Tower>>(_: S) {}
/// tower_service(axum::Router::new());
/// ```
#[derive(Debug)]
pub enum Tower {}

impl<S> IntoService<Hyper> for S
where
    S: hyper::service::Service<Request<Body>>,
{
    type Service = S;

    fn into_service(self) -> S {
        self
    }
}

impl<S> IntoService<Tower> for S
where
    S: tower_service::Service<Request<Body>> + Clone,
{
    type Service = TowerToHyperService<S>;

    fn into_service(self) -> Self::Service {
        TowerToHyperService::new(self)
    }
}
