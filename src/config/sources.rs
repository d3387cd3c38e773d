//! `[sources]`: the lists to watch.

use super::raw::RawSources;
use super::{ConfigError, TencentSettings, err};
use crate::source::{SourceKind, SourceSpec};

pub(super) fn validate(
    raw: Option<RawSources>,
    tencent: &TencentSettings,
    discovers: bool,
) -> Result<Vec<SourceSpec>, ConfigError> {
    // With discovery (or enrolment by callbacks) the list may be empty.
    let src = match raw {
        Some(src) => src,
        None if discovers => RawSources::default(),
        None => return err("sources: section missing (groups, rooms, blocklists)"),
    };
    let mut sources = Vec::new();
    for (key, kind, list) in [
        ("sources.groups", SourceKind::Group, &src.groups),
        ("sources.rooms", SourceKind::Room, &src.rooms),
        ("sources.blocklists", SourceKind::Blocklist, &src.blocklists),
    ] {
        for (i, id) in list.iter().enumerate() {
            crate::source::validate_id(id)
                .map_err(|e| ConfigError::invalid(format!("{key}[{i}]: `{id}`: {e}")))?;
            let spec = SourceSpec::new(kind, id.as_str());
            if sources.contains(&spec) {
                return err(format!("{key}[{i}]: `{id}` is listed twice"));
            }
            sources.push(spec);
        }
    }
    if sources.is_empty() && !discovers {
        return err("sources: no source to watch (groups, rooms and blocklists are all empty)");
    }
    if let Some(r) = tencent.region
        && !r.has_live_rooms()
        && sources.iter().any(|s| s.kind == SourceKind::Room)
    {
        return err(format!(
            "sources.rooms: the live-room service is not offered in region `{}` (china, singapore, silicon-valley, jakarta)",
            r.as_str()
        ));
    }
    Ok(sources)
}
