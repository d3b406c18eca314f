-- casebook_write_context has had no caller since the entry path read a subject's write
-- context in one statement of its own (src/db/entry_context.rs); code nothing reaches goes.
DROP FUNCTION casebook_write_context(text, boolean, bigint[]);
