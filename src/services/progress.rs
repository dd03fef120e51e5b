//! How long work says how far it is, without knowing where it is shown.
//!
//! Pre-training, a sweep's cells and (later) pipelines report through
//! [`Progress`]; the app hands down its one implementation (a bar
//! on a terminal, plain lines in logs: `app::reporter`), and tests and
//! libraries pass [`Silent`].

/// A source of progress tasks; cheap to share between threads.
pub trait Progress: Send + Sync {
    /// Begin a task of `total` `unit`s (e.g. 2000 "steps"), labelled `label`.
    fn start(&self, label: &str, unit: &str, total: u64) -> Box<dyn Task>;
}

/// One running task, advanced from any thread.
pub trait Task: Send + Sync {
    /// `n` more units done.
    fn inc(&self, n: u64);
    /// A short status shown next to the count (e.g. the running loss).
    fn set_message(&self, message: String);
    /// The work is over.
    fn finish(&self);
}

/// Shows nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _label: &str, _unit: &str, _total: u64) -> Box<dyn Task> {
        Box::new(Silent)
    }
}

impl Task for Silent {
    fn inc(&self, _n: u64) {}
    fn set_message(&self, _message: String) {}
    fn finish(&self) {}
}
