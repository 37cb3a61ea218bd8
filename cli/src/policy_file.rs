//! Loading a policy file: validated by the filter's own configuration step.

use std::path::Path;

use trustip::core::config::Policy;

use crate::error::CliError;

/// A validated policy and its JSON, compacted for embedding in generated configs.
pub struct PolicyFile {
    pub policy: Policy,
    pub json: serde_json::Value,
}

impl PolicyFile {
    pub fn load(path: &Path) -> Result<PolicyFile, CliError> {
        let bytes = std::fs::read(path).map_err(|source| CliError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let policy = Policy::from_json(&bytes)?;
        let json = if bytes.trim_ascii().is_empty() {
            serde_json::Value::Object(serde_json::Map::new())
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|err| CliError::Usage(format!("{}: {err}", path.display())))?
        };
        Ok(PolicyFile { policy, json })
    }

    /// The policy as one line of JSON.
    pub fn compact(&self) -> String {
        self.json.to_string()
    }
}
