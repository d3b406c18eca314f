DROP INDEX verifications_one_current;
DROP INDEX locks_one_active_subject;
DROP INDEX locks_one_active_site;
DROP INDEX locks_one_active_study;
