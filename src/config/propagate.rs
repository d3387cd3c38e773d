//! `[[propagate]]`: rules that mirror bans from origins to targets.

use super::raw::RawPropagate;
use super::{ConfigError, PropagateRule, err};
use crate::source::{SourceKind, SourceSpec};

pub(super) fn validate(
    raw: Vec<RawPropagate>,
    sources: &[SourceSpec],
) -> Result<Vec<PropagateRule>, ConfigError> {
    let mut propagate = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let at = format!("propagate[{i}]");
        let parse_list = |key: &str, list: &[String]| -> Result<Vec<SourceSpec>, ConfigError> {
            if list.is_empty() {
                return err(format!("{at}.{key}: empty"));
            }
            list.iter()
                .map(|s| {
                    let spec: SourceSpec = s
                        .parse()
                        .map_err(|e| ConfigError::invalid(format!("{at}.{key}: {e}")))?;
                    if spec.kind == SourceKind::Blocklist {
                        return err(format!(
                            "{at}.{key}: `{s}`: only groups and rooms hold bans"
                        ));
                    }
                    Ok(spec)
                })
                .collect()
        };
        let from = parse_list("from", &r.from)?;
        let to = parse_list("to", &r.to)?;
        for f in &from {
            if !sources.contains(f) {
                return err(format!(
                    "{at}.from: `{f}` is not a watched source (add it under [sources])"
                ));
            }
            if to.contains(f) {
                return err(format!("{at}.to: `{f}` is both origin and target"));
            }
        }
        propagate.push(PropagateRule {
            from,
            to,
            lift: r.lift,
        });
    }
    Ok(propagate)
}
