use super::*;
use crate::source::SourceKind;

const GOOD: &str = r#"
[tencent]
sdkappid = 1400000000
identifier = "administrator"
secret_key = "k3y"
region = "singapore"

[sources]
groups = ["@TGS#aJRGC4MH6"]
rooms = ["live-1", "live-2"]
blocklists = ["alice"]

[[webhook]]
name = "moderation"
url = "https://hooks.example.com/bansync"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
events = ["ban.*", "block.added"]
sources = ["room:*"]
"#;

fn load_text(text: &str, env: &Environment) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bansync.toml");
    std::fs::write(&path, text).unwrap();
    load_with(&path, env)
}

fn load_str(text: &str) -> Result<Settings, ConfigError> {
    load_text(text, &Environment::default())
}

fn fault(text: &str) -> String {
    load_str(text).expect_err("should be refused").to_string()
}

#[test]
fn the_contract_example_loads() {
    let s = load_str(GOOD).unwrap();
    assert_eq!(s.tencent.sdkappid, 1400000000);
    assert_eq!(s.tencent.base_urls[0], "https://adminapisgp.im.qcloud.com");
    assert_eq!(s.tencent.base_urls[1], "https://adminapisgp.my-imcloud.com");
    assert_eq!(s.sources.len(), 4);
    assert_eq!(
        s.sync.schedule,
        Schedule::Interval(Duration::from_secs(300))
    );
    assert_eq!(s.sync.page_size, 100);
    assert_eq!(s.sync.initial, Initial::Baseline);
    assert_eq!(s.webhooks[0].keys.len(), 1);
    assert!(s.webhooks[0].wants("ban.added", "room:live-1"));
    assert!(!s.webhooks[0].wants("ban.added", "group:@TGS#aJRGC4MH6"));
    assert!(!s.webhooks[0].wants("block.removed", "room:live-1"));
    assert_eq!(s.webhooks[0].retry_schedule.len(), 9);
    assert_eq!(s.http_listen, Some("127.0.0.1:9187".parse().unwrap()));
}

#[test]
fn every_region_has_its_domain() {
    for (name, domain) in [
        ("china", "console.tim.qq.com"),
        ("singapore", "adminapisgp.im.qcloud.com"),
        ("seoul", "adminapikr.im.qcloud.com"),
        ("tokyo", "adminapijpn.im.qcloud.com"),
        ("frankfurt", "adminapiger.im.qcloud.com"),
        ("mumbai", "adminapiind.im.qcloud.com"),
        ("silicon-valley", "adminapiusa.im.qcloud.com"),
        ("jakarta", "adminapiidn.im.qcloud.com"),
    ] {
        let r = Region::parse(name).unwrap();
        assert_eq!(r.domains().0, domain);
    }
}

#[test]
fn environment_overrides_the_file() {
    let env = Environment {
        vars: vec![
            ("BANSYNC_TENCENT__SECRET_KEY".into(), "00123".into()),
            ("BANSYNC_SYNC__PAGE_SIZE".into(), "50".into()),
            ("BANSYNC_SOURCES__ROOMS".into(), "a, b,c".into()),
        ],
        ..Default::default()
    };
    let s = load_text(GOOD, &env).unwrap();
    assert_eq!(
        s.tencent.secret_key.expose(),
        "00123",
        "a secret of digits stays a string"
    );
    assert_eq!(s.sync.page_size, 50);
    let rooms: Vec<_> = s
        .sources
        .iter()
        .filter(|x| x.kind == SourceKind::Room)
        .map(|x| x.id.as_str())
        .collect();
    assert_eq!(rooms, ["a", "b", "c"]);
}

#[test]
fn secrets_from_files_and_credentials() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tim-secret-key"), "fromcred\n").unwrap();
    std::fs::write(
        dir.path().join("webhook-moderation-secret"),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
    )
    .unwrap();
    let text = GOOD
        .replace("secret_key = \"k3y\"\n", "")
        .replace("secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n", "");
    let env = Environment {
        credentials_dir: Some(dir.path().into()),
        ..Default::default()
    };
    let s = load_text(&text, &env).unwrap();
    assert_eq!(s.tencent.secret_key.expose(), "fromcred");
    assert_eq!(
        s.tencent.secret_origin,
        SecretOrigin::Credential("tim-secret-key".into())
    );
    assert_eq!(s.webhooks[0].keys.len(), 1);
    let described = s.describe();
    assert!(
        !described.contains("fromcred") && !described.contains("MfKQ9r8"),
        "{described}"
    );
}

