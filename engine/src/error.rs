//! The engine's error type. Every variant says who is at fault, so callers
//! can tell a user's mistake from an outage or a bug in Weir.

use arrow::error::ArrowError;
use datafusion::error::DataFusionError;

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who is at fault for an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorDomain {
    /// Bad configuration, bad SQL or bad input records: the user can fix it.
    User,
    /// Something outside Weir failed (disk, network, broker); a retry may help.
    External,
    /// A bug in Weir.
    Internal,
}

/// Errors raised by the dataflow runtime and its operators.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid configuration or options given by the user.
    #[error("configuration error: {0}")]
    Config(String),
    /// A table option (`WITH ('key' = …)`) that is unknown or has a bad
    /// value; the key lets the SQL layer point at the option.
    #[error("configuration error: {message}")]
    InvalidOption {
        /// The option's key, as the user wrote it.
        key: String,
        /// What is wrong, naming the option.
        message: String,
    },
    /// A record or batch that cannot be processed as the user declared it.
    #[error("bad input: {0}")]
    BadInput(String),
    /// An external system (file system, network, broker) failed.
    #[error("{context}: {source}")]
    Io {
        /// What Weir was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A connector reported an external failure.
    #[error("connector '{connector}': {message}")]
    Connector {
        /// The connector's name.
        connector: String,
        /// What went wrong.
        message: String,
    },
    /// A peer process (worker or coordinator) could not be reached, or its
    /// connection broke.
    #[error("network: {peer}: {message}")]
    Network {
        /// The peer's address (and worker id when known).
        peer: String,
        /// What went wrong.
        message: String,
    },
    /// Arrow compute failed.
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    /// A DataFusion expression or accumulator failed.
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    /// An operator failed; wraps the error with the operator and subtask.
    #[error("operator '{operator}' (subtask {subtask}): {source}")]
    Operator {
        /// The operator's display name.
        operator: String,
        /// The subtask index.
        subtask: usize,
        /// The underlying error.
        #[source]
        source: Box<Error>,
    },
    /// Keyed state or checkpoint storage failed (RocksDB, the local state
    /// directory, the checkpoint store), or stored checkpoint data is corrupt.
    #[error("{context}: {message}")]
    State {
        /// What Weir was doing, naming the checkpoint, file or directory.
        context: String,
        /// What went wrong.
        message: String,
    },
    /// The job was cancelled.
    #[error("job cancelled")]
    Cancelled,
    /// A bug in Weir: an invariant did not hold.
    #[error("internal error (this is a bug in Weir, please report it): {0}")]
    Internal(String),
}

impl Error {
    /// Who is at fault.
    pub fn domain(&self) -> ErrorDomain {
        match self {
            Error::Config(_) | Error::InvalidOption { .. } | Error::BadInput(_) => {
                ErrorDomain::User
            }
            Error::Io { .. }
            | Error::Connector { .. }
            | Error::Network { .. }
            | Error::State { .. }
            | Error::Cancelled => ErrorDomain::External,
            Error::Arrow(_) | Error::Internal(_) => ErrorDomain::Internal,
            Error::DataFusion(e) => match e {
                DataFusionError::Plan(_) | DataFusionError::SQL(..) => ErrorDomain::User,
                DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) => {
                    ErrorDomain::External
                }
                _ => ErrorDomain::Internal,
            },
            Error::Operator { source, .. } => source.domain(),
        }
    }

    /// True when a connection to a peer process broke (or could not be made).
    pub fn is_network(&self) -> bool {
        match self {
            Error::Network { .. } => true,
            Error::Operator { source, .. } => source.is_network(),
            _ => false,
        }
    }

    /// Wraps an I/O error with what Weir was doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Builds a network error.
    pub fn network(peer: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Network {
            peer: peer.into(),
            message: message.to_string(),
        }
    }

    /// Builds a state or checkpoint-storage error.
    pub fn state(context: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::State {
            context: context.into(),
            message: message.to_string(),
        }
    }

    /// Builds an error about the table option `key`.
    pub fn invalid_option(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidOption {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Builds an internal error.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }
}
