-- jobq: the whole data model.
--
-- This file is a list of migrations. Each `-- migration N` section moves a database from
-- version N-1 to version N. A fresh file applies every section; an older file applies the
-- sections after its version, all in one transaction, which also records them in
-- `jobq_migrations` (the `-- bookkeeping` section). A released section is never edited:
-- changes go into a new section at the end.
--
-- Conventions: every table and view is prefixed `jobq_`, so jobq can share a file with an
-- application's own tables. Times are integer milliseconds since the Unix epoch, UTC, and
-- always come from jobq's clock (never from SQLite's `now`). The views turn them into ISO
-- 8601 text for people using the `sqlite3` shell.

-- bookkeeping

-- Which migrations the database has had, one row each: jobq's schema version is the
-- highest. It is kept here, not in `PRAGMA user_version`, which belongs to the application
-- whose file jobq may share. (Files from before this table kept version 1 in
-- user_version; opening one records it here and sets user_version back to 0.) Created, if
-- missing, by the transaction that applies migrations.
CREATE TABLE IF NOT EXISTS jobq_migrations (
    version    INTEGER PRIMARY KEY,
    applied_at INTEGER NOT NULL
);

-- migration 1

-- Owners: a tenant of the queue. Jobs and groups carry an owner id; a handle scoped to an
-- owner sees only that owner's rows. An owner row is needed only for a budget or tokens.
CREATE TABLE jobq_owners (
    id           TEXT PRIMARY KEY NOT NULL CHECK (length(id) BETWEEN 1 AND 200),
    budget_cents INTEGER CHECK (budget_cents IS NULL OR budget_cents >= 0),
    created_at   INTEGER NOT NULL
);

-- API tokens of owners. A token reads `jobq_<id>_<secret>`; only the SHA-256 of the secret
-- is kept, and it is compared in constant time.
CREATE TABLE jobq_tokens (
    id          TEXT PRIMARY KEY NOT NULL,
    owner_id    TEXT NOT NULL REFERENCES jobq_owners (id) ON DELETE CASCADE,
    secret_hash TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX jobq_tokens_owner ON jobq_tokens (owner_id);

-- Groups: the parent of a set of jobs (a campaign, a project, a batch). Deleting a group
-- deletes its jobs. A group's stage and progress are derived from its jobs, never stored.
CREATE TABLE jobq_groups (
    id         TEXT PRIMARY KEY NOT NULL,
    owner      TEXT,
    name       TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 500),
    metadata   TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    created_at INTEGER NOT NULL
);
CREATE INDEX jobq_groups_owner ON jobq_groups (owner, id) WHERE owner IS NOT NULL;

-- Jobs. `status` moves only as the state machine in DESIGN.md allows; the Rust code is
-- the one writer of every transition, and each finishing statement is guarded by the lease:
-- status 'running', the same `locked_by`, the same `claims`. (`claims` counts every claim of
-- the job and, unlike `attempts`, never starts again: a lease from before a manual retry
-- can never match a later claim.)
--
-- `id_key` is the row key: the first 64 bits of the id (its millisecond timestamp, version and
-- 12-bit counter) as an integer, which jobq keeps unique. So a lookup by id is an integer
-- seek (`id_key = ? AND id = ?`), every index carries an 8-byte key instead of 36
-- characters of text, ordering by `id_key` orders by `id`, and no second index on `id` is
-- needed. jobq is the only writer of this table and always sets both.
CREATE TABLE jobq_jobs (
    id_key          INTEGER PRIMARY KEY,                -- the first 64 bits of id
    id              TEXT NOT NULL,                      -- UUID v7: time-ordered
    queue           TEXT NOT NULL DEFAULT 'default' CHECK (length(queue) BETWEEN 1 AND 200),
    kind            TEXT NOT NULL CHECK (length(kind) BETWEEN 1 AND 200),
    -- Spelled as ORs: SQLite evaluates an IN list of three or more constants by building a
    -- temporary b-tree, on every insert and update.
    status          TEXT NOT NULL DEFAULT 'queued'
                    CHECK (status = 'queued' OR status = 'running' OR status = 'retry'
                           OR status = 'succeeded' OR status = 'failed' OR status = 'cancelled'),
    priority        INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    claims          INTEGER NOT NULL DEFAULT 0 CHECK (claims >= 0), -- every claim, never reset: the lease
    max_attempts    INTEGER NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    run_after       INTEGER NOT NULL,
    locked_by       TEXT,                               -- the worker of the last claim
    locked_at       INTEGER,
    heartbeat_at    INTEGER,
    stage           TEXT,
    progress        REAL NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 1),
    input           TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(input)),
    output          TEXT CHECK (output IS NULL OR json_valid(output)),
    idempotency_key TEXT,
    last_error      TEXT,
    error_code      TEXT,
    errors          TEXT NOT NULL DEFAULT '[]',             -- written only by json_insert
    cost_cents      INTEGER NOT NULL DEFAULT 0 CHECK (cost_cents >= 0),
    owner           TEXT,
    group_id        TEXT REFERENCES jobq_groups (id) ON DELETE CASCADE,
    external_id     TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    started_at      INTEGER,
    completed_at    INTEGER,                            -- set exactly when the status is terminal
    CHECK ((status = 'succeeded' OR status = 'failed' OR status = 'cancelled') = (completed_at IS NOT NULL))
);