#[test]
fn rotation_signs_with_each_secret() {
    let text = GOOD.replace(
        "secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
        "secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_dGhpcyBpcyBhIHNlY29uZCBzZWNyZXQ=\"",
    );
    assert_eq!(load_str(&text).unwrap().webhooks[0].keys.len(), 2);
}

#[test]
fn state_directory_holds_relative_store_paths() {
    let env = Environment {
        state_dir: Some("/var/lib/bansync".into()),
        ..Default::default()
    };
    assert_eq!(
        load_text(GOOD, &env).unwrap().store_path,
        PathBuf::from("/var/lib/bansync/bansync.db")
    );
}

/// Each fault, and the key its message must name.
#[test]
fn faults_name_their_key() {
    let cases: Vec<(String, &str)> = vec![
        (GOOD.replace("region = \"singapore\"", "region = \"mars\""), "tencent.region"),
        (GOOD.replace("region = \"singapore\"", "region = \"singapore\"\nbase_url = \"http://x\""), "tencent.base_url"),
        (GOOD.replace("region = \"singapore\"", ""), "tencent.region"),
        (GOOD.replace("region = \"singapore\"", "base_url = \"ftp://x\""), "tencent.base_url"),
        (GOOD.replace("region = \"singapore\"", "region = \"seoul\""), "sources.rooms"),
        (GOOD.replace("sdkappid = 1400000000", "sdkappid = 0"), "tencent.sdkappid"),
        (GOOD.replace("sdkappid = 1400000000", "sdkappid = \"abc\""), "tencent.sdkappid"),
        (GOOD.replace("identifier = \"administrator\"", "identifier = \"\""), "tencent.identifier"),
        (GOOD.replace("secret_key = \"k3y\"", ""), "tencent.secret_key"),
        (GOOD.replace("secret_key = \"k3y\"", "secret_key_file = \"/nonexistent/key\""), "tencent.secret_key_file"),
        (GOOD.replace("region = \"singapore\"", "region = \"singapore\"\nregoin = \"x\""), "regoin"),
        (GOOD.replace("[sources]", "[sources]\nchannels = [\"x\"]"), "channels"),
        (GOOD.replace("groups = [\"@TGS#aJRGC4MH6\"]\nrooms = [\"live-1\", \"live-2\"]\nblocklists = [\"alice\"]", ""), "sources"),
        (GOOD.replace("rooms = [\"live-1\", \"live-2\"]", "rooms = [\"live-1\", \"live-1\"]"), "sources.rooms[1]"),
        (GOOD.replace("rooms = [\"live-1\", \"live-2\"]", "rooms = [\"\"]"), "sources.rooms[0]"),
        (format!("{GOOD}\n[sync]\npage_size = 500\n"), "sync.page_size"),
        (format!("{GOOD}\n[sync]\npage_size = 0\n"), "sync.page_size"),
        (format!("{GOOD}\n[sync]\ninterval = \"5 minutes\"\n"), "sync.interval"),
        (format!("{GOOD}\n[sync]\ninterval = \"1500ms\"\n"), "sync.interval"),
        (format!("{GOOD}\n[sync]\ninterval = \"5m\"\ncron = \"0 */5 * * * *\"\n"), "sync.cron"),
        (format!("{GOOD}\n[sync]\ncron = \"every five minutes\"\n"), "sync.cron"),
        (format!("{GOOD}\n[sync]\ninitial = \"all\"\n"), "sync.initial"),
        (GOOD.replace("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not*base64!"), "webhook[0] (moderation).secret"),
        (GOOD.replace("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_YWJj"), "webhook[0] (moderation).secret"),
        (GOOD.replace("https://hooks.example.com/bansync", "not a url"), "webhook[0] (moderation).url"),
        (GOOD.replace("events = [\"ban.*\", \"block.added\"]", "events = [\"ban.deleted\"]"), "webhook[0] (moderation).events"),
        (GOOD.replace("sources = [\"room:*\"]", "sources = [\"chan:*\"]"), "webhook[0] (moderation).sources"),
        (GOOD.replace("name = \"moderation\"", "name = \"a b\""), "webhook[0].name"),
        (format!("{GOOD}\n[[webhook]]\nname = \"moderation\"\nurl = \"http://x\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"), "webhook[1] (moderation).name"),
        (GOOD.replace("url = \"https://hooks.example.com/bansync\"", "url = \"https://x\"\ntimeout = \"0s\""), "webhook[0] (moderation).timeout"),
        (format!("{GOOD}\n[[propagate]]\nfrom = [\"blocklist:alice\"]\nto = [\"room:live-1\"]\n"), "propagate[0].from"),
        (format!("{GOOD}\n[[propagate]]\nfrom = [\"room:nowhere\"]\nto = [\"room:live-1\"]\n"), "propagate[0].from"),
        (format!("{GOOD}\n[[propagate]]\nfrom = [\"room:live-1\"]\nto = []\n"), "propagate[0].to"),
        (format!("{GOOD}\n[http]\nlisten = \"localhost\"\n"), "http.listen"),
        (format!("{GOOD}\n[log]\nformat = \"xml\"\n"), "log.format"),
        (format!("{GOOD}\n[log]\nlevel = \"loud[\"\n"), "log.level"),
        (GOOD.replace("[tencent]", "[tencent]\nrequests_per_second = 0"), "tencent.requests_per_second"),
        (GOOD.replace("[tencent]", "[tencent]\nusersig_ttl = \"1s\""), "tencent.usersig_ttl"),
        (GOOD.replace("[tencent]", "[tencent]\ntimeout = \"soon\""), "tencent.timeout"),
    ];
    assert!(cases.len() >= 10);
    for (text, key) in cases {
        let msg = fault(&text);
        assert!(
            msg.contains(key),
            "expected the message to name `{key}`, got: {msg}"
        );
    }
}

