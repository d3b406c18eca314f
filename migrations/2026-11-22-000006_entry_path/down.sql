DROP FUNCTION casebook_create_temperature(bigint, bigint, bigint, timestamptz, numeric, text,
                                          boolean, bigint, timestamptz, text, jsonb, text, text);
DROP FUNCTION casebook_entry_context(bigint, uuid, boolean, text, regclass);
