DROP FUNCTION casebook_enter_form_records(bigint[], uuid[], integer[], text[], text[], text[],
                                          text[], timestamptz[], jsonb[], timestamptz[],
                                          jsonb[], text[], text[], date[], date[],
                                          timestamptz[], boolean[], integer[], date[], date[],
                                          integer[], timestamptz[], text[], text, text, text);
