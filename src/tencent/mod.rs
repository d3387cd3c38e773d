//! Everything that speaks to the vendor's REST API.

pub mod api;
pub mod client;
pub mod errors;
pub mod listing;
pub mod pacer;
pub mod usersig;
pub mod walk;

pub use api::Api;
pub use client::{RetryPolicy, SharedClient, TencentClient};
pub use errors::{ApiError, ApiErrorKind, ErrorClass};
pub use walk::WalkError;
