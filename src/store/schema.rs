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
    // 3: mirrors carry an ownership state and the windows of ends
    // bansync's requests may have set (crate::mirror). Existing mirrors
    // were recorded without their request times: their end, give or take
    // the old five-second tolerance, stands for their window.
    r#"
    CREATE TABLE mirrors_v3 (
        target TEXT NOT NULL,
        account TEXT NOT NULL,
        origin_source TEXT NOT NULL,
        origin_event INTEGER NOT NULL,
        -- the end the mirror carries (the origin's)
        banned_until INTEGER NOT NULL,
        -- pending | owned | failed | cancelled | lifting | lifted | released
        state TEXT NOT NULL,
        -- "lo:hi lo:hi ...": ends bansync's recent requests may have set
        windows TEXT NOT NULL DEFAULT '',
        -- of those, the ones that can be on the list now
        current_windows TEXT NOT NULL DEFAULT '',
        -- windows of requests that got no answer (they may land late)
        unanswered_windows TEXT NOT NULL DEFAULT '',
        -- a request that is out: since (Unix s), the end it carries, its longest wait (s)
        in_flight_since INTEGER,
        in_flight_until INTEGER,
        in_flight_max INTEGER,
        -- the target's own running ban end before the mirror extended it
        prior_until INTEGER,
        -- the propagations row that acts for this record
        job INTEGER,
                -- "lo:hi": ends a restore of the target's own ban may have set
        restore_window TEXT,
        -- when bansync's last request for it was answered (Unix s)
        acted_s INTEGER,
        -- the origin on whose behalf the current ends were set
        holder TEXT,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (target, account)
    ) WITHOUT ROWID;
    INSERT INTO mirrors_v3 (target, account, origin_source, origin_event, banned_until, state, windows,
                            current_windows, prior_until, updated_ms)
        SELECT target, account, origin_source, origin_event, banned_until, 'owned',
               (banned_until - 5) || ':' || (banned_until + 5), (banned_until - 5) || ':' || (banned_until + 5),
               prior_until, applied_ms FROM mirrors;
    DROP TABLE mirrors;
    ALTER TABLE mirrors_v3 RENAME TO mirrors;
    CREATE INDEX mirrors_closed ON mirrors(updated_ms) WHERE state IN ('lifted', 'released', 'cancelled');
    -- Lifts queued by the old design are decided afresh (after a read of the target).
    UPDATE propagations SET action = 'lift' WHERE state = 0 AND action IN ('unban', 'restore');
    "#,
    // 4: retention looks up what still refers to an event.
    r#"
    CREATE INDEX deliveries_event ON deliveries(event);
    CREATE INDEX propagations_origin_event ON propagations(origin_event);
    CREATE INDEX mirrors_origin_event ON mirrors(origin_event);
    "#,
    // 5: sources found by discovery or named by callbacks, and the listings.
    r#"
    -- configured | discovered | callback
    ALTER TABLE sources ADD COLUMN origin TEXT NOT NULL DEFAULT 'configured';
    -- consecutive complete listings of its kind that did not show it
    ALTER TABLE sources ADD COLUMN missing_listings INTEGER NOT NULL DEFAULT 0;
    -- set when a source gone from the listings and the vendor is retired
    ALTER TABLE sources ADD COLUMN retired_at INTEGER;
    -- JSON array: accounts an enrolling callback named, reported by the first walk
    ALTER TABLE sources ADD COLUMN announce TEXT;
    CREATE TABLE listings (
        kind TEXT PRIMARY KEY,
        last_complete_at INTEGER,
        last_attempt_at INTEGER,
        found INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    "#,
    // 6: the scheduler's plan per source, for `status`: when it is next
    // expected to be walked, why, and why it was last walked.
    r#"
    ALTER TABLE sources ADD COLUMN next_walk_at INTEGER;
    ALTER TABLE sources ADD COLUMN next_walk_reason TEXT;
    ALTER TABLE sources ADD COLUMN last_walk_reason TEXT;
    "#,
];
