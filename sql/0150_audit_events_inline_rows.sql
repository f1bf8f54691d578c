-- Keep audit rows up to a page inline instead of moving their long values to TOAST at ~2 kB. A feed row carries
-- its data (jsonb) and its export line (bytea, ~1.1 kB of UUIDs, hex hashes and JSON: pglz rarely shrinks it by
-- the 25% it demands, so it was stored out of line uncompressed, after a failed compression attempt): in the
-- market bench 23% of rows crossed the 2 kB threshold, each paying a compression attempt and a TOAST heap and
-- index insert on the projector's hot path, and a TOAST fetch on every export read. Measured on 20-row batches
-- of ~2 kB rows (tools: the projection's own INSERT): 114-210 -> 80-169 us a row. Only new rows are affected;
-- rows above ~8 kB are still toasted. Takes SHARE UPDATE EXCLUSIVE (no rewrite, readers and writers go on).
ALTER TABLE audit_events SET (toast_tuple_target = 8160);
