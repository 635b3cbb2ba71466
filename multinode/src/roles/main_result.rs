//! What `main`'s body may return, and how a worker tells the master why it
//! failed before it could start.

use std::fmt::Debug;
use std::sync::Arc;

use crate::control::{ControlSocket, ToMaster};

/// What `main`'s body may return: `()`, or `Result<(), E>` with `E: Debug`. An
/// `Err` is logged and makes the process exit with code 1.
///
/// ```
/// use multinode::MainResult;
/// assert_eq!(().exit_code(), 0);
/// assert_eq!(Err::<(), _>("boom").exit_code(), 1);
/// ```
#[diagnostic::on_unimplemented(
    message = "`main` must return `()` or `Result<(), E>` where `E: Debug`",
    label = "this return type"
)]
pub trait MainResult {
    /// The process exit code for this value; reports an error on the way.
    fn exit_code(self) -> i32;
}

impl MainResult for () {
    fn exit_code(self) -> i32 {
        0
    }
}

impl<E: Debug> MainResult for Result<(), E> {
    fn exit_code(self) -> i32 {
        match self {
            Ok(()) => 0,
            Err(error) => {
                let reason = format!("main returned an error: {error:?}");
                tracing::error!("{reason}");
                report_failure(&reason);
                1
            }
        }
    }
}

/// A worker's control socket, for reports that cannot wait for the runtime (a
/// panic). Never dropped, so its descriptor stays this socket's until exit.
pub(super) static CONTROL: std::sync::OnceLock<Arc<ControlSocket>> = std::sync::OnceLock::new();

/// Tells the master why this worker is about to fail, so that it can name the
/// reason if the worker never manages to start. Nothing in the master.
pub(super) fn report_failure(reason: &str) {
    if let Some(control) = CONTROL.get() {
        // Within a control packet, whatever the reason's length.
        let reason: String = reason.chars().take(2000).collect();
        control.send_now(&ToMaster::Failed { reason });
    }
}