#[test]
fn syntax_errors_give_the_position_but_never_quote_a_secret() {
    let msg = fault(&GOOD.replace("secret_key = \"k3y\"", "secret_key = \"sup3rs3cret\" oops"));
    assert!(msg.contains("line") && msg.contains("column"), "{msg}");
    assert!(!msg.contains("sup3rs3cret"), "{msg}");
}

#[test]
fn secrets_never_appear_in_errors() {
    let text = GOOD.replace(
        "secret_key = \"k3y\"",
        "secret_key = \"sup3rs3cret\"\nsecret_key_file = \"/x\"",
    );
    assert!(!fault(&text).contains("sup3rs3cret"));
    // A mistyped secret (a number, an array): serde would quote it.
    for value in [
        "123456789012",
        "[\"sup3rs3cret\"]",
        "{ a = \"sup3rs3cret\" }",
    ] {
        let text = GOOD.replace("secret_key = \"k3y\"", &format!("secret_key = {value}"));
        let e = load_str(&text).unwrap_err();
        assert_eq!(e.key(), Some("tencent.secret_key"));
        let shown = e.to_string();
        assert!(
            !shown.contains("123456789012") && !shown.contains("sup3rs3cret"),
            "{shown}"
        );
    }
}

#[test]
fn cron_validation() {
    assert!(validate_cron("0 */5 * * * *").is_ok());
    assert!(validate_cron("not cron").is_err());
}

