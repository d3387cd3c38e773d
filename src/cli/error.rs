//! How a command fails, and the exit status each failure gives (CONTRACT.md:
//! 0 success, 1 the work failed, 2 the command line or the configuration is
//! wrong). Commands return these; `cli::main` prints them and exits, in one
//! place.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An argument is wrong: nothing was done.
    #[error("{0}")]
    Usage(String),
    /// The configuration cannot be loaded: nothing was done.
    #[error("configuration error in {}: {error}", path.display())]
    Config {
        path: PathBuf,
        #[source]
        error: ConfigError,
    },
    /// The work failed.
    #[error("{0}")]
    Failed(String),
    /// The work failed and the output already said how (a summary line,
    /// a line per failed account).
    #[error("failed")]
    Reported,
}

impl CliError {
    /// Wraps any error as a failure of the work (exit 1).
    pub fn failed(e: impl std::fmt::Display) -> CliError {
        CliError::Failed(e.to_string())
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) | CliError::Config { .. } => ExitCode::from(2),
            CliError::Failed(_) | CliError::Reported => ExitCode::from(1),
        }
    }

    /// Prints the error (unless already reported) and gives its status.
    pub fn report(&self) -> ExitCode {
        if !matches!(self, CliError::Reported) {
            eprintln!("bansync: {self}");
        }
        self.exit_code()
    }
}

/// What a command returns.
pub type CliResult = Result<(), CliError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_and_configuration_errors_exit_2_failures_exit_1() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), ExitCode::from(2));
        assert_eq!(CliError::failed("x").exit_code(), ExitCode::from(1));
        assert_eq!(CliError::Reported.exit_code(), ExitCode::from(1));
    }
}
