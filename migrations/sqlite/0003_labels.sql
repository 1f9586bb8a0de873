-- A person's judgement of a story for a topic (DESIGN §5), recorded by `feedwatch label`
-- and read by `feedwatch eval --stored`. relevant is 0 or 1; labelled_at is RFC 3339 UTC text.

CREATE TABLE labels (
    story_id    INTEGER NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    topic       TEXT NOT NULL,
    relevant    INTEGER NOT NULL CHECK (relevant IN (0, 1)),
    labelled_at TEXT NOT NULL,
    PRIMARY KEY (story_id, topic)
);
CREATE INDEX labels_topic_idx ON labels (topic, labelled_at);