/// The example file shows every default (set, or commented out): loaded
/// with its commented defaults switched on, it must give what a file that
/// sets nothing optional gives.
#[test]
fn the_example_file_and_the_defaults_agree() {
    let example = include_str!("../../config/bansync.toml");
    let switched_on: String = example
        .lines()
        .map(|l| {
            // `# key = value   # comment`: a commented default (not the
            // alternatives written as `# region = ...` or in prose).
            let t = l.trim_start();
            match t.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(k, _)| {
                        [
                            "confirm_delay",
                            "max_concurrent_walks",
                            "retry_schedule",
                            "max_in_flight",
                            "lift",
                        ]
                        .contains(&k)
                    }) =>
                {
                    rest.to_string()
                }
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let full = load_str(&switched_on).expect("the example loads");
    let minimal = load_str(
        r#"
[tencent]
sdkappid = 1400000000
identifier = "administrator"
secret_key = "k3y"
base_url = "http://127.0.0.1:8080"
[sources]
rooms = ["live-1"]
[[webhook]]
name = "moderation"
url = "http://127.0.0.1:9999/bansync"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
[[propagate]]
from = ["room:live-1"]
to = ["room:live-2"]
"#,
    )
    .expect("a minimal file loads");
    let (f, m) = (&full.tencent, &minimal.tencent);
    assert_eq!(f.usersig_ttl, m.usersig_ttl, "tencent.usersig_ttl");
    assert_eq!(
        f.requests_per_second, m.requests_per_second,
        "tencent.requests_per_second"
    );
    assert_eq!(f.timeout, m.timeout, "tencent.timeout");
    assert_eq!(full.store_path, minimal.store_path, "store.path");
    assert_eq!(full.retention, minimal.retention, "store.retention");
    let (f, m) = (&full.sync, &minimal.sync);
    assert_eq!(f.schedule, m.schedule, "sync.interval");
    assert_eq!(f.page_size, m.page_size, "sync.page_size");
    assert_eq!(f.initial, m.initial, "sync.initial");
    assert_eq!(f.confirm_delay, m.confirm_delay, "sync.confirm_delay");
    assert_eq!(
        f.max_concurrent_walks, m.max_concurrent_walks,
        "sync.max_concurrent_walks"
    );
    let (f, m) = (&full.webhooks[0], &minimal.webhooks[0]);
    assert_eq!(f.timeout, m.timeout, "webhook.timeout");
    assert_eq!(f.retry_schedule, m.retry_schedule, "webhook.retry_schedule");
    assert_eq!(f.max_in_flight, m.max_in_flight, "webhook.max_in_flight");
    assert_eq!(
        full.propagate[0].lift, minimal.propagate[0].lift,
        "propagate.lift"
    );
    assert_eq!(full.http_listen, minimal.http_listen, "http.listen");
    assert_eq!(full.log_format, minimal.log_format, "log.format");
    assert_eq!(full.log_level, minimal.log_level, "log.level");
}

#[test]
fn errors_name_their_key() {
    let e = load_str(&format!("{GOOD}\n[sync]\npage_size = 500\n")).unwrap_err();
    assert_eq!(e.key(), Some("sync.page_size"));
    assert!(matches!(e, ConfigError::Invalid { .. }));
    let e = load_str(&format!("{GOOD}\n[sync]\nbogus = 1\n")).unwrap_err();
    assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
}

#[test]
fn only_bansync_section_key_variables_configure() {
    for name in [
        "BANSYNC_BIN",
        "BANSYNC_SIM_SECRET_KEY",
        "BANSYNC_",
        "BANSYNC_FOO__BAR",
        "BANSYNC_SYNC__",
    ] {
        let env = Environment {
            vars: vec![(name.into(), "123".into())],
            ..Environment::default()
        };
        assert!(load_text(GOOD, &env).is_ok(), "{name} must be ignored");
    }
    let env = Environment {
        vars: vec![("BANSYNC_SYNC__PAGE_SIZE".into(), "7".into())],
        ..Environment::default()
    };
    assert_eq!(load_text(GOOD, &env).unwrap().sync.page_size, 7);
    let env = Environment {
        vars: vec![("BANSYNC_SYNC__BOGUS".into(), "7".into())],
        ..Environment::default()
    };
    assert!(
        load_text(GOOD, &env).is_err(),
        "a wrong key in a real section is named"
    );
}

#[test]
fn check_config_never_prints_url_credentials_or_queries() {
    let text = GOOD.replace(
        "https://hooks.example.com/bansync",
        "https://user:hunter2@hooks.example.com/bansync?token=s3cr3t",
    );
    let out = load_str(&text).unwrap().describe();
    assert!(
        !out.contains("hunter2") && !out.contains("s3cr3t") && !out.contains("user:"),
        "{out}"
    );
    assert!(
        out.contains("https://[redacted]@hooks.example.com/bansync?[redacted]"),
        "{out}"
    );
    assert_eq!(
        redacted_url("https://hooks.example.com/b"),
        "https://hooks.example.com/b"
    );
}

#[test]
fn plain_http_to_another_host_is_warned_about() {
    let s =
        load_str(&GOOD.replace("https://hooks.example.com", "http://hooks.example.com")).unwrap();
    let w = s.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("webhook moderation") && w[0].contains("plain http"),
        "{w:?}"
    );
    let s = load_str(&GOOD.replace("https://hooks.example.com", "http://127.0.0.1:9999")).unwrap();
    assert!(s.warnings().is_empty(), "loopback is fine");
    assert!(load_str(GOOD).unwrap().warnings().is_empty());
}

/// CONTRACT.md's example, as written there, loads whole (its secret files
/// replaced by inline values), and says what it says.
#[test]
fn the_contract_example_loads_whole() {
    // CONTRACT.md lives beside the repository (as in CI), not in it.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/CONTRACT.md");
    let Ok(contract) = std::fs::read_to_string(path) else {
        eprintln!("{path} not found: the contract example is not checked here");
        return;
    };
    let start = contract.find("```toml\n").expect("the example") + "```toml\n".len();
    let example = &contract[start..start + contract[start..].find("```").unwrap()];
    let e = load_str(example).unwrap_err();
    assert_eq!(e.key(), Some("tencent.secret_key_file"), "{e}");
    let rest = example
        .replace(
            "secret_key_file = \"/etc/bansync/tim-secret-key\"",
            "secret_key = \"k\"",
        )
        .replace(
            "token_file = \"/etc/bansync/callback-token\"",
            "token = \"t\"",
        );
    let s = load_str(&rest).unwrap();
    assert_eq!(
        s.retention,
        Some(std::time::Duration::from_secs(90 * 86400))
    );
    let d = s.discovery.as_ref().expect("[discovery]");
    assert!(d.groups && d.rooms);
    assert_eq!(d.interval, std::time::Duration::from_secs(600));
    let spec = |t: &str| t.parse::<crate::source::SourceSpec>().unwrap();
    assert!(d.admits(&spec("group:@TGS#x")));
    assert!(d.admits(&spec("room:live-9")));
    assert!(!d.admits(&spec("room:test-1")), "excluded");
    assert!(!d.admits(&spec("room:other")), "not included");
    let c = s.callback.as_ref().expect("[callback]");
    assert_eq!(c.listen.to_string(), "0.0.0.0:9188");
    assert_eq!(c.path, "/tencent/callback");
    assert_eq!(c.token.as_ref().map(|t| t.expose()), Some("t"));
    assert!(c.enrol_blocklists);
    assert!(s.found_filter().admits(&spec("blocklist:anyone")));
}

