//! Secrets: a type that cannot be printed, and where they are read from.

use std::fmt;
use std::path::Path;

/// A secret string. `Debug` and `Display` print `[redacted]`, so a secret
/// that strays into a log line or an error message shows nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The only way to the text; grep for it to audit every use.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The text is wiped from memory when the secret is dropped (a core dump
/// or a freed page then holds nothing).
impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a secret came from, for `check-config` (which never prints it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOrigin {
    Inline,
    File(String),
    Credential(String),
}

impl fmt::Display for SecretOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretOrigin::Inline => f.write_str("inline"),
            SecretOrigin::File(p) => write!(f, "file {p}"),
            SecretOrigin::Credential(n) => write!(f, "systemd credential {n}"),
        }
    }
}

/// Resolves a secret: the inline value, else the `*_file`, else the systemd
/// credential `name` under `$CREDENTIALS_DIRECTORY`. Files are trimmed of
/// trailing newlines, which editors and `echo` add.
pub fn resolve(
    key: &str,
    inline: Option<&str>,
    file: Option<&str>,
    credential: &str,
    credentials_dir: Option<&Path>,
) -> Result<Option<(Secret, SecretOrigin)>, String> {
    if inline.is_some() && file.is_some() {
        return Err(format!(
            "{key}: give either the value or `{key}_file`, not both"
        ));
    }
    if let Some(v) = inline {
        return Ok(Some((Secret::new(v), SecretOrigin::Inline)));
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{key}_file: cannot read `{path}`: {e}"))?;
        return Ok(Some((
            Secret::new(text.trim_end_matches(['\n', '\r'])),
            SecretOrigin::File(path.into()),
        )));
    }
    if let Some(dir) = credentials_dir {
        let path = dir.join(credential);
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("{key}: cannot read credential `{credential}`: {e}"))?;
            return Ok(Some((
                Secret::new(text.trim_end_matches(['\n', '\r'])),
                SecretOrigin::Credential(credential.into()),
            )));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
    }

    #[test]
    fn precedence_and_trimming() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k"), "fromfile\n").unwrap();
        std::fs::write(dir.path().join("cred"), "fromcred\n").unwrap();
        let file = dir.path().join("k");
        let file = file.to_str().unwrap();
        let (s, o) = resolve("secret", Some("inline"), None, "cred", Some(dir.path()))
            .unwrap()
            .unwrap();
        assert_eq!((s.expose(), o), ("inline", SecretOrigin::Inline));
        let (s, _) = resolve("secret", None, Some(file), "cred", Some(dir.path()))
            .unwrap()
            .unwrap();
        assert_eq!(s.expose(), "fromfile");
        let (s, o) = resolve("secret", None, None, "cred", Some(dir.path()))
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.expose(), o),
            ("fromcred", SecretOrigin::Credential("cred".into()))
        );
        assert!(
            resolve("secret", None, None, "nope", Some(dir.path()))
                .unwrap()
                .is_none()
        );
        assert!(
            resolve("secret", Some("a"), Some(file), "c", None)
                .unwrap_err()
                .contains("not both")
        );
        assert!(
            resolve("secret", None, Some("/nonexistent/x"), "c", None)
                .unwrap_err()
                .contains("secret_file")
        );
    }
}
