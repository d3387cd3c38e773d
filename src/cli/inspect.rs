//! Read-only commands: `status`, `events`, `history`, `deliveries dead`.

use std::path::PathBuf;

use serde_json::json;

use super::load_settings;
use crate::config::Settings;
use crate::source::SourceSpec;
use crate::store::{Direct, EventFilter, EventRow};

use super::error::{CliError, CliResult};
use super::fail;

/// Reading commands need a store to read: say so rather than create one.
fn open(settings: &Settings) -> Result<Direct, CliError> {
    if !settings.store_path.exists() {
        return Err(CliError::Failed(format!(
            "no store at {} yet: run `bansync run` or `bansync sync` first",
            settings.store_path.display()
        )));
    }
    Direct::open_read_only(&settings.store_path).map_err(CliError::failed)
}

fn or_dash(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

pub fn status(config: &Option<PathBuf>, as_json: bool) -> CliResult {
    let settings = load_settings(config)?;
    let conn = open(&settings)?;
    let sources = conn.sources().map_err(fail)?;
    let names: Vec<String> = settings.webhooks.iter().map(|w| w.name.clone()).collect();
    let hooks = conn.webhooks(&names).map_err(fail)?;
    let listings = conn.listings().map_err(fail)?;
    let configured: Vec<String> = settings.sources.iter().map(|s| s.to_string()).collect();
    let filter = settings.found_filter();
    // Whether this configuration walks it: listed, or found, admitted by
    // the filters and not retired.
    let watched = |s: &crate::store::SourceStatus| {
        configured.contains(&s.source)
            || (s.origin != "configured"
                && s.retired.is_none()
                && s.source
                    .parse::<crate::source::SourceSpec>()
                    .is_ok_and(|spec| filter.admits(&spec)))
    };
    if as_json {
        let sources: Vec<_> = sources
            .iter()
            .map(|s| {
                let mut v = serde_json::to_value(s).unwrap();
                v["configured"] = json!(configured.contains(&s.source));
                v["watched"] = json!(watched(s));
                v
            })
            .collect();
        let hooks: Vec<_> = hooks
            .iter()
            .map(|h| {
                let mut v = serde_json::to_value(h).unwrap();
                v["configured"] = json!(names.contains(&h.webhook));
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"sources": sources, "webhooks": hooks, "listings": listings})
            )
            .unwrap()
        );
        return Ok(());
    }
    println!(
        "{:<40} {:<10} {:<12} {:<21} {:>8} {:>7}  {:<34} LAST ERROR",
        "SOURCE", "ORIGIN", "STATUS", "LAST COMPLETE WALK", "ENTRIES", "EVENTS", "NEXT WALK (WHY)"
    );
    for s in &sources {
        let retired = s.retired.as_ref().map(|at| format!(" (retired {at})"));
        let mark = if watched(s) {
            String::new()
        } else if let Some(r) = retired {
            r
        } else if s.origin == "configured" {
            " (no longer configured)".into()
        } else {
            " (not watched under this configuration)".into()
        };
        let err = match (&s.last_error, &s.last_error_at) {
            (Some(e), Some(at)) if s.consecutive_failures > 0 || s.status == "unavailable" => {
                format!("{at} {e}")
            }
            _ => "-".into(),
        };
        let next = match (&s.next_walk, &s.next_walk_reason) {
            (Some(at), Some(why)) if watched(s) => format!("{at} ({why})"),
            (None, Some(why)) if watched(s) => format!("- ({why})"),
            _ => "-".into(),
        };
        println!(
            "{:<40} {:<10} {:<12} {:<21} {:>8} {:>7}  {next:<34} {err}{mark}",
            s.source,
            s.origin,
            s.status,
            or_dash(&s.last_complete_walk),
            s.entries,
            s.events
        );
    }
    if !listings.is_empty() {
        println!();
        println!(
            "{:<10} {:<21} {:>7}  LAST ERROR",
            "LISTING", "LAST COMPLETE", "FOUND"
        );
        for l in &listings {
            println!(
                "{:<10} {:<21} {:>7}  {}",
                l.kind,
                or_dash(&l.last_complete_listing),
                l.found,
                or_dash(&l.last_error)
            );
        }
    }
    println!();
    println!(
        "{:<24} {:>8} {:>6} {:>10}  STATE",
        "WEBHOOK", "PENDING", "DEAD", "DELIVERED"
    );
    for h in &hooks {
        let state = if !names.contains(&h.webhook) {
            "not configured".to_string()
        } else if h.disabled {
            format!(
                "disabled ({}) until the configuration is reloaded",
                or_dash(&h.disabled_reason)
            )
        } else {
            "enabled".into()
        };
        let oldest = h
            .oldest_pending
            .as_ref()
            .map(|o| format!(", oldest owed since {o}"))
            .unwrap_or_default();
        println!(
            "{:<24} {:>8} {:>6} {:>10}  {state}{oldest}",
            h.webhook, h.pending, h.dead, h.delivered
        );
    }
    Ok(())
}