#[test]
fn discovery_and_callback_faults_are_named() {
    let base = GOOD;
    let with = |extra: &str| format!("{base}\n{extra}\n");
    for (extra, key) in [
        ("[discovery]\ngroups = false\nrooms = false", "discovery"),
        (
            "[discovery]\ninclude = [\"blocklist:*\"]",
            "discovery.include[0]",
        ),
        ("[discovery]\ninterval = \"0s\"", "discovery.interval"),
        ("[discovery]\nlisting = true", "discovery.listing"),
        ("[callback]\npath = \"/x\"", "callback.listen"),
        ("[callback]\nlisten = \"nowhere\"", "callback.listen"),
        ("[callback]\nlisten = \"127.0.0.1:9187\"", "callback.listen"),
        (
            "[callback]\nlisten = \"127.0.0.1:9188\"\npath = \"x\"",
            "callback.path",
        ),
        (
            "[callback]\nlisten = \"127.0.0.1:9188\"\ntoken = \"\"",
            "callback.token",
        ),
        (
            "[callback]\nlisten = \"127.0.0.1:9188\"\ntoken = \"a\"\ntoken_file = \"/x\"",
            "callback.token",
        ),
    ] {
        let e = load_str(&with(extra)).expect_err(extra);
        assert_eq!(e.key(), Some(key), "{extra}: {e}");
    }
    // A token never appears in an error, even a type error.
    let e = load_str(&with(
        "[callback]\nlisten = \"127.0.0.1:9188\"\ntoken = 918273645",
    ))
    .unwrap_err()
    .to_string();
    assert!(!e.contains("918273645"), "{e}");
    // Without [sources], discovery (or enrolment) is enough to start.
    let no_sources = |extra: &str| {
        let mut out = Vec::new();
        let mut skipping = false;
        for line in base.lines() {
            if line.starts_with('[') {
                skipping = line.starts_with("[sources]");
            }
            if !skipping {
                out.push(line);
            }
        }
        format!("{}\n{extra}\n", out.join("\n"))
    };
    let p = |t: &str| t.replace("[[propagate]]", "[[ignored]]");
    assert_eq!(
        load_str(&p(&no_sources(""))).unwrap_err().key(),
        Some("sources"),
    );
    let s = load_str(&no_sources("[discovery]\nrooms = false"));
    // GOOD's propagate rule names configured sources; without them it is
    // refused for that, not for the missing section.
    if let Err(e) = &s {
        assert_ne!(e.key(), Some("sources"), "{e}");
    }
}

#[test]
fn discovery_and_callback_from_the_environment() {
    let env = Environment {
        vars: vec![
            ("BANSYNC_DISCOVERY__ROOMS".into(), "false".into()),
            (
                "BANSYNC_DISCOVERY__EXCLUDE".into(),
                "group:test-*, group:qa-*".into(),
            ),
            ("BANSYNC_CALLBACK__LISTEN".into(), "127.0.0.1:9300".into()),
            ("BANSYNC_CALLBACK__ENROL_BLOCKLISTS".into(), "true".into()),
            ("BANSYNC_CALLBACK__TOKEN".into(), "tok".into()),
        ],
        ..Default::default()
    };
    let s = load_text(&format!("{GOOD}\n[discovery]\n"), &env).unwrap();
    let text = s.describe();
    assert!(text.contains("discovery: groups every 10m"), "{text}");
    assert!(text.contains("token [redacted]"), "{text}");
    let d = s.discovery.unwrap();
    assert!(d.groups && !d.rooms);
    assert_eq!(d.exclude.len(), 2);
    let c = s.callback.unwrap();
    assert!(c.enrol_blocklists);
    assert_eq!(c.listen.port(), 9300);
}
