//! The vendor's error codes and what a client must do about each
//! (NOTES.md's table), plus the error type every call returns.

use std::fmt;

/// What to do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Transient: retry with backoff.
    Retry,
    /// Rate limited: slow this API down, then retry.
    BackOff,
    /// The sig was refused: regenerate it once and retry once.
    RenewSig,
    /// The group, room or account does not exist (any more).
    SourceGone,
    /// Refused for this one source (e.g. a feature switched off for it).
    SourceRefused,
    /// Configuration is wrong (app, key, admin, region): retrying cannot help.
    Fatal,
    /// Our request was malformed: a bug, do not retry.
    Bug,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retry => "retry",
            ErrorClass::BackOff => "back_off",
            ErrorClass::RenewSig => "renew_sig",
            ErrorClass::SourceGone => "source_gone",
            ErrorClass::SourceRefused => "source_refused",
            ErrorClass::Fatal => "fatal",
            ErrorClass::Bug => "bug",
        }
    }
}

/// Classifies a vendor `ErrorCode`. Unknown codes are retried a few times:
/// the vendor adds codes, and a transient one must not stop a sweep.
/// Every code [`classify`] names (anything else is retried as transient).
pub const KNOWN_CODES: &[i64] = &[
    60002, 60003, 60009, 60012, 60015, 60004, 60005, 60006, 60010, 60016, 60017, 60021, 60020,
    60007, 60011, 60018, 60019, 60008, 60013, 60014, 70001, 70002, 70003, 70005, 70052, 70009,
    70013, 70014, 70016, 70020, 70050, 70169, 70500, 10002, 10003, 10004, 10005, 10006, 10007,
    10010, 30001, 30003, 30004, 30006, 30007, 100001, 100002, 100004,
];

pub fn classify(code: i64) -> ErrorClass {
    use ErrorClass::*;
    match code {
        60002 | 60003 | 60009 | 60012 | 60015 => Bug,
        60004 | 60005 => RenewSig,
        60006 | 60010 | 60016 | 60017 | 60021 | 60020 => Fatal,
        60007 | 60011 | 60018 | 60019 => BackOff,
        60008 | 60013 | 60014 => Retry,
        70001 | 70002 | 70003 | 70005 | 70052 => RenewSig,
        70009 | 70013 | 70014 | 70016 | 70020 => Fatal,
        70050 => BackOff,
        70169 | 70500 => Retry,
        10002 => Retry,
        10003..=10005 => Bug,
        10006 => BackOff,
        10007 => SourceRefused,
        10010 => SourceGone,
        30001 => Bug,
        30003 => SourceGone,
        30004 => Fatal,
        30006 | 30007 => Retry,
        100001 => Retry,
        100002 => Bug,
        100004 => SourceGone,
        _ => Retry,
    }
}

/// A hint for operators reading the log at 3 a.m.
pub fn hint(code: i64) -> Option<&'static str> {
    Some(match code {
        60006 | 70014 => "check tencent.sdkappid",
        60010 => "tencent.identifier must be an App admin account",
        60016 | 60017 => "the app or this request type is disabled in the console",
        60021 => "this host's IP is not allowed by the app's IP allowlist",
        60020 => "the app's package has expired or is not yet active",
        70009 => "tencent.secret_key belongs to another app",
        70013 => "the sig was issued for another identifier",
        70016 | 70020 => "wrong data centre: check tencent.region",
        70050 => "too many bad sigs: fix the key, then wait at least 60 s",
        10007 => {
            "ban features are off for this group in the console, or the account is not an admin"
        }
        30004 => "tencent.identifier must be an App admin account",
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// The vendor answered with an error code.
    Vendor { code: i64, info: String },
    /// No answer: connection refused or reset, timeout.
    Transport(String),
    /// An HTTP status other than 200.
    Http(u16),
    /// A body that is not the documented shape.
    Malformed(String),
}

/// A failed call. Its text never holds the URL (which carries the UserSig).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub api: &'static str,
    pub kind: ApiErrorKind,
    pub request_id: Option<String>,
}

