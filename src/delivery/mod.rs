//! Webhook delivery: Standard Webhooks signing, the retry schedule, and the
//! dispatcher that keeps per-source order.

pub mod dispatcher;
pub mod lane;
pub mod schedule;
pub mod sign;

pub use dispatcher::{Control, Dispatcher};
