//! Exports: streamed CSV, ODM 1.3.2 and SDTM datasets, read back as a sponsor would.
