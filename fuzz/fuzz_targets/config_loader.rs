//! Any text as a configuration file: a clean error or settings, never a
//! panic, and never a secret in the error.
#![no_main]

use std::path::Path;

use bansync::config::{Environment, load_from_str};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = load_from_str(text, Path::new("fuzz.toml"), &Environment::default()) {
        assert!(!e.to_string().is_empty());
    }
});
