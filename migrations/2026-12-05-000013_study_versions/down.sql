DROP TABLE study_versions;
