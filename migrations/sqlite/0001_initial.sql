-- feedwatch schema, SQLite flavour (DESIGN §5). Never edit once released:
-- later changes are new files, mirrored in migrations/postgres/.
-- Timestamps are TEXT in RFC 3339 UTC with microseconds ("2025-06-04T08:30:02.123456Z"),
-- written only through binds so that they sort as text; uuids are hyphenated TEXT;
-- terms are a JSON array in TEXT.

CREATE TABLE sources (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    kind                 TEXT NOT NULL CHECK (kind IN ('feed', 'html')),
    url                  TEXT NOT NULL,
    state                TEXT NOT NULL DEFAULT 'active'
                         CHECK (state IN ('active', 'blocked', 'gone', 'disabled')),
    etag                 TEXT,
    last_modified        TEXT,
    next_poll_at         TEXT,
    last_polled_at       TEXT,
    last_status          INTEGER,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    last_error           TEXT,
    lease_owner          TEXT,
    lease_until          TEXT,
    failing_since        TEXT
);

CREATE TABLE stories (
    id            INTEGER PRIMARY KEY,
    source_id     INTEGER NOT NULL REFERENCES sources (id),
    url           TEXT NOT NULL,
    canonical_url TEXT NOT NULL UNIQUE,
    title         TEXT,
    summary       TEXT,
    body          TEXT,
    author        TEXT,
    published_at  TEXT,
    fetched_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    simhash       INTEGER,
    duplicate_of  INTEGER REFERENCES stories (id),
    fingerprint   BLOB
);
CREATE INDEX stories_url_idx ON stories (url);
CREATE INDEX stories_content_hash_idx ON stories (content_hash);
CREATE INDEX stories_published_at_idx ON stories (published_at);
CREATE INDEX stories_fetched_at_idx ON stories (fetched_at);

CREATE TABLE story_bands (
    band_key INTEGER NOT NULL,
    story_id INTEGER NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    PRIMARY KEY (band_key, story_id)
) WITHOUT ROWID;
CREATE INDEX story_bands_story_idx ON story_bands (story_id);

CREATE TABLE matches (
    story_id   INTEGER NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    topic      TEXT NOT NULL,
    score      REAL NOT NULL,
    terms      TEXT NOT NULL,
    snippet    TEXT NOT NULL,
    matched_at TEXT NOT NULL,
    PRIMARY KEY (story_id, topic)
);
CREATE INDEX matches_topic_idx ON matches (topic, matched_at);

CREATE TABLE deliveries (
    id               TEXT PRIMARY KEY,
    event            TEXT NOT NULL
                     CHECK (event IN ('story.matched', 'source.failing', 'source.recovered')),
    event_key        TEXT NOT NULL,
    story_id         INTEGER REFERENCES stories (id),
    source_id        INTEGER REFERENCES sources (id),
    webhook          TEXT NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    last_status_code INTEGER,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    delivered_at     TEXT,
    UNIQUE (event_key, webhook)
);
CREATE INDEX deliveries_due_idx ON deliveries (next_attempt_at) WHERE status = 'pending';

CREATE VIEW matched_stories AS
SELECT s.id            AS story_id,
       src.name        AS source,
       m.topic,
       s.title,
       s.url,
       s.canonical_url,
       s.published_at,
       m.score,
       m.terms,
       m.snippet,
       m.matched_at,
       s.duplicate_of
FROM matches m
JOIN stories s   ON s.id = m.story_id
JOIN sources src ON src.id = s.source_id;