impl ApiError {
    pub fn class(&self) -> ErrorClass {
        match &self.kind {
            ApiErrorKind::Vendor { code, .. } => classify(*code),
            ApiErrorKind::Transport(_) | ApiErrorKind::Malformed(_) => ErrorClass::Retry,
            ApiErrorKind::Http(s) if *s == 429 => ErrorClass::BackOff,
            ApiErrorKind::Http(s) if *s >= 500 => ErrorClass::Retry,
            ApiErrorKind::Http(_) => ErrorClass::Bug,
        }
    }

    pub fn code(&self) -> Option<i64> {
        match &self.kind {
            ApiErrorKind::Vendor { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The label used in metrics: the vendor code (`other` for a code this
    /// version does not know: labels stay a bounded set whatever a vendor
    /// or a proxy answers), or the failure kind.
    pub fn metric_code(&self) -> String {
        match &self.kind {
            ApiErrorKind::Vendor { code, .. } if KNOWN_CODES.contains(code) => code.to_string(),
            ApiErrorKind::Vendor { .. } => "other".into(),
            ApiErrorKind::Transport(_) => "transport".into(),
            ApiErrorKind::Http(s) => format!("http_{s}"),
            ApiErrorKind::Malformed(_) => "malformed".into(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ApiErrorKind::Vendor { code, info } => {
                write!(f, "{} answered {code}", self.api)?;
                if !info.is_empty() {
                    write!(f, " ({info})")?;
                }
                if let Some(h) = hint(*code) {
                    write!(f, ": {h}")?;
                }
            }
            ApiErrorKind::Transport(e) => write!(f, "{}: no answer: {e}", self.api)?,
            ApiErrorKind::Http(s) => write!(f, "{}: HTTP status {s}", self.api)?,
            ApiErrorKind::Malformed(e) => write!(f, "{}: malformed response: {e}", self.api)?,
        }
        if let Some(id) = &self.request_id {
            write!(f, " [RequestId {id}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_code_is_classified() {
        use ErrorClass::*;
        let table: &[(&[i64], ErrorClass)] = &[
            (
                &[
                    60002, 60003, 60009, 60012, 60015, 10003, 10004, 10005, 30001, 100002,
                ],
                Bug,
            ),
            (&[60004, 60005, 70001, 70002, 70003, 70005, 70052], RenewSig),
            (
                &[
                    60006, 60010, 60016, 60017, 60020, 60021, 70009, 70013, 70014, 70016, 70020,
                    30004,
                ],
                Fatal,
            ),
            (&[60007, 60011, 60018, 60019, 70050, 10006], BackOff),
            (
                &[
                    60008, 60013, 60014, 70169, 70500, 10002, 30006, 30007, 100001,
                ],
                Retry,
            ),
            (&[10010, 30003, 100004], SourceGone),
            (&[10007], SourceRefused),
        ];
        for (codes, class) in table {
            for c in *codes {
                assert_eq!(classify(*c), *class, "code {c}");
            }
        }
    }

    #[test]
    fn display_names_code_hint_and_request_id() {
        let e = ApiError {
            api: "sns/black_list_get",
            kind: ApiErrorKind::Vendor {
                code: 70016,
                info: "key not found".into(),
            },
            request_id: Some("Id-1".into()),
        };
        let s = e.to_string();
        assert!(
            s.contains("70016") && s.contains("tencent.region") && s.contains("Id-1"),
            "{s}"
        );
    }

    #[test]
    fn metric_labels_are_a_bounded_set() {
        let e = |code| ApiError {
            api: "x",
            kind: ApiErrorKind::Vendor {
                code,
                info: String::new(),
            },
            request_id: None,
        };
        assert_eq!(e(70001).metric_code(), "70001");
        assert_eq!(e(123456789).metric_code(), "other");
        assert_eq!(e(-1).metric_code(), "other");
        // A code classify gives a class of its own must be known (else its
        // label would be lost in `other`).
        for code in 0..200_000 {
            if classify(code) != ErrorClass::Retry {
                assert!(
                    KNOWN_CODES.contains(&code),
                    "{code} is classified but not known"
                );
            }
        }
    }
}
