DROP FUNCTION casebook_enter_temperatures(bigint[], uuid[], integer[], text[], timestamptz[],
                                          numeric[], text[], boolean[], timestamptz[], jsonb[],
                                          text[], text[], text[], text);
