-- The live projector's compare-and-set of a projection's checkpoint as a function that raises when the checkpoint
-- is no longer where the batch started (SQLSTATE MMC01), so the runner can send it with the COMMIT (and the
-- projection's NOTIFY) in one message: a statement that fails abandons the rest of the message, the COMMIT
-- included, and the batch is rolled back as before. One round trip less per projection batch: on the bench VM a
-- round trip costs ~105 us of CPU (client + server), and the market phase made ~3.5 such commits per order.
-- Same UPDATE as projections/checkpoints.py advance_from, same row lock, still the batch's last statement.
CREATE OR REPLACE FUNCTION mm_checkpoint_advance(
    p_name text, p_from_tx xid8, p_from_pos bigint, p_to_tx xid8, p_to_pos bigint, p_applied bigint,
    p_last_event_at timestamptz
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE projection_checkpoints
       SET tx_id = p_to_tx, position = p_to_pos, events_applied = events_applied + p_applied, updated_at = now(),
           last_event_at = COALESCE(p_last_event_at, last_event_at)
     WHERE name = p_name AND tx_id = p_from_tx AND position = p_from_pos;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'projection checkpoint % moved under the batch', p_name USING ERRCODE = 'MMC01';
    END IF;
END
$$;
