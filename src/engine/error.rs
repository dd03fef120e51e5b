//! The engine's typed errors: every failure a caller may want to tell apart
//! (bad configuration, too little text, mismatched adapters or optimiser
//! state) has its own variant. The engine does no file or process IO of
//! its own: an audit log goes to a writer the caller hands it.

/// Everything the engine can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A text handed to training or evaluation is too short to predict anything.
    #[error("user `{user}` has no text in {what}: {hint}")]
    EmptyUser { user: String, what: String, hint: String },
    /// Bytes handed to the engine (adapter, weights) are malformed.
    #[error("malformed {what}: {detail}")]
    Malformed { what: String, detail: String },
    /// An unknown profile, trainable set or invalid model geometry.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An adapter saved against another base model, or of the wrong kind.
    #[error("adapter does not match: {0}")]
    AdapterMismatch(String),
    /// Saved optimiser state that cannot be used.
    #[error(transparent)]
    Optim(#[from] OptimStateError),
    /// The writer an audit log goes to failed (the caller chose it: a file,
    /// a socket, a buffer).
    #[error("writing the audit log: {0}")]
    AuditSink(std::io::Error),
    /// The tensor library failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// What is wrong with optimiser state handed back to `optim::AdamW`.
#[derive(Debug, thiserror::Error)]
pub enum OptimStateError {
    /// Not a safetensors file with a readable header.
    #[error("malformed optimiser state: {0}")]
    Malformed(String),
    /// Written by a build with another format.
    #[error("optimiser state has format version {found}; this build reads version {expected}")]
    UnknownFormat { found: u32, expected: u32 },
    /// State of another run: other parameters, shapes or configuration.
    #[error("optimiser state does not match this run: {0}")]
    Mismatch(String),
}

/// The engine's result type.
pub type Result<T> = std::result::Result<T, EngineError>;
