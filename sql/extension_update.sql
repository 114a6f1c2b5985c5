--
-- Extension versions: CREATE EXTENSION iq_fdw VERSION '0.1' then ALTER
-- EXTENSION iq_fdw UPDATE gives the same objects, definitions and comments
-- as a fresh CREATE EXTENSION iq_fdw at the default version.
--
-- iq_objects: what an install of iq_fdw consists of, one row per member of
-- the extension (pg_depend, deptype 'e'), with its definition and comment
CREATE TEMP VIEW iq_objects AS
  SELECT pg_describe_object(d.classid, d.objid, d.objsubid) AS object,
         CASE d.classid
           WHEN 'pg_proc'::regclass THEN pg_get_functiondef(d.objid)
           WHEN 'pg_class'::regclass THEN pg_get_viewdef(d.objid)
           WHEN 'pg_foreign_data_wrapper'::regclass
             THEN (SELECT concat_ws(' ', w.fdwhandler::regproc, w.fdwvalidator::regproc,
                                    w.fdwacl, w.fdwoptions)
                   FROM pg_foreign_data_wrapper w WHERE w.oid = d.objid)
         END AS definition,
         (SELECT c.description FROM pg_description c
          WHERE c.classoid = d.classid AND c.objoid = d.objid
            AND c.objsubid = d.objsubid) AS comment
  FROM pg_depend d
  WHERE d.refclassid = 'pg_extension'::regclass
    AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'iq_fdw')
    AND d.deptype = 'e'
    -- PostgreSQL 17 also records a view's row type and its array type as
    -- members; they come and go with the view, listed above
    AND NOT (d.classid = 'pg_type'::regclass AND EXISTS (
          SELECT 1 FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem
          WHERE t.oid = d.objid AND (t.typrelid <> 0 OR e.typrelid <> 0)));

-- pg_regress created it at the default version
SELECT extversion FROM pg_extension WHERE extname = 'iq_fdw';
SELECT name, version, installed FROM pg_available_extension_versions
WHERE name = 'iq_fdw' ORDER BY version;
CREATE TEMP TABLE fresh AS TABLE iq_objects;
SELECT object, comment IS NOT NULL AS has_comment FROM fresh ORDER BY object;

-- the library fills as many columns of iq_worker() as its version declares
SELECT state IS NOT NULL AS answers,
       restore_partition IS NULL OR restore_total >= 0 AS restore_shown
FROM iq_worker();

DROP EXTENSION iq_fdw;
CREATE EXTENSION iq_fdw VERSION '0.4';
SELECT state IS NOT NULL AS answers, engine_restarts >= 0 AS last_column FROM iq_worker();

DROP EXTENSION iq_fdw;
CREATE EXTENSION iq_fdw VERSION '0.1';
SELECT extversion FROM pg_extension WHERE extname = 'iq_fdw';
ALTER EXTENSION iq_fdw UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'iq_fdw';
CREATE TEMP TABLE updated AS TABLE iq_objects;

-- no difference either way (NULL-safe: EXCEPT treats NULLs as equal)
SELECT 'only fresh' AS side, * FROM (TABLE fresh EXCEPT TABLE updated) f
UNION ALL
SELECT 'only updated', * FROM (TABLE updated EXCEPT TABLE fresh) u;
SELECT (SELECT count(*) FROM fresh) AS fresh, (SELECT count(*) FROM updated) AS updated;

-- the path PostgreSQL knows, and nothing beyond the default
SELECT source, target, path FROM pg_extension_update_paths('iq_fdw')
WHERE path IS NOT NULL ORDER BY source, target;
ALTER EXTENSION iq_fdw UPDATE;

-- the later tests find it as pg_regress left it
DROP EXTENSION iq_fdw;
CREATE EXTENSION iq_fdw;
SELECT extversion FROM pg_extension WHERE extname = 'iq_fdw';
