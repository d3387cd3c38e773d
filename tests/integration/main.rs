//! The integration tests: one binary (one link, one harness), a module per
//! area. The reliability suite is a binary of its own (`tests/reliability.rs`):
//! it is long, and sized by environment variables.

#[path = "../common/mod.rs"]
mod common;

mod adaptive;
mod architecture;
mod callbacks;
mod delivery;
mod discovery;
mod hostile;
mod interop;
mod process;
mod propagation;
mod rate_limit;
mod regressions;
mod robustness;
mod sync_engine;
mod toolbox;
mod vendor_client;
