DROP TABLE temperatures, injections, consents, subjects;
