DELETE FROM queries WHERE record_type = 'form_records';
ALTER TABLE queries DROP CONSTRAINT queries_record_type_check;
ALTER TABLE queries ADD CONSTRAINT queries_record_type_check
    CHECK (record_type IN ('subjects', 'consents', 'injections', 'temperatures', 'adverse_events'));
DROP TABLE form_records;
