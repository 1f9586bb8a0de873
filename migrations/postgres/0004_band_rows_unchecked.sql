-- The near-duplicate index (`story_bands`, 50 rows per story) without its foreign key.
-- The key's check ran once per band row, i.e. 50 times per stored story, and cost about
-- as much as the index inserts themselves (issue 12's profile of a first ingest). The
-- daemon never deletes stories, and the candidate lookup joins `stories`, so a band row
-- left behind by a story deleted by hand is never read; the `(band_key, story_id)` key
-- and the `story_id` index stay.
ALTER TABLE story_bands DROP CONSTRAINT IF EXISTS story_bands_story_id_fkey;
