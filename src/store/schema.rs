//! The SQLite schema and its migrations, applied in order by
//! `PRAGMA user_version`. Never edit a released migration: add one.

pub const MIGRATIONS: &[&str] = &[
    // 1: sources, their entries, the event log, webhooks and deliveries.
    r#"
    CREATE TABLE sources (
        id INTEGER PRIMARY KEY,
        spec TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        -- new: never walked completely | ok | unavailable: its owner is gone
        status TEXT NOT NULL DEFAULT 'new',
        next_seq INTEGER NOT NULL DEFAULT 1,
        walks INTEGER NOT NULL DEFAULT 0,
        entries INTEGER NOT NULL DEFAULT 0,
        pending_absent INTEGER NOT NULL DEFAULT 0,
        digest BLOB,
        last_complete_walk_at INTEGER,
        last_attempt_at INTEGER,
        last_error TEXT,
        last_error_at INTEGER,
        consecutive_failures INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE entries (
        source_id INTEGER NOT NULL REFERENCES sources(id),
        account TEXT NOT NULL,
        value INTEGER NOT NULL,
        state INTEGER NOT NULL,
        expires_at INTEGER,
        PRIMARY KEY (source_id, account)
    ) WITHOUT ROWID;
    CREATE INDEX entries_expiry ON entries(expires_at) WHERE expires_at IS NOT NULL;
    CREATE INDEX entries_account ON entries(account);
    -- AUTOINCREMENT: ids are never reused, even after rows are deleted;
    -- the dispatcher orders lanes by id.
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        source_id INTEGER NOT NULL REFERENCES sources(id),
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        account TEXT,
        at_ms INTEGER NOT NULL,
        committed_ms INTEGER NOT NULL,
        body TEXT NOT NULL,
        UNIQUE (source_id, seq)
    );
    CREATE INDEX events_account ON events(account) WHERE account IS NOT NULL;
    CREATE INDEX events_committed ON events(committed_ms);
    CREATE TABLE webhooks (
        name TEXT PRIMARY KEY,
        disabled_at INTEGER,
        disabled_reason TEXT,
        delivered INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        webhook TEXT NOT NULL,
        event INTEGER NOT NULL REFERENCES events(id),
        source_id INTEGER NOT NULL,
        -- 0 owed, 1 dead (ran out of attempts)
        state INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL,
        last_attempt_ms INTEGER,
        last_status INTEGER,
        last_error TEXT,
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX deliveries_lane ON deliveries(webhook, source_id, id) WHERE state = 0;
    CREATE INDEX deliveries_dead ON deliveries(webhook, id) WHERE state = 1;
    "#,
    // 2: ban propagation: queued mirror actions and the bans bansync applied.
    r#"
    CREATE TABLE propagations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        origin_event INTEGER NOT NULL REFERENCES events(id),
        origin_source_id INTEGER NOT NULL,
        target TEXT NOT NULL,
        account TEXT NOT NULL,
        -- ban | unban | restore (the target's own, shorter ban)
        action TEXT NOT NULL,
        banned_until INTEGER,
        -- 0 queued, 1 applied, 2 failed, 3 skipped
        state INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL,
        error_code INTEGER,
        error_info TEXT,
        done_ms INTEGER
    );
    CREATE INDEX propagations_queue ON propagations(next_attempt_ms) WHERE state = 0;
    CREATE INDEX propagations_account ON propagations(account);
    CREATE TABLE mirrors (
        target TEXT NOT NULL,
        account TEXT NOT NULL,
        banned_until INTEGER NOT NULL,
        origin_source TEXT NOT NULL,
        origin_event INTEGER NOT NULL,
        applied_ms INTEGER NOT NULL,
        -- the target's own ban end before the mirror extended it, if any:
        -- lifting the mirror restores it instead of unbanning
        prior_until INTEGER,
        PRIMARY KEY (target, account)
    ) WITHOUT ROWID;
    "#,
];
