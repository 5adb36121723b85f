-- Refill evalsvc's `scores` table with 1,000,000 rows: users 1..10000 x exercises 1..100,
-- `correct` random with a fixed seed (every run gets the same data).  Rows go in
-- exercise-major order, id = (exercise-1)*10000 + user (wrk/get_one.lua relies on it): a
-- user's 100 rows are spread over the table.  Same layout as the shared harness's seed.
--
-- Where the schema has the attempt history (table score_attempts, migration 0003), every score
-- is seeded as if it had been written once through the API: one applied attempt, logged in
-- score_attempts (recorded_by 'bench-seed'), with the history columns that attempt gives it
-- (what migration 0003 backfills for existing scores).  Without it, the plain six columns.
--
-- The TRUNCATE also empties exercise_stats (a trigger) and the INSERT's statement-level
-- trigger refills it, so /scores/stats/exercises agrees with the rows.
-- run.sh times this, then runs VACUUM (ANALYZE) and CHECKPOINT separately.
--   psql -X -q -d DATABASE_URL -f bench/seed.sql
\set ON_ERROR_STOP on
SELECT to_regclass('score_attempts') IS NOT NULL AS history \gset
BEGIN;
TRUNCATE scores RESTART IDENTITY;
SELECT setseed(0.42) \g /dev/null
\if :history
TRUNCATE score_attempts RESTART IDENTITY;
INSERT INTO scores (user_id, exercise_id, correct, created_at, updated_at, attempts,
                    last_attempted_at, first_correct_at, first_attempt_correct,
                    attempts_to_correct)
SELECT user_id, exercise_id, correct, now(), now(), 1,
       now(), CASE WHEN correct THEN now() END, correct,
       CASE WHEN correct THEN 1 END
FROM (SELECT i % 10000 + 1 AS user_id, i / 10000 + 1 AS exercise_id, random() < 0.5 AS correct
      FROM generate_series(0, 999999) AS i) AS seed;
INSERT INTO score_attempts (score_id, user_id, exercise_id, correct, attempted_at, recorded_at,
                            recorded_by, attempt_id, applied, created_score)
SELECT id, user_id, exercise_id, correct, updated_at, updated_at, 'bench-seed', NULL, true, true
FROM scores ORDER BY id;
\else
INSERT INTO scores (user_id, exercise_id, correct, created_at, updated_at)
SELECT i % 10000 + 1, i / 10000 + 1, random() < 0.5, now(), now()
FROM generate_series(0, 999999) AS i;
\endif
COMMIT;
