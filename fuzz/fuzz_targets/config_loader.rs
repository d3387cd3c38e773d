//! Any text as a configuration file, and any text as the value of a secret
//! in an otherwise good file: a clean error or settings, never a panic, and
//! never the secret in the error.
#![no_main]

use std::path::Path;

use bansync::config::{Environment, load_from_str};
use libfuzzer_sys::fuzz_target;

const AROUND: &str = r#"
[tencent]
sdkappid = 1400000000
identifier = "administrator"
region = "singapore"
[sources]
rooms = ["live-1"]
[[webhook]]
name = "h"
url = "https://hooks.example.com/x"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let env = Environment::default();
    if let Err(e) = load_from_str(text, Path::new("fuzz.toml"), &env) {
        assert!(!e.to_string().is_empty());
    }
    // The input as the vendor key, written as any TOML value.
    let secret = text.trim();
    if secret.len() < 8 || secret.contains('\n') {
        return;
    }
    let config = AROUND.replacen(
        "region = \"singapore\"",
        &format!("region = \"singapore\"\nsecret_key = {secret}"),
        1,
    );
    if let Err(e) = load_from_str(&config, Path::new("fuzz.toml"), &env) {
        let shown = e.to_string();
        assert!(!shown.contains(secret), "the secret `{secret}` is in the error: {shown}");
    }
});
