-- The group state in parts (core/src/groups/state.rs): convos.state keeps
-- the head (context, transcript hash, confirmation tag, queued proposals,
-- the tree's shape and hash: a few hundred bytes), and every non-blank node
-- of the ratchet tree gets a row, so that a commit writes the nodes it
-- changed (its path and the leaves it adds or removes) instead of the whole
-- group. States written before (JSON, the whole tree inline in
-- convos.state) still load, and move to this layout with their
-- conversation's next commit.
CREATE TABLE group_state_nodes (
    convo_id bytea NOT NULL REFERENCES convos ON DELETE CASCADE,
    -- The node's index in the array representation of the tree (leaf i is
    -- 2i, parent j is 2j + 1).
    node_index integer NOT NULL,
    node bytea NOT NULL,
    PRIMARY KEY (convo_id, node_index)
);

-- A new value with every write of a group's state, never reused (not even
-- by another conversation with the same group id later): a service replica
-- keeps parsed groups in memory and uses one only while the locked row
-- still has the version it was parsed from.
CREATE SEQUENCE group_state_versions;
ALTER TABLE convos
    ADD COLUMN state_version bigint NOT NULL DEFAULT nextval('group_state_versions');

-- Every commit writes the new GroupInfo whole (at 1,000 members about
-- 200 KB: it carries the ratchet tree). Its keys and signatures hardly
-- compress, so store it out of line without trying to.
ALTER TABLE convos ALTER COLUMN group_info SET STORAGE EXTERNAL;
