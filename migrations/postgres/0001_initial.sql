-- feedwatch schema, PostgreSQL flavour (DESIGN §5). Never edit once released:
-- later changes are new files, mirrored in migrations/sqlite/.

CREATE TABLE sources (
    id                   BIGSERIAL PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    kind                 TEXT NOT NULL CHECK (kind IN ('feed', 'html')),
    url                  TEXT NOT NULL,
    state                TEXT NOT NULL DEFAULT 'active'
                         CHECK (state IN ('active', 'blocked', 'gone', 'disabled')),
    etag                 TEXT,
    last_modified        TEXT,
    next_poll_at         TIMESTAMPTZ,
    last_polled_at       TIMESTAMPTZ,
    last_status          INT,
    consecutive_failures INT NOT NULL DEFAULT 0,
    last_error           TEXT,
    lease_owner          TEXT,
    lease_until          TIMESTAMPTZ,
    -- when the current run of consecutive failures began (names source.* events)
    failing_since        TIMESTAMPTZ
);

CREATE TABLE stories (
    id            BIGSERIAL PRIMARY KEY,
    source_id     BIGINT NOT NULL REFERENCES sources (id),
    url           TEXT NOT NULL,
    canonical_url TEXT NOT NULL UNIQUE,
    title         TEXT,
    summary       TEXT,
    body          TEXT,
    author        TEXT,
    published_at  TIMESTAMPTZ,
    fetched_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    content_hash  TEXT NOT NULL,
    simhash       BIGINT,
    duplicate_of  BIGINT REFERENCES stories (id),
    -- near-duplicate fingerprint (see src/dedup), verified after a band lookup
    fingerprint   BYTEA,
    search        TSVECTOR GENERATED ALWAYS AS (
                      to_tsvector('english',
                          left(coalesce(title, '') || ' ' || coalesce(body, ''), 500000))
                  ) STORED
);
CREATE INDEX stories_url_idx ON stories (url);
CREATE INDEX stories_content_hash_idx ON stories (content_hash);
CREATE INDEX stories_published_at_idx ON stories (published_at);
CREATE INDEX stories_fetched_at_idx ON stories (fetched_at);
CREATE INDEX stories_search_idx ON stories USING GIN (search);

-- LSH band keys of each story's fingerprint: near-duplicate candidates are
-- the stories sharing at least one key.
CREATE TABLE story_bands (
    band_key BIGINT NOT NULL,
    story_id BIGINT NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    PRIMARY KEY (band_key, story_id)
);
CREATE INDEX story_bands_story_idx ON story_bands (story_id);

CREATE TABLE matches (
    story_id   BIGINT NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    topic      TEXT NOT NULL,
    score      DOUBLE PRECISION NOT NULL,
    terms      TEXT[] NOT NULL,
    snippet    TEXT NOT NULL,
    matched_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (story_id, topic)
);
CREATE INDEX matches_topic_idx ON matches (topic, matched_at);

CREATE TABLE deliveries (
    id               UUID PRIMARY KEY,
    event            TEXT NOT NULL
                     CHECK (event IN ('story.matched', 'source.failing', 'source.recovered')),
    event_key        TEXT NOT NULL,
    story_id         BIGINT REFERENCES stories (id),
    source_id        BIGINT REFERENCES sources (id),
    webhook          TEXT NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         INT NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    last_status_code INT,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    delivered_at     TIMESTAMPTZ,
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
