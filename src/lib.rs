//! bansync: watches Tencent Cloud Chat ban lists and blocklists, diffs each
//! complete walk against SQLite, and delivers every change as a signed
//! webhook. See ARCHITECTURE.md for the map.

pub mod adaptive;
pub mod callback;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod demo;
pub mod diff;
pub mod duration;
pub mod event;
pub mod hint;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod mirror;
pub mod payload;
pub mod propagate;
pub mod sim;
pub mod source;
pub mod store;
pub mod sync;
pub mod tencent;

pub use daemon::{DaemonControl, Grace, run};
