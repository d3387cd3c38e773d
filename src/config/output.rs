//! `[http]` and `[log]`: the daemon's own endpoints and logs.

use std::net::SocketAddr;

use super::raw::{RawHttp, RawLog};
use super::{ConfigError, LogFormat, defaults, err};

pub(super) fn http_listen(http: RawHttp) -> Result<Option<SocketAddr>, ConfigError> {
    let http_listen = match http.listen.as_deref() {
        None => Some(
            defaults::HTTP_LISTEN
                .parse()
                .expect("the default address parses"),
        ),
        Some("") | Some("off") => None,
        Some(a) => Some(a.parse::<SocketAddr>().map_err(|_| {
            ConfigError::invalid(format!(
                "http.listen: `{a}` is not an address like 127.0.0.1:9187"
            ))
        })?),
    };
    Ok(http_listen)
}

pub(super) fn log(log: RawLog) -> Result<(LogFormat, String), ConfigError> {
    let log_format = match log.format.as_deref().unwrap_or(defaults::LOG_FORMAT) {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return err(format!(
                "log.format: unknown format `{other}` (text | json)"
            ));
        }
    };
    let log_level = log.level.unwrap_or_else(|| defaults::LOG_LEVEL.into());
    if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
        return err(format!(
            "log.level: `{log_level}` is not a level or filter (error, warn, info, debug, trace)"
        ));
    }
    Ok((log_format, log_level))
}
