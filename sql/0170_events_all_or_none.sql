-- The group commit's check that each command of several events got all of its rows or none
-- (app/store/group_append.py): given how many commands got only some, it raises (SQLSTATE MME01) unless none did,
-- and the whole statement, every command of the group, is rolled back. Called once per statement.
CREATE OR REPLACE FUNCTION mm_events_all_or_none(p_partly bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF p_partly > 0 THEN
        RAISE EXCEPTION '% command(s) of the group recorded in part', p_partly USING ERRCODE = 'MME01';
    END IF;
    RETURN true;
END
$$;
