//! `trustip probe`: placeholder until implemented.

use crate::error::CliError;

/// Diagnose a live listener.
#[derive(clap::Args)]
pub struct ProbeArgs {
    /// The listener to probe.
    #[arg(value_name = "HOST:PORT")]
    pub target: String,
}

pub fn run(_args: &ProbeArgs) -> Result<u8, CliError> {
    Err(CliError::Usage("probe: not implemented yet".to_string()))
}