fn print_event_line(e: &EventRow) {
    print_event_line_to(&mut std::io::stdout().lock(), e);
}

fn print_event_line_to(out: &mut impl std::io::Write, e: &EventRow) {
    let d = &e.body["data"];
    let extra = crate::event::describe_fields(d);
    let _ = writeln!(
        out,
        "{} {} #{} {} {}{extra}",
        e.timestamp,
        e.source,
        e.seq,
        e.kind,
        e.account.as_deref().unwrap_or("-")
    );
}

/// Writes a JSON array element by element, exactly as
/// `serde_json::to_string_pretty` of the whole array would.
#[derive(Default)]
struct JsonArray {
    started: bool,
}

impl JsonArray {
    fn push(&mut self, out: &mut impl std::io::Write, v: &serde_json::Value) {
        let sep = if self.started { ",\n" } else { "[\n" };
        self.started = true;
        let pretty = serde_json::to_string_pretty(v).unwrap_or_default();
        let indented = pretty.replace('\n', "\n  ");
        let _ = write!(out, "{sep}  {indented}");
    }

    fn finish(self, out: &mut impl std::io::Write) {
        let _ = writeln!(out, "{}", if self.started { "\n]" } else { "[]" });
    }
}

pub fn events(
    config: &Option<PathBuf>,
    sources: Vec<SourceSpec>,
    types: Vec<String>,
    since: Option<i64>,
    limit: Option<usize>,
    as_json: bool,
) -> CliResult {
    let settings = load_settings(config)?;
    let conn = open(&settings)?;
    let filter = EventFilter {
        sources: sources.iter().map(|s| s.to_string()).collect(),
        types,
        since_ms: since,
        account: None,
        limit,
    };
    // Streamed: the whole history is never held in memory.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut array = JsonArray::default();
    conn.each_event(&filter, |r| {
        if as_json {
            array.push(&mut out, &r.body);
        } else {
            print_event_line_to(&mut out, &r);
        }
    })
    .map_err(fail)?;
    if as_json {
        array.finish(&mut out);
    }
    use std::io::Write;
    out.flush().map_err(fail)?;
    Ok(())
}

pub fn history(config: &Option<PathBuf>, account: &str, as_json: bool) -> CliResult {
    let settings = load_settings(config)?;
    let conn = open(&settings)?;
    let filter = EventFilter {
        account: Some(account.to_string()),
        ..Default::default()
    };
    let rows = conn.events(&filter).map_err(fail)?;
    let mirrors = conn.mirrors_of(account).map_err(fail)?;
    if as_json {
        let timeline: Vec<_> = rows
            .iter()
            .map(|r| {
                let caused: Vec<_> = mirrors.iter().filter(|m| m.origin_event == r.id).collect();
                json!({"event": r.body, "mirrored": caused})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"account": account, "timeline": timeline}))
                .unwrap()
        );
        return Ok(());
    }
    if rows.is_empty() {
        println!("no events for {account}");
    }
    for r in &rows {
        print_event_line(r);
        for m in mirrors.iter().filter(|m| m.origin_event == r.id) {
            let until = m
                .banned_until
                .map(|u| format!(" until {u}"))
                .unwrap_or_default();
            let code = m
                .error_code
                .map(|c| format!(" (error {c})"))
                .unwrap_or_default();
            println!("    -> {} {}: {}{until}{code}", m.action, m.target, m.state);
        }
    }
    Ok(())
}

pub fn dead(config: &Option<PathBuf>, webhook: Option<String>, as_json: bool) -> CliResult {
    let settings = load_settings(config)?;
    let conn = open(&settings)?;
    let rows = conn.dead_deliveries(webhook.as_deref()).map_err(fail)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&rows).unwrap());
        return Ok(());
    }
    if rows.is_empty() {
        println!("no dead deliveries");
    }
    for d in &rows {
        println!(
            "{} {} {} {} {} attempts={} last={} {}",
            d.id,
            d.webhook,
            d.event_id,
            d.source,
            d.kind,
            d.attempts,
            d.last_status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            or_dash(&d.last_error)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::JsonArray;

    #[test]
    fn a_streamed_array_is_the_pretty_array() {
        let items = [
            serde_json::json!({"a": 1, "b": {"c": [1, 2], "d": "x\ny"}}),
            serde_json::json!({}),
            serde_json::json!([]),
            serde_json::json!("s"),
        ];
        for n in 0..=items.len() {
            let mut out = Vec::new();
            let mut a = JsonArray::default();
            for v in &items[..n] {
                a.push(&mut out, v);
            }
            a.finish(&mut out);
            let whole = serde_json::to_string_pretty(&items[..n].to_vec()).unwrap() + "\n";
            assert_eq!(String::from_utf8(out).unwrap(), whole);
        }
    }
}
