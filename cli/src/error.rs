//! The command line's errors: each one line, exit status 2.

use trustip::core::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The same text the filter logs when Envoy refuses the plugin.
    #[error("trustip: invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("trustip: cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("trustip: cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("trustip: {0}")]
    Usage(String),
}
