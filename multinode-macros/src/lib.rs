//! The `#[multinode::main]` attribute. Use it through the `multinode` crate, which
//! re-exports it; all behaviour lives there: this crate only parses and validates
//! the attribute and emits a call to `multinode::Builder`.

use proc_macro::TokenStream;

mod entry;

/// Turns `async fn main(nodes: multinode::Nodes)` into a multi-process server.
/// See `multinode::main` for the keys.
///
/// ```ignore
/// #[multinode::main(port = 8080, nodes = 4)]
/// async fn main(nodes: multinode::Nodes) {
///     nodes.shutdown().await;
/// }
/// ```
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::main(args.into(), item.into(), true).into()
}

/// The attribute as `multinode` re-exports it when built without its
/// `multi-thread` feature: `flavor = "multi_thread"` is then a compile error that
/// says how to turn the feature on (as tokio does for `rt-multi-thread`).
///
/// ```ignore
/// #[multinode::main(nodes = 2)]
/// async fn main(nodes: multinode::Nodes) {
///     nodes.shutdown().await;
/// }
/// ```
#[proc_macro_attribute]
pub fn main_without_multi_thread(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::main(args.into(), item.into(), false).into()
}
