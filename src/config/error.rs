//! What is wrong with a configuration, naming the key at fault.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read configuration file `{}`: {error}", path.display())]
    Read { path: PathBuf, error: String },
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("{key}: {problem}")]
    Syntax { key: String, problem: String },
    /// A value that parses but is wrong: missing, out of range, or at odds
    /// with another key.
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
}

impl ConfigError {
    /// The key at fault (`tencent.region`, `webhook[0] (alerts).url`).
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Syntax { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
        }
    }

    /// From a message written `key: problem`, as every check here writes
    /// them (a key never holds ": ").
    pub(super) fn invalid(message: impl Into<String>) -> ConfigError {
        let message = message.into();
        match message.split_once(": ") {
            Some((key, problem)) => ConfigError::Invalid {
                key: key.to_string(),
                problem: problem.to_string(),
            },
            None => ConfigError::Invalid {
                key: message,
                problem: "invalid".into(),
            },
        }
    }
}
