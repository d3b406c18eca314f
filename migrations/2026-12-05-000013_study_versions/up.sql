-- Published versions of the study definition (issue 17). A server publishes the definition
-- it runs when its SHA-256 differs from the newest published one of the same study; records
-- keep the version they were entered under. Published versions are immutable: the
-- application may read and add, never change or remove.
CREATE TABLE study_versions (
    id                bigserial PRIMARY KEY,
    study_id          text NOT NULL,
    -- 1, 2, ... within the study, in publication order
    version           integer NOT NULL CHECK (version > 0),
    -- the amendment the file declares ([study] version)
    declared_version  text NOT NULL,
    sha256            text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    -- the definition as clients read it (GET /study/definition)
    definition        jsonb NOT NULL CHECK (jsonb_typeof(definition) = 'object'),
    published_at      timestamptz NOT NULL DEFAULT now(),
    -- the server instance that published it at its start
    published_by      text NOT NULL,
    -- two instances starting together publish once (they also take an advisory lock)
    UNIQUE (study_id, version)
);

GRANT SELECT, INSERT ON study_versions TO casebook_app;
GRANT USAGE ON SEQUENCE study_versions_id_seq TO casebook_app;
