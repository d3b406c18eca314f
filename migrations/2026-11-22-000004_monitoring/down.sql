DROP TABLE locks, signatures, verifications, query_messages, queries;
