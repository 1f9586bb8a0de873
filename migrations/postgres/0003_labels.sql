-- A person's judgement of a story for a topic (DESIGN §5), recorded by `feedwatch label`
-- and read by `feedwatch eval --stored`.

CREATE TABLE labels (
    story_id    bigint NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    topic       text NOT NULL,
    relevant    boolean NOT NULL,
    labelled_at timestamptz NOT NULL,
    PRIMARY KEY (story_id, topic)
);
CREATE INDEX labels_topic_idx ON labels (topic, labelled_at);
