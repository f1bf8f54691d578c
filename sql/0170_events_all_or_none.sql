-- The group commit's check that each command of several events got all of its rows or none
-- (app/store/group_append.py): given the commands (their numbers in the statement) that got only some, it raises
-- (SQLSTATE MME01, the numbers in DETAIL) unless there are none, and the whole statement, every command of the
-- group, is rolled back; the group is then written again without those commands. STABLE, and called with the
-- statement's one subquery as its argument: a one-time check, not one per row.
CREATE OR REPLACE FUNCTION mm_events_all_or_none(p_partly int[]) RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF cardinality(p_partly) > 0 THEN
        RAISE EXCEPTION '% command(s) of the group recorded in part', cardinality(p_partly)
            USING ERRCODE = 'MME01', DETAIL = array_to_string(p_partly, ',');
    END IF;
    RETURN true;
END
$$;
