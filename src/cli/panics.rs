//! No panic text reaches a user: a panic (a bug, or a library's) is logged, and reported once as
//! an internal error naming where it happened, the way every other error is reported.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);
static LAST: Mutex<Option<String>> = Mutex::new(None);

/// Replaces the default panic hook (which prints `thread '...' panicked at ...` to stderr) with
/// one that keeps the panic for [`last`] and logs it at debug level (`RUST_LOG=debug`). A panic
/// in a task surfaces as that task's error; one on the main thread is reported by the binary.
pub fn quiet() {
    std::panic::set_hook(Box::new(|info| {
        if SHUTTING_DOWN.load(Ordering::SeqCst) {
            return;
        }
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let text = format!("{message}{at}");
        tracing::debug!(panic = %text, "a thread panicked");
        if let Ok(mut last) = LAST.lock() {
            *last = Some(text);
        }
    }));
}

/// From now on panics are not even logged: the work is done and the runtime shuts down (its
/// remaining tasks may panic on the closed runtime).
pub fn shutting_down() {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
}

/// The last panic seen, as text for an internal error.
pub fn last() -> String {
    let last = LAST.lock().ok().and_then(|l| l.clone());
    format!("panicked: {}", last.unwrap_or_else(|| "no message".into()))
}
