//! The roles a process can have: the master (the process the user started) or
//! a worker (re-executed by the master, with a control socket). `Builder::run`
//! tells which this process is and runs it.

use std::future::Future;
use std::time::Instant;

use crate::config::Builder;
use crate::nodes::Nodes;

mod environment;
mod logging;
mod main_result;
mod master;
mod start_error;
mod worker;

pub use main_result::MainResult;

impl Builder {
    /// Starts the program: in the process the user started, binds the port and
    /// starts the workers, then runs `body` in every process with its [`Nodes`].
    /// Never returns: the process exits with 0, or non-zero on an error (2 for bad
    /// configuration, 1 for an `Err` returned by `body` or a failed start).
    ///
    /// ```no_run
    /// multinode::Builder::new().nodes(2).run(|nodes: multinode::Nodes| async move {
    ///     nodes.shutdown().await;
    /// })
    /// ```
    pub fn run<F, Fut>(self, body: F) -> !
    where
        F: FnOnce(Nodes) -> Fut,
        Fut: Future,
        Fut::Output: MainResult,
    {
        let started = Instant::now();
        logging::init_tracing(self.logging);
        crate::limits::raise_nofile();
        let code = match environment::take_worker_env() {
            Ok(None) => {
                // Before anything is taken from the environment: the master, PID 1's
                // child, takes it.
                crate::init::serve_as_init_if_pid_1();
                environment::take_master_env()
                    .and_then(|taken| master::run_master(&self, body, started, taken))
            }
            Ok(Some((slot, control))) => crate::supervisor::signals::leave_to_the_master()
                .map_err(|e| start_error::StartError::system("cannot set the signals", e))
                .and_then(|()| worker::run_worker(&self, slot, control, body)),
            Err(error) => Err(error),
        };
        std::process::exit(code.unwrap_or_else(|error| {
            eprintln!("multinode: {error}");
            error.exit_code()
        }))
    }
}
