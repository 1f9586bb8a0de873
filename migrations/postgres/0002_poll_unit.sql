-- A poll is one unit of work (DESIGN §1, §3, §6). Mirrored in migrations/sqlite/.
--
-- stories.raw_hash: a hash of the entry as the source served it, so that a poll skips the
-- stories it already holds unchanged before any normalising or matching.
-- stories.simhash: dropped; nothing read it (the fingerprint column carries what dedup uses).
ALTER TABLE stories ADD COLUMN raw_hash TEXT;
ALTER TABLE stories DROP COLUMN simhash;

-- The content-hash lookup (`WHERE content_hash = $1 ORDER BY id LIMIT 1`) is served by
-- this index as written, so its plan does not wait on autovacuum's first ANALYZE.
CREATE INDEX stories_content_hash_id_idx ON stories (content_hash, id);
DROP INDEX stories_content_hash_idx;

-- Which (story cluster, topic) each webhook has been alerted of: the alert rule's memory.
-- A cluster is a story and its duplicates, named by its first story (`duplicate_of`'s target).
CREATE TABLE alerts (
    cluster_id BIGINT NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    topic      TEXT NOT NULL,
    webhook    TEXT NOT NULL,
    story_id   BIGINT NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    alerted_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (cluster_id, topic, webhook)
);
INSERT INTO alerts (cluster_id, topic, webhook, story_id, alerted_at)
SELECT DISTINCT ON (COALESCE(s.duplicate_of, s.id), m.topic, d.webhook)
       COALESCE(s.duplicate_of, s.id), m.topic, d.webhook, s.id, d.created_at
FROM deliveries d
JOIN stories s ON s.id = d.story_id
JOIN matches m ON m.story_id = s.id
WHERE d.event = 'story.matched'
ORDER BY COALESCE(s.duplicate_of, s.id), m.topic, d.webhook, d.created_at;

-- Article pages that could not be fetched yet: tried again on later polls (their feed or
-- listing keeps its validators meanwhile) until `attempts` reaches the pipeline's limit.
CREATE TABLE page_failures (
    source_id     BIGINT NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    url           TEXT NOT NULL,
    attempts      INT NOT NULL,
    last_error    TEXT NOT NULL,
    last_tried_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source_id, url)
);
