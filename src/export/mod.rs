//! Exports for sponsors: streamed CSV, CDISC ODM 1.3.2 XML, SDTM-style datasets.