-- The claim: ready jobs of a queue in claim order. Partial, so finished jobs never slow it
-- down; `kind`, `owner` and `status` ride along so the claim's filters, the ready counts and
-- the oldest ready job are all answered from the index alone (SQLite does not take a
-- partial index's own condition as read, so without `status` each entry costs a row read).
CREATE INDEX jobq_jobs_ready ON jobq_jobs (queue, priority DESC, run_after, id_key, kind, owner, status)
    WHERE status IN ('queued', 'retry');
-- Jobs by status, except the two bulk statuses every job passes through (`queued` when
-- enqueued, `succeeded` when done): an enqueue never writes this index, a claim adds one
-- entry and a success removes it. Listing running, retrying, failed or cancelled jobs and
-- counting them read it (by queue too: `queue` rides along); `queued` jobs are counted from
-- the ready index.
CREATE INDEX jobq_jobs_status ON jobq_jobs (status, id_key, queue)
    WHERE status NOT IN ('queued', 'succeeded');
-- Finished jobs by status and completion time, with what their statistics need: counts by
-- status and queue, run times (completed_at - started_at) and queue waits (started_at -
-- created_at) over a time window, the dead letter newest first, and pruning are all range
-- scans of this index alone.
CREATE INDEX jobq_jobs_finished ON jobq_jobs (status, completed_at, queue, kind, started_at, created_at)
    WHERE completed_at IS NOT NULL;
-- Listing by owner and group; the cascade from a group.
CREATE INDEX jobq_jobs_owner ON jobq_jobs (owner, id_key) WHERE owner IS NOT NULL;
CREATE INDEX jobq_jobs_group ON jobq_jobs (group_id, id_key) WHERE group_id IS NOT NULL;
-- Idempotency keys are unique per owner (no owner counts as one owner).
CREATE UNIQUE INDEX jobq_jobs_idempotency ON jobq_jobs (coalesce(owner, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Failed jobs with no attempts left, or failed permanently: the dead letter.
CREATE VIEW jobq_dead_letter_jobs AS
SELECT id, queue, kind, attempts, max_attempts, error_code, last_error, stage, owner, group_id,
       strftime('%Y-%m-%dT%H:%M:%fZ', created_at / 1000.0, 'unixepoch') AS created_at,
       strftime('%Y-%m-%dT%H:%M:%fZ', completed_at / 1000.0, 'unixepoch') AS failed_at,
       input
FROM jobq_jobs
WHERE status = 'failed'
ORDER BY completed_at DESC;

-- What runs now, how far along it is, and how fresh its heartbeat is.
CREATE VIEW jobq_running_jobs_monitor AS
SELECT id, queue, kind, stage, progress, attempts, locked_by AS worker,
       CAST(((julianday('now') - 2440587.5) * 86400000.0 - started_at) / 1000 AS INTEGER)
           AS running_seconds,
       CAST(((julianday('now') - 2440587.5) * 86400000.0 - coalesce(heartbeat_at, locked_at)) / 1000
           AS INTEGER) AS heartbeat_age_seconds,
       strftime('%Y-%m-%dT%H:%M:%fZ', started_at / 1000.0, 'unixepoch') AS started_at
FROM jobq_jobs
WHERE status = 'running'
ORDER BY started_at;

-- Jobs per queue and status, with the age of the oldest ready job.
CREATE VIEW jobq_queue_stats AS
SELECT queue,
       count(*) FILTER (WHERE status = 'queued') AS queued,
       count(*) FILTER (WHERE status = 'running') AS running,
       count(*) FILTER (WHERE status = 'retry') AS retry,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       count(*) AS total
FROM jobq_jobs
GROUP BY queue
ORDER BY queue;

-- Run durations (completed_at - started_at) and queue waits (started_at - created_at) of
-- finished jobs per status: count, average, the exact nearest-rank p50 and p95 (the value at
-- rank ceil(p * n)) and the maximum, in seconds. The same figures as `jobq timing`.
CREATE VIEW jobq_timing_stats AS
WITH measured AS (
    SELECT status, (completed_at - started_at) / 1000.0 AS run,
           (started_at - created_at) / 1000.0 AS wait
    FROM jobq_jobs
    WHERE completed_at IS NOT NULL AND started_at IS NOT NULL
),
ranked AS (
    SELECT status, run, wait,
           row_number() OVER (PARTITION BY status ORDER BY run) AS run_rank,
           row_number() OVER (PARTITION BY status ORDER BY wait) AS wait_rank,
           count(*) OVER (PARTITION BY status) AS n
    FROM measured
)
SELECT status,
       count(*) AS count,
       avg(run) AS avg_duration_seconds,
       max(CASE WHEN run_rank = (50 * n + 99) / 100 THEN run END) AS p50_seconds,
       max(CASE WHEN run_rank = (95 * n + 99) / 100 THEN run END) AS p95_seconds,
       max(run) AS max_seconds,
       avg(wait) AS avg_wait_seconds,
       max(CASE WHEN wait_rank = (50 * n + 99) / 100 THEN wait END) AS p50_wait_seconds,
       max(CASE WHEN wait_rank = (95 * n + 99) / 100 THEN wait END) AS p95_wait_seconds
FROM ranked
GROUP BY status
ORDER BY status;

-- How many jobs sit at each stage, per status: where the pipeline spends its time.
CREATE VIEW jobq_stage_distribution AS
SELECT stage, status, count(*) AS count
FROM jobq_jobs
GROUP BY stage, status
ORDER BY count DESC, stage, status;

-- Counts and costs per owner, group and status.
CREATE VIEW jobq_job_summary AS
SELECT owner, group_id, status,
       count(*) AS count,
       sum(cost_cents) AS total_cost_cents,
       avg(cost_cents) AS avg_cost_cents,
       strftime('%Y-%m-%dT%H:%M:%fZ', max(created_at) / 1000.0, 'unixepoch') AS last_created_at
FROM jobq_jobs
GROUP BY owner, group_id, status
ORDER BY owner, group_id, status;

-- migration 2

-- Queue wait is measured from when a job became ready (`run_after`: its enqueue, its
-- scheduled time, its retry time, or its release), not from its creation: the finished
-- index carries `run_after` for it instead of `created_at`.
DROP INDEX jobq_jobs_finished;
CREATE INDEX jobq_jobs_finished ON jobq_jobs (status, completed_at, queue, kind, started_at, run_after)
    WHERE completed_at IS NOT NULL;

-- A `run_after` in the past means "now": it no longer moves a job ahead of older jobs or
-- makes it look as if it had waited for decades.
UPDATE jobq_jobs SET run_after = created_at WHERE run_after < created_at;

-- Costs are bounded (0 to 10^12 cents per job); a cost pushed past the bound, or stored as
-- a REAL by an overflow, comes back into range so that every row reads.
UPDATE jobq_jobs SET cost_cents = 1000000000000
WHERE typeof(cost_cents) <> 'integer' OR cost_cents > 1000000000000;

-- The dead letter, newest failure first: a range of the finished index read backwards.
DROP VIEW jobq_dead_letter_jobs;
CREATE VIEW jobq_dead_letter_jobs AS
SELECT id, queue, kind, attempts, max_attempts, error_code, last_error, stage, owner, group_id,
       strftime('%Y-%m-%dT%H:%M:%fZ', created_at / 1000.0, 'unixepoch') AS created_at,
       strftime('%Y-%m-%dT%H:%M:%fZ', completed_at / 1000.0, 'unixepoch') AS failed_at,
       input
FROM jobq_jobs
WHERE status = 'failed' AND completed_at IS NOT NULL
ORDER BY completed_at DESC;

-- What runs now: a range of the status index (the literal NOT IN lets SQLite see that the
-- partial index covers the query).
DROP VIEW jobq_running_jobs_monitor;
CREATE VIEW jobq_running_jobs_monitor AS
SELECT id, queue, kind, stage, progress, attempts, locked_by AS worker,
       CAST(((julianday('now') - 2440587.5) * 86400000.0 - started_at) / 1000 AS INTEGER)
           AS running_seconds,
       CAST(((julianday('now') - 2440587.5) * 86400000.0 - coalesce(heartbeat_at, locked_at)) / 1000
           AS INTEGER) AS heartbeat_age_seconds,
       strftime('%Y-%m-%dT%H:%M:%fZ', started_at / 1000.0, 'unixepoch') AS started_at
FROM jobq_jobs
WHERE status NOT IN ('queued', 'succeeded') AND status = 'running'
ORDER BY started_at;

-- Run durations and queue waits, the wait now from when the job became ready.
DROP VIEW jobq_timing_stats;
CREATE VIEW jobq_timing_stats AS
WITH measured AS (
    SELECT status, (completed_at - started_at) / 1000.0 AS run,
           (started_at - run_after) / 1000.0 AS wait
    FROM jobq_jobs
    WHERE completed_at IS NOT NULL AND started_at IS NOT NULL
),
ranked AS (
    SELECT status, run, wait,
           row_number() OVER (PARTITION BY status ORDER BY run) AS run_rank,
           row_number() OVER (PARTITION BY status ORDER BY wait) AS wait_rank,
           count(*) OVER (PARTITION BY status) AS n
    FROM measured
)
SELECT status,
       count(*) AS count,
       avg(run) AS avg_duration_seconds,
       max(CASE WHEN run_rank = (50 * n + 99) / 100 THEN run END) AS p50_seconds,
       max(CASE WHEN run_rank = (95 * n + 99) / 100 THEN run END) AS p95_seconds,
       max(run) AS max_seconds,
       avg(wait) AS avg_wait_seconds,
       max(CASE WHEN wait_rank = (50 * n + 99) / 100 THEN wait END) AS p50_wait_seconds,
       max(CASE WHEN wait_rank = (95 * n + 99) / 100 THEN wait END) AS p95_wait_seconds
FROM ranked
GROUP BY status
ORDER BY status;

-- Counts and costs per owner, group and status; `total()` sums without overflowing.
DROP VIEW jobq_job_summary;
CREATE VIEW jobq_job_summary AS
SELECT owner, group_id, status,
       count(*) AS count,
       CAST(total(cost_cents) AS INTEGER) AS total_cost_cents,
       avg(cost_cents) AS avg_cost_cents,
       strftime('%Y-%m-%dT%H:%M:%fZ', max(created_at) / 1000.0, 'unixepoch') AS last_created_at
FROM jobq_jobs
GROUP BY owner, group_id, status
ORDER BY owner, group_id, status;

-- migration 3

-- Worker processes that are up, on every host: each pool registers when it starts, says it
-- is alive at every heartbeat (`last_seen`) and removes its row when it stops cleanly. A row
-- not seen for longer than its `stale_after_ms` (the pool's heartbeat timeout) belongs to a
-- process that died: readers skip it and maintenance deletes it.
CREATE TABLE jobq_workers (
    id             TEXT PRIMARY KEY NOT NULL,
    host           TEXT NOT NULL,
    pid            INTEGER NOT NULL,
    queues         TEXT NOT NULL CHECK (json_valid(queues)),    -- JSON array of queue names
    kinds          TEXT CHECK (kinds IS NULL OR json_valid(kinds)), -- JSON array, NULL: any
    concurrency    INTEGER NOT NULL,
    started_at     INTEGER NOT NULL,
    last_seen      INTEGER NOT NULL,
    stale_after_ms INTEGER NOT NULL
);

-- migration 4

-- Dependencies and uniqueness windows. A job may wait for others: it is `blocked` until
-- every one of them has succeeded. The status check gains `blocked`, which SQLite can only
-- do by building the table again (the views go and come back with it).
DROP VIEW jobq_dead_letter_jobs;
DROP VIEW jobq_running_jobs_monitor;
DROP VIEW jobq_queue_stats;
DROP VIEW jobq_timing_stats;
DROP VIEW jobq_stage_distribution;
DROP VIEW jobq_job_summary;

-- One new column, `dependents`: how many jobs were ever enqueued to wait for this one. It is
-- zero for nearly every job, and then nothing looks for dependents when its status changes.
-- (Every column of this table costs each claim and each completion a little: the rest of
-- what dependencies and windows need lives in `jobq_job_options`, for the jobs that have
-- them.)
CREATE TABLE jobq_jobs_new (
    id_key          INTEGER PRIMARY KEY,
    id              TEXT NOT NULL,
    queue           TEXT NOT NULL DEFAULT 'default' CHECK (length(queue) BETWEEN 1 AND 200),
    kind            TEXT NOT NULL CHECK (length(kind) BETWEEN 1 AND 200),
    status          TEXT NOT NULL DEFAULT 'queued'
                    CHECK (status = 'queued' OR status = 'running' OR status = 'retry'
                           OR status = 'succeeded' OR status = 'failed' OR status = 'cancelled'
                           OR status = 'blocked'),
    priority        INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    claims          INTEGER NOT NULL DEFAULT 0 CHECK (claims >= 0),
    max_attempts    INTEGER NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    run_after       INTEGER NOT NULL,
    locked_by       TEXT,
    locked_at       INTEGER,
    heartbeat_at    INTEGER,
    stage           TEXT,
    progress        REAL NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 1),
    input           TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(input)),
    output          TEXT CHECK (output IS NULL OR json_valid(output)),
    idempotency_key TEXT,
    last_error      TEXT,
    error_code      TEXT,
    errors          TEXT NOT NULL DEFAULT '[]',
    cost_cents      INTEGER NOT NULL DEFAULT 0 CHECK (cost_cents >= 0),
    owner           TEXT,
    group_id        TEXT REFERENCES jobq_groups (id) ON DELETE CASCADE,
    external_id     TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    started_at      INTEGER,
    completed_at    INTEGER,
    dependents      INTEGER NOT NULL DEFAULT 0,
    CHECK ((status = 'succeeded' OR status = 'failed' OR status = 'cancelled') = (completed_at IS NOT NULL))
);
INSERT INTO jobq_jobs_new (id_key, id, queue, kind, status, priority, attempts, claims,
        max_attempts, run_after, locked_by, locked_at, heartbeat_at, stage, progress, input,
        output, idempotency_key, last_error, error_code, errors, cost_cents, owner, group_id,
        external_id, created_at, updated_at, started_at, completed_at)
SELECT id_key, id, queue, kind, status, priority, attempts, claims,
        max_attempts, run_after, locked_by, locked_at, heartbeat_at, stage, progress, input,
        output, idempotency_key, last_error, error_code, errors, cost_cents, owner, group_id,
        external_id, created_at, updated_at, started_at, completed_at
FROM jobq_jobs;
DROP TABLE jobq_jobs;
ALTER TABLE jobq_jobs_new RENAME TO jobq_jobs;

-- The indexes as before (see migrations 1 and 2); `blocked` jobs are in the status index,
-- never in the ready one.
CREATE INDEX jobq_jobs_ready ON jobq_jobs (queue, priority DESC, run_after, id_key, kind, owner, status)
    WHERE status IN ('queued', 'retry');
CREATE INDEX jobq_jobs_status ON jobq_jobs (status, id_key, queue)
    WHERE status NOT IN ('queued', 'succeeded');
CREATE INDEX jobq_jobs_finished ON jobq_jobs (status, completed_at, queue, kind, started_at, run_after)
    WHERE completed_at IS NOT NULL;
CREATE INDEX jobq_jobs_owner ON jobq_jobs (owner, id_key) WHERE owner IS NOT NULL;
CREATE INDEX jobq_jobs_group ON jobq_jobs (group_id, id_key) WHERE group_id IS NOT NULL;
CREATE UNIQUE INDEX jobq_jobs_idempotency ON jobq_jobs (coalesce(owner, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Who waits for whom: `job_key` waits for `dep_key` (row keys of jobq_jobs). Deleting
-- either job deletes the row; a job others wait for cannot be deleted while they wait.
CREATE TABLE jobq_dependencies (
    dep_key INTEGER NOT NULL REFERENCES jobq_jobs (id_key) ON DELETE CASCADE,
    job_key INTEGER NOT NULL REFERENCES jobq_jobs (id_key) ON DELETE CASCADE,
    PRIMARY KEY (dep_key, job_key)
) WITHOUT ROWID;
CREATE INDEX jobq_dependencies_job ON jobq_dependencies (job_key, dep_key);

-- What only jobs with dependencies or a uniqueness window have, one row each:
-- `waiting_on`: of its dependencies, how many have not settled (succeeded, or for a job
--   that runs anyway, ended at all); it becomes `queued` at zero.
-- `run_on_dependency_failure`: 1 to run anyway once every dependency has ended; 0 to be
--   cancelled (error code DEPENDENCY_FAILED) when one fails or is cancelled.
-- `unique_until`: its idempotency key holds until this time (NULL: while the job exists);
-- `unique_while_active`: 1 while the job has not ended. A job whose window has passed gives
--   its key up (to NULL) when the key is enqueued again, and the new job takes it.
CREATE TABLE jobq_job_options (
    job_key                   INTEGER PRIMARY KEY REFERENCES jobq_jobs (id_key) ON DELETE CASCADE,
    waiting_on                INTEGER NOT NULL DEFAULT 0 CHECK (waiting_on >= 0),
    run_on_dependency_failure INTEGER NOT NULL DEFAULT 0,
    unique_until              INTEGER,
    unique_while_active       INTEGER NOT NULL DEFAULT 0
);

-- A dependency settles its dependents in the transaction that changes its status, on every
-- path (a worker's report, an admin's change, the stale release): the statements are in
-- `src/store/sqlite/deps.rs`. They are not triggers: on SQLite a trigger on the jobs table
-- slows every claim and completion (SQLite then updates in two passes), and only the
-- few jobs with dependents need them.

-- The views as before, the queue counts with `blocked`.
CREATE VIEW jobq_dead_letter_jobs AS
SELECT id, queue, kind, attempts, max_attempts, error_code, last_error, stage, owner, group_id,
       strftime('%Y-%m-%dT%H:%M:%fZ', created_at / 1000.0, 'unixepoch') AS created_at,
       strftime('%Y-%m-%dT%H:%M:%fZ', completed_at / 1000.0, 'unixepoch') AS failed_at,
       input
FROM jobq_jobs
WHERE status = 'failed' AND completed_at IS NOT NULL
ORDER BY completed_at DESC;

CREATE VIEW jobq_running_jobs_monitor AS
SELECT id, queue, kind, stage, progress, attempts, locked_by AS worker,
       CAST(((julianday('now') - 2440587.5) * 86400000.0 - started_at) / 1000 AS INTEGER)
           AS running_seconds,
       CAST(((julianday('now') - 2440587.5) * 86400000.0 - coalesce(heartbeat_at, locked_at)) / 1000
           AS INTEGER) AS heartbeat_age_seconds,
       strftime('%Y-%m-%dT%H:%M:%fZ', started_at / 1000.0, 'unixepoch') AS started_at
FROM jobq_jobs
WHERE status NOT IN ('queued', 'succeeded') AND status = 'running'
ORDER BY started_at;

CREATE VIEW jobq_queue_stats AS
SELECT queue,
       count(*) FILTER (WHERE status = 'queued') AS queued,
       count(*) FILTER (WHERE status = 'running') AS running,
       count(*) FILTER (WHERE status = 'retry') AS retry,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       count(*) AS total,
       count(*) FILTER (WHERE status = 'blocked') AS blocked
FROM jobq_jobs
GROUP BY queue
ORDER BY queue;

CREATE VIEW jobq_timing_stats AS
WITH measured AS (
    SELECT status, (completed_at - started_at) / 1000.0 AS run,
           (started_at - run_after) / 1000.0 AS wait
    FROM jobq_jobs
    WHERE completed_at IS NOT NULL AND started_at IS NOT NULL
),
ranked AS (
    SELECT status, run, wait,
           row_number() OVER (PARTITION BY status ORDER BY run) AS run_rank,
           row_number() OVER (PARTITION BY status ORDER BY wait) AS wait_rank,
           count(*) OVER (PARTITION BY status) AS n
    FROM measured
)
SELECT status,
       count(*) AS count,
       avg(run) AS avg_duration_seconds,
       max(CASE WHEN run_rank = (50 * n + 99) / 100 THEN run END) AS p50_seconds,
       max(CASE WHEN run_rank = (95 * n + 99) / 100 THEN run END) AS p95_seconds,
       max(run) AS max_seconds,
       avg(wait) AS avg_wait_seconds,
       max(CASE WHEN wait_rank = (50 * n + 99) / 100 THEN wait END) AS p50_wait_seconds,
       max(CASE WHEN wait_rank = (95 * n + 99) / 100 THEN wait END) AS p95_wait_seconds
FROM ranked
GROUP BY status
ORDER BY status;

CREATE VIEW jobq_stage_distribution AS
SELECT stage, status, count(*) AS count
FROM jobq_jobs
GROUP BY stage, status
ORDER BY count DESC, stage, status;

CREATE VIEW jobq_job_summary AS
SELECT owner, group_id, status,
       count(*) AS count,
       CAST(total(cost_cents) AS INTEGER) AS total_cost_cents,
       avg(cost_cents) AS avg_cost_cents,
       strftime('%Y-%m-%dT%H:%M:%fZ', max(created_at) / 1000.0, 'unixepoch') AS last_created_at
FROM jobq_jobs
GROUP BY owner, group_id, status
ORDER BY owner, group_id, status;

-- migration 5

-- Schedules: periodic jobs. Each fires once per slot however many processes run: the
-- process that moves `next_fire` on (a statement that checks its old value) enqueues the
-- slot's job, with the idempotency key `schedule:NAME:<slot time>`. A rule is a cron
-- expression (5 fields or `@hourly`-style, read in `timezone`) or a fixed interval.
-- `catch_up` says what a start after missed slots enqueues: `none`, `one` (the last) or
-- `all` (bounded). Names are unique per owner, as idempotency keys are.
CREATE TABLE jobq_schedules (
    name          TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    owner         TEXT,
    cron          TEXT,
    every_ms      INTEGER CHECK (every_ms IS NULL OR every_ms > 0),
    timezone      TEXT NOT NULL DEFAULT 'UTC',
    kind          TEXT NOT NULL CHECK (length(kind) BETWEEN 1 AND 200),
    input         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(input)),
    queue         TEXT NOT NULL DEFAULT 'default',
    priority      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER,
    catch_up      TEXT NOT NULL DEFAULT 'one'
                  CHECK (catch_up = 'none' OR catch_up = 'one' OR catch_up = 'all'),
    paused        INTEGER NOT NULL DEFAULT 0,
    next_fire     INTEGER NOT NULL,
    last_fire     INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    CHECK ((cron IS NULL) <> (every_ms IS NULL))
);
CREATE UNIQUE INDEX jobq_schedules_name ON jobq_schedules (coalesce(owner, ''), name);
CREATE INDEX jobq_schedules_due ON jobq_schedules (next_fire) WHERE paused = 0;

-- migration 6

-- Flow control, read by the claim itself. A queue with a row here may be paused, hold at
-- most `max_running` running jobs (prefetched ones are running too: the claim marks them
-- so), at most `max_running_per_key` running jobs per concurrency key, and hand out at most
-- `rate_limit` claims per `rate_window_ms` (sliding). A queue without a row, or whose row
-- sets nothing, is claimed as before.
CREATE TABLE jobq_queues (
    name                TEXT PRIMARY KEY NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    paused              INTEGER NOT NULL DEFAULT 0,
    max_running         INTEGER CHECK (max_running IS NULL OR max_running >= 0),
    max_running_per_key INTEGER CHECK (max_running_per_key IS NULL OR max_running_per_key >= 1),
    rate_limit          INTEGER CHECK (rate_limit IS NULL OR rate_limit >= 1),
    rate_window_ms      INTEGER CHECK (rate_window_ms IS NULL OR rate_window_ms >= 1),
    updated_at          INTEGER NOT NULL,
    CHECK ((rate_limit IS NULL) = (rate_window_ms IS NULL))
);

-- The claims of rate-limited queues within their window (older ones are deleted as the
-- window slides).
CREATE TABLE jobq_queue_claims (
    queue TEXT NOT NULL,
    at    INTEGER NOT NULL
);
CREATE INDEX jobq_queue_claims_at ON jobq_queue_claims (queue, at);

-- A job's concurrency key, for the per-key running limit (only jobs that have one have a
-- row of options).
ALTER TABLE jobq_job_options ADD COLUMN concurrency_key TEXT;

-- migration 7

-- How many times a job snoozed: a job that snoozes for ever never finishes, so past the
-- worker's limit the next snooze fails it for good (`SNOOZE_LIMIT`).
ALTER TABLE jobq_jobs ADD COLUMN snoozes INTEGER NOT NULL DEFAULT 0;

-- A flow job's local name (`ref`), for its dependents' outputs, the flow view and `show`.
ALTER TABLE jobq_job_options ADD COLUMN flow_ref TEXT;

-- A flow's idempotency key: a flow submitted again with the same key (per owner) returns
-- the first one.
ALTER TABLE jobq_groups ADD COLUMN flow_key TEXT;
CREATE UNIQUE INDEX jobq_groups_flow_key ON jobq_groups (coalesce(owner, ''), flow_key)
    WHERE flow_key IS NOT NULL;

-- Finding a job by what an outside system knows of it (`list --search`, `?q=`): its
-- external id or its idempotency key, whoever owns it. Partial: jobs without one cost
-- nothing.
CREATE INDEX jobq_jobs_external_id ON jobq_jobs (external_id) WHERE external_id IS NOT NULL;
CREATE INDEX jobq_jobs_key ON jobq_jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- migration 8

-- Rollups: what happened to jobs, per minute and per (owner, queue, kind). Every
-- transaction that changes jobs adds to them, one upsert per row per transaction (not per
-- job), so they never disagree with the jobs table; stats, series and metrics read them,
-- and pruning jobs never changes them. `metric` is a transition (`enqueued`, `started`,
-- `succeeded`, `failed`, `retried`, `cancelled`, `snoozed`, `released`, `revived`) with
-- `slot` 0, or a histogram (`run_ms`, `wait_ms`) whose `slot` is a log-scale bucket of
-- milliseconds (`SLOT_BOUNDS_MS` in src/model/rollups.rs). `span` is 60000 for a minute,
-- 3600000 for an hour (older minutes fold into hours) and 0 for everything older than the
-- hours kept (at 0); `at` is the span's first millisecond. `owner` is '' for no owner.
-- `shard` spreads a hot row over several (PostgreSQL's concurrent writers; 0 here).
CREATE TABLE jobq_rollups (
    span   INTEGER NOT NULL,
    at     INTEGER NOT NULL,
    owner  TEXT NOT NULL,
    queue  TEXT NOT NULL,
    kind   TEXT NOT NULL,
    metric TEXT NOT NULL,
    slot   INTEGER NOT NULL,
    shard  INTEGER NOT NULL DEFAULT 0,
    n      INTEGER NOT NULL,
    PRIMARY KEY (span, at, owner, queue, kind, metric, slot, shard)
) WITHOUT ROWID;

-- How many jobs there are of each status, per owner and queue, kept by the same
-- transactions (an insert adds one, a change of status moves one, a delete takes one away):
-- the counts of finished jobs are read here instead of counting millions of rows.
CREATE TABLE jobq_counts (
    owner  TEXT NOT NULL,
    queue  TEXT NOT NULL,
    status TEXT NOT NULL,
    shard  INTEGER NOT NULL DEFAULT 0,
    n      INTEGER NOT NULL,
    PRIMARY KEY (owner, queue, status, shard)
) WITHOUT ROWID;
INSERT INTO jobq_counts (owner, queue, status, n)
SELECT coalesce(owner, ''), queue, status, count(*) FROM jobq_jobs GROUP BY 1, 2, 3;

-- A file from before rollups starts them from its jobs: each job's enqueue, its claims
-- and its finish (not its histograms, which it never kept).
INSERT INTO jobq_rollups (span, at, owner, queue, kind, metric, slot, n)
SELECT 60000, at - at % 60000, owner, queue, kind, metric, 0, sum(n) FROM (
    SELECT created_at AS at, coalesce(owner, '') AS owner, queue, kind, 'enqueued' AS metric,
           1 AS n
    FROM jobq_jobs
    UNION ALL
    SELECT coalesce(started_at, updated_at), coalesce(owner, ''), queue, kind, 'started', claims
    FROM jobq_jobs WHERE claims > 0
    UNION ALL
    SELECT completed_at, coalesce(owner, ''), queue, kind, status, 1
    FROM jobq_jobs WHERE completed_at IS NOT NULL)
GROUP BY 2, 3, 4, 5, 6;

-- migration 9

-- Durable steps, sleep and events. A handler written as steps stores each step's output
-- as it returns; when the job runs again (a crash, a retry, a resume) a finished step
-- returns its stored output without running. A sleep or a wait for an event parks the job:
-- status `waiting` (no worker slot, no attempt spent) until its `run_after`, or until the
-- event named in `wait_for` is emitted (then `queued` at once).
--
-- The status check gains `waiting`. A check that only allows more values changes nothing
-- stored, so its text is edited in place (SQLite's documented way for such a change; the
-- schema cookie moves with the tables created below, so every connection reads it again),
-- instead of building a table of millions of rows again.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
SET sql = replace(sql, 'OR status = ''blocked'')', 'OR status = ''blocked'' OR status = ''waiting'')')
WHERE type = 'table' AND name = 'jobq_jobs';
PRAGMA writable_schema = RESET;
ALTER TABLE jobq_jobs ADD COLUMN wait_for TEXT;

-- Waiting jobs are claimed by the same index as the others once their time comes. The
-- condition is written as ORs, and so is every query that reads the index: SQLite checks an
-- IN list of three values against a temporary table, built again at each evaluation — and
-- every claim and completion evaluates it on the rows they change.
DROP INDEX jobq_jobs_ready;
CREATE INDEX jobq_jobs_ready ON jobq_jobs (queue, priority DESC, run_after, id_key, kind, owner, status)
    WHERE status = 'queued' OR status = 'retry' OR status = 'waiting';
-- The jobs an event wakes.
CREATE INDEX jobq_jobs_wait_for ON jobq_jobs (wait_for, owner) WHERE wait_for IS NOT NULL;

-- A job's steps, by name (a sleep or a wait is named by its place among the run's sleeps
-- or waits: `@sleep 1`, `@wait 2`), with their place in the run (`position`). `kind` is `step`, `sleep` or `wait`; `output` is a
-- step's JSON output or a wait's payload (NULL at its timeout); `wake_at` the time a sleep
-- or a wait ends at the latest; `event` the name a wait waits for and `event_id` the event
-- that ended it. `ended_at` is NULL while a sleep or a wait has not ended. Deleting the job
-- deletes its steps; a manual retry keeps them unless asked to start from scratch.
CREATE TABLE jobq_steps (
    job_key    INTEGER NOT NULL REFERENCES jobq_jobs (id_key) ON DELETE CASCADE,
    name       TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    position   INTEGER NOT NULL DEFAULT 0,
    kind       TEXT NOT NULL CHECK (kind = 'step' OR kind = 'sleep' OR kind = 'wait'),
    output     TEXT CHECK (output IS NULL OR json_valid(output)),
    event      TEXT,
    event_id   INTEGER,
    wake_at    INTEGER,
    started_at INTEGER NOT NULL,
    ended_at   INTEGER,
    PRIMARY KEY (job_key, name)
) WITHOUT ROWID;

-- Events: stored, so that one emitted after a job was enqueued and before it waits is
-- found when it waits; one event wakes every job of its owner waiting for its name.
-- `owner` is '' for no owner. Pruned after a retention.
CREATE TABLE jobq_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    owner      TEXT NOT NULL DEFAULT '',
    name       TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    payload    TEXT CHECK (payload IS NULL OR json_valid(payload)),
    created_at INTEGER NOT NULL
);
CREATE INDEX jobq_events_name ON jobq_events (owner, name, id);
CREATE INDEX jobq_events_created ON jobq_events (created_at);

-- The queue counts with `waiting`.
DROP VIEW jobq_queue_stats;
CREATE VIEW jobq_queue_stats AS
SELECT queue,
       count(*) FILTER (WHERE status = 'queued') AS queued,
       count(*) FILTER (WHERE status = 'running') AS running,
       count(*) FILTER (WHERE status = 'retry') AS retry,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       count(*) AS total,
       count(*) FILTER (WHERE status = 'blocked') AS blocked,
       count(*) FILTER (WHERE status = 'waiting') AS waiting
FROM jobq_jobs
GROUP BY queue
ORDER BY queue;
