-- Window totals are noised before the published products are formed (docs/PRIVACY.md §10), so a
-- product term of a quiet hour can be negative: nn, qq and qn become signed. nn2 (a sum of
-- squares) stays unsigned.
ALTER TABLE {db}.flow_components MODIFY COLUMN nn Int64;
ALTER TABLE {db}.flow_components MODIFY COLUMN qq Int64;
ALTER TABLE {db}.flow_components MODIFY COLUMN qn Int64;
