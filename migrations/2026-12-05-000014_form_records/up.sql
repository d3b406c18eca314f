-- Records of the forms a study definition describes (issue 17): one row per record, its
-- values as jsonb keyed by item id (numbers of decimal items as text, exactly as entered at
-- the item's decimals), under the definition version it was entered with.
CREATE TABLE form_records (
    id                bigserial PRIMARY KEY,
    site_id           bigint NOT NULL REFERENCES sites (id),
    subject_id        bigint NOT NULL REFERENCES subjects (id),
    form_id           text NOT NULL,
    -- the visit, for a form entered per visit
    visit_id          text,
    -- what a form entered once per visit is unique by (the scheduled visit's id); null
    -- where records repeat (logs, unscheduled visits)
    repeat_key        text,
    study_version_id  bigint NOT NULL REFERENCES study_versions (id),
    "values"          jsonb NOT NULL CHECK (jsonb_typeof("values") = 'object'),
    -- soft findings: [{"item": ..., "message": ...}]
    flags             jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(flags) = 'array'),
    version           integer NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    created_by        bigint NOT NULL REFERENCES users (id),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    updated_by        bigint NOT NULL REFERENCES users (id),
    -- the reason of the last change
    change_reason     text,
    deleted_at        timestamptz,
    deleted_by        bigint REFERENCES users (id),
    deleted_reason    text,
    CHECK ((deleted_at IS NULL) = (deleted_by IS NULL) AND (deleted_at IS NULL) = (deleted_reason IS NULL))
);
CREATE INDEX form_records_subject ON form_records (subject_id, form_id, id);
CREATE INDEX form_records_version ON form_records (study_version_id);
CREATE UNIQUE INDEX form_records_once ON form_records (subject_id, form_id, repeat_key)
    WHERE deleted_at IS NULL AND repeat_key IS NOT NULL;

-- queries may be raised on a form record
ALTER TABLE queries DROP CONSTRAINT queries_record_type_check;
ALTER TABLE queries ADD CONSTRAINT queries_record_type_check
    CHECK (record_type IN ('subjects', 'consents', 'injections', 'temperatures', 'adverse_events', 'form_records'));

GRANT SELECT, INSERT, UPDATE ON form_records TO casebook_app;
GRANT USAGE ON SEQUENCE form_records_id_seq TO casebook_app;
