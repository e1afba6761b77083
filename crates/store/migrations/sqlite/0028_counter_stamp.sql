-- A counter's stamp: the latest time a step of it was taken at (see ../postgres/, where a
-- group commit issues its invoices at the later of its clock and the stamp). SQLite's single
-- writer numbers invoices one transaction after another and reads its clock under the
-- database's lock; the column is kept so both trees have the same tables.
ALTER TABLE counters ADD COLUMN stamp INTEGER NOT NULL DEFAULT 0;
