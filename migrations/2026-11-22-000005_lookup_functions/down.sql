DROP FUNCTION casebook_write_context(text, boolean, bigint[]);
DROP FUNCTION casebook_caller(bigint, uuid);
