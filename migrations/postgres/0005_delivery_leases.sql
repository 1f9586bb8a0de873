-- Claims on deliveries name their daemon (issue 14), as claims on sources already do
-- (`sources.lease_owner`): the daemon renews its own claims while it works, hands them
-- back when it stops, and takes back at start those a crash of it left. NULL when no
-- daemon holds the delivery. Mirrored in migrations/postgres/ and migrations/sqlite/.
ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;
CREATE INDEX deliveries_lease_owner_idx ON deliveries (lease_owner) WHERE lease_owner IS NOT NULL;
