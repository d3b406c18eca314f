-- Clinical records. Every table carries site and subject (for scoping in SQL), a version
-- (optimistic concurrency), who/when columns, and a soft delete: a record entered in error
-- is marked, never removed.
CREATE TABLE subjects (
    id                bigserial PRIMARY KEY,
    site_id           bigint NOT NULL REFERENCES sites (id),
    subject_code      text NOT NULL UNIQUE,
    status            text NOT NULL DEFAULT 'enrolled'
                      CHECK (status IN ('screening', 'enrolled', 'completed', 'withdrawn')),
    sex               text NOT NULL CHECK (sex IN ('female', 'male')),
    birth_year_month  text NOT NULL CHECK (birth_year_month ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
    weight_kg         numeric(5, 2) NOT NULL CHECK (weight_kg > 0),
    eligibility       jsonb NOT NULL,
    version           integer NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    created_by        bigint NOT NULL REFERENCES users (id),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    updated_by        bigint NOT NULL REFERENCES users (id),
    deleted_at        timestamptz,
    deleted_by        bigint REFERENCES users (id),
    deleted_reason    text
);
CREATE INDEX subjects_site ON subjects (site_id, id);

CREATE TABLE consents (
    id                           bigserial PRIMARY KEY,
    site_id                      bigint NOT NULL REFERENCES sites (id),
    subject_id                   bigint NOT NULL REFERENCES subjects (id),
    form_version                 text NOT NULL,
    signed_on                    date NOT NULL,
    signer                       text NOT NULL CHECK (signer IN ('participant', 'legal_representative')),
    representative_relationship  text,
    assent                       boolean,
    obtained_by                  bigint NOT NULL REFERENCES users (id),
    withdrawn_on                 date,
    withdrawal_scope             text CHECK (withdrawal_scope IN ('all', 'treatment', 'follow_up')),
    withdrawal_reason            text,
    version                      integer NOT NULL DEFAULT 1,
    created_at                   timestamptz NOT NULL DEFAULT now(),
    created_by                   bigint NOT NULL REFERENCES users (id),
    updated_at                   timestamptz NOT NULL DEFAULT now(),
    updated_by                   bigint NOT NULL REFERENCES users (id),
    deleted_at                   timestamptz,
    deleted_by                   bigint REFERENCES users (id),
    deleted_reason               text,
    CHECK (signer = 'participant' OR representative_relationship IS NOT NULL)
);
CREATE INDEX consents_subject ON consents (subject_id, id);

CREATE TABLE injections (
    id                  bigserial PRIMARY KEY,
    site_id             bigint NOT NULL REFERENCES sites (id),
    subject_id          bigint NOT NULL REFERENCES subjects (id),
    study_day           integer NOT NULL CHECK (study_day >= 1),
    administered_at     timestamptz NOT NULL,
    dose_mg             numeric(8, 2) NOT NULL CHECK (dose_mg >= 0),
    weight_kg           numeric(5, 2) NOT NULL CHECK (weight_kg > 0),
    route               text NOT NULL CHECK (route = 'subcutaneous'),
    injection_site      text NOT NULL,
    lot_number          text NOT NULL,
    given               boolean NOT NULL,
    not_given_reason    text,
    expected_dose_mg    numeric(8, 2) NOT NULL,
    protocol_deviation  boolean NOT NULL DEFAULT false,
    deviation_reason    text,
    version             integer NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    created_by          bigint NOT NULL REFERENCES users (id),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    updated_by          bigint NOT NULL REFERENCES users (id),
    deleted_at          timestamptz,
    deleted_by          bigint REFERENCES users (id),
    deleted_reason      text,
    CHECK (given OR not_given_reason IS NOT NULL)
);
CREATE INDEX injections_subject ON injections (subject_id, id);
-- one injection a study day; a record marked entered in error frees its day
CREATE UNIQUE INDEX injections_one_a_day ON injections (subject_id, study_day) WHERE deleted_at IS NULL;

CREATE TABLE temperatures (
    id           bigserial PRIMARY KEY,
    site_id      bigint NOT NULL REFERENCES sites (id),
    subject_id   bigint NOT NULL REFERENCES subjects (id),
    measured_at  timestamptz NOT NULL,
    celsius      numeric(3, 1) NOT NULL CHECK (celsius BETWEEN 30.0 AND 45.0),
    method       text NOT NULL,
    fever        boolean NOT NULL,
    version      integer NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   bigint NOT NULL REFERENCES users (id),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    updated_by   bigint NOT NULL REFERENCES users (id),
    deleted_at   timestamptz,
    deleted_by   bigint REFERENCES users (id),
    deleted_reason text
);
CREATE INDEX temperatures_subject ON temperatures (subject_id, id);

-- No DELETE for the application: clinical data are only ever marked deleted.
GRANT SELECT, INSERT, UPDATE ON subjects, consents, injections, temperatures TO casebook_app;
GRANT USAGE ON SEQUENCE subjects_id_seq, consents_id_seq, injections_id_seq, temperatures_id_seq TO casebook_app;
