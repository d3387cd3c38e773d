//! `[store]` and `[sync]`: where state lives, and when and how lists are walked.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawStore, RawSync};
use super::{
    ConfigError, Environment, Mode, Schedule, SyncSettings, defaults, err, nonzero_duration,
    parse_duration, validate_cron,
};
use crate::diff::Initial;

/// `store.retention`: `None` keeps everything (`"0"`).
pub(super) fn retention(raw: &RawStore) -> Result<Option<Duration>, ConfigError> {
    match raw.retention.as_deref().map(str::trim) {
        Some("0") => Ok(None),
        other => {
            let d = nonzero_duration("store.retention", other, defaults::RETENTION)?;
            if d < Duration::from_secs(3600) {
                return err("store.retention: must be at least 1h, or \"0\" to keep everything");
            }
            Ok(Some(d))
        }
    }
}

pub(super) fn store_path(raw: RawStore, env: &Environment) -> Result<PathBuf, ConfigError> {
    let store_path = {
        let p = PathBuf::from(raw.path.as_deref().unwrap_or(defaults::STORE_PATH));
        if p.as_os_str().is_empty() {
            return err("store.path: empty");
        }
        if p.is_relative() {
            match &env.state_dir {
                Some(dir) => dir.join(p),
                None => p,
            }
        } else {
            p
        }
    };
    Ok(store_path)
}

pub(super) fn validate(raw: RawSync) -> Result<SyncSettings, ConfigError> {
    let s = raw;
    let mode = match s.mode.as_deref() {
        None | Some("sweep") => Mode::Sweep,
        Some("adaptive") => Mode::Adaptive,
        Some(other) => {
            return err(format!(
                "sync.mode: unknown mode `{other}` (sweep | adaptive)"
            ));
        }
    };
    let schedule = match (s.interval.as_deref(), s.cron.as_deref()) {
        (Some(_), Some(_)) => return err("sync.cron: give either interval or cron, not both"),
        (None, Some(c)) => {
            validate_cron(c).map_err(|e| ConfigError::invalid(format!("sync.cron: `{c}`: {e}")))?;
            if mode == Mode::Adaptive {
                return err(
                    "sync.cron: adaptive mode walks continuously and needs `interval` (the longest a source may go unwalked), not cron",
                );
            }
            Schedule::Cron(c.to_string())
        }
        (i, None) => {
            let d = nonzero_duration("sync.interval", i, defaults::SYNC_INTERVAL)?;
            // The scheduler counts in whole seconds.
            if d < Duration::from_secs(1) || d.subsec_millis() != 0 {
                return err(format!(
                    "sync.interval: `{}` must be a whole number of seconds, at least 1s",
                    i.unwrap_or_default()
                ));
            }
            Schedule::Interval(d)
        }
    };
    let page_size = s.page_size.unwrap_or(defaults::PAGE_SIZE);
    if !(1..=100).contains(&page_size) {
        return err(format!(
            "sync.page_size: {page_size} is out of range (1 to 100, the vendor's maximum)"
        ));
    }
    let initial = match s.initial.as_deref().unwrap_or(defaults::INITIAL) {
        "baseline" => Initial::Baseline,
        "emit" => Initial::Emit,
        other => {
            return err(format!(
                "sync.initial: unknown value `{other}` (baseline | emit)"
            ));
        }
    };
    let confirm_delay = parse_duration(
        "sync.confirm_delay",
        s.confirm_delay.as_deref(),
        defaults::CONFIRM_DELAY,
    )?;
    let max_concurrent_walks = s
        .max_concurrent_walks
        .unwrap_or(defaults::MAX_CONCURRENT_WALKS) as usize;
    if max_concurrent_walks == 0 {
        return err("sync.max_concurrent_walks: must be at least 1");
    }
    Ok(SyncSettings {
        mode,
        schedule,
        page_size,
        blocklist_page_size: defaults::BLOCKLIST_PAGE_SIZE,
        initial,
        confirm_delay,
        max_concurrent_walks,
    })
}
