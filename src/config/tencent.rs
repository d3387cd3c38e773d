//! `[tencent]`: the app, its admin account and key, and where the vendor is.

use std::time::Duration;

use super::raw::RawTencent;
use super::{
    ConfigError, Environment, Region, TencentSettings, defaults, err, nonzero_duration,
    parse_duration, secret,
};

pub(super) fn validate(
    raw: Option<RawTencent>,
    env: &Environment,
) -> Result<TencentSettings, ConfigError> {
    let Some(t) = raw else {
        return err("tencent: section missing (sdkappid, identifier, secret_key, region)");
    };
    let sdkappid = match t.sdkappid {
        None => return err("tencent.sdkappid: missing"),
        Some(0) => return err("tencent.sdkappid: must not be 0"),
        Some(n) if n > u32::MAX as u64 * 2 => return err("tencent.sdkappid: not a valid SDKAppID"),
        Some(n) => n,
    };
    let identifier = match t.identifier.as_deref().map(str::trim) {
        None | Some("") => return err("tencent.identifier: missing (an App admin account)"),
        Some(s) => s.to_string(),
    };
    let (secret_key, secret_origin) = secret::resolve(
        "tencent.secret_key",
        t.secret_key.as_deref(),
        t.secret_key_file.as_deref(),
        "tim-secret-key",
        env.credentials_dir.as_deref(),
    )
    .map_err(ConfigError::invalid)?
    .ok_or_else(|| {
        ConfigError::invalid(
            "tencent.secret_key: missing (set secret_key, secret_key_file, or the systemd credential tim-secret-key)",
        )
    })?;
    if secret_key.expose().trim().is_empty() {
        return err("tencent.secret_key: empty");
    }
    let (region, base_urls) = match (t.region.as_deref(), t.base_url.as_deref()) {
        (Some(_), Some(_)) => {
            return err("tencent.base_url: give either region or base_url, not both");
        }
        (None, None) => return err(format!("tencent.region: missing ({})", Region::NAMES)),
        (Some(r), None) => {
            let region = Region::parse(r).ok_or_else(|| {
                ConfigError::invalid(format!(
                    "tencent.region: unknown region `{r}` ({})",
                    Region::NAMES
                ))
            })?;
            let (a, b) = region.domains();
            (
                Some(region),
                vec![format!("https://{a}"), format!("https://{b}")],
            )
        }
        (None, Some(u)) => {
            let url = reqwest::Url::parse(u)
                .map_err(|e| ConfigError::invalid(format!("tencent.base_url: `{u}`: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return err(format!("tencent.base_url: `{u}` is not an http(s) URL"));
            }
            (None, vec![u.trim_end_matches('/').to_string()])
        }
    };
    let usersig_ttl = parse_duration(
        "tencent.usersig_ttl",
        t.usersig_ttl.as_deref(),
        defaults::USERSIG_TTL,
    )?;
    if usersig_ttl < Duration::from_secs(300) {
        return err("tencent.usersig_ttl: must be at least 5m (the sig is renewed before it ends)");
    }
    let requests_per_second = t
        .requests_per_second
        .unwrap_or(defaults::REQUESTS_PER_SECOND);
    if requests_per_second == 0 || requests_per_second > 100_000 {
        return err("tencent.requests_per_second: must be between 1 and 100000");
    }
    let timeout = nonzero_duration(
        "tencent.timeout",
        t.timeout.as_deref(),
        defaults::TENCENT_TIMEOUT,
    )?;
    let ca_pem = match t.ca_file.as_deref() {
        None => None,
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                ConfigError::invalid(format!("tencent.ca_file: cannot read `{path}`: {e}"))
            })?;
            match reqwest::Certificate::from_pem_bundle(&pem) {
                Ok(certs) if !certs.is_empty() => Some(pem),
                Ok(_) => {
                    return err(format!(
                        "tencent.ca_file: `{path}` holds no PEM certificate"
                    ));
                }
                Err(e) => return err(format!("tencent.ca_file: `{path}`: {e}")),
            }
        }
    };
    Ok(TencentSettings {
        ca_pem,
        sdkappid,
        identifier,
        secret_key,
        secret_origin,
        region,
        base_urls,
        usersig_ttl,
        requests_per_second,
        timeout,
    })
}
