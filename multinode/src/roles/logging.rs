//! The log: multinode's subscriber, or the program's own.

use std::io::IsTerminal;

/// Installs the log's subscriber: the program's own (run first in every
/// process), or multinode's unless one is set already: stderr, filtered by
/// `RUST_LOG` (`info` by default): a level, or `target=level` pairs such as
/// `info,multinode=debug` (tracing-subscriber's `Targets`, which needs no regex
/// engine in every process).
pub(super) fn init_tracing(logging: crate::config::Logging) {
    if let crate::config::Logging::Own(install) = logging {
        return install();
    }
    if tracing::dispatcher::has_been_set() {
        return;
    }
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let info = Targets::new().with_default(LevelFilter::INFO);
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) => value.parse().unwrap_or_else(|error| {
            eprintln!(
                "multinode: RUST_LOG={value:?} is not a log filter ({error}); logging at info"
            );
            info
        }),
        Err(_) => info,
    };
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init();
}
