-- Restricted data leaves the warehouse (issue 11, docs/PRIVACY.md §10): per-(camera, window, group)
-- occurrence cells are linkable by design and may live at most 2 h anywhere, so ClickHouse, which
-- keeps rows for months, must not hold them. The sink stopped landing them when the flow
-- aggregator's published tier (0005) replaced them; this drops the landing table and everything
-- built on it, with whatever an older deployment still holds:
--   group_occurrences (0001)             per-window group cells, the landing table
--   occurrences_by_window (+ _mv, 0004)  the same cells re-sorted for the old SQL flow estimator
--   camera_window_totals (+ _mv, 0004)   per camera-window totals fed from the cells
--   camera_hourly_occurrences (0002)     view over group_occurrences
--   footfall_hourly (0004)               view over camera_window_totals
-- Nothing published reads them: analysts, the report and Grafana read flow_components,
-- footfall_components and demographics_hourly (which is fed by demographic_counts and stays).
-- `flowctl audit ages` fails while any table of the database has a group_id column.
-- Materialised views first (they insert into the tables), then plain views, then the tables.
-- DROP TABLE, not DROP VIEW: ClickHouse 18.16 has no DROP VIEW; current releases drop views with it too.
DROP TABLE IF EXISTS {db}.occurrences_by_window_mv;
DROP TABLE IF EXISTS {db}.camera_window_totals_mv;
DROP TABLE IF EXISTS {db}.camera_hourly_occurrences;
DROP TABLE IF EXISTS {db}.footfall_hourly;
DROP TABLE IF EXISTS {db}.occurrences_by_window;
DROP TABLE IF EXISTS {db}.camera_window_totals;
DROP TABLE IF EXISTS {db}.group_occurrences;
