-- jobq on PostgreSQL: the same data model as `schema.sql`, in PostgreSQL's dialect.
--
-- Migrations are numbered as in `schema.sql`, so that one schema version means one data
-- model on both engines; a section applies once, in one transaction that holds an advisory
-- lock (so many processes starting at once migrate one at a time) and records it in
-- `jobq_migrations`. A released section is never edited: changes go into a new section.
--
-- The tables, columns, indexes and views keep their SQLite names, for people with psql.
-- Times are integer milliseconds since the Unix epoch, UTC, always written by jobq from one
-- clock (the database server's, corrected for the distance to each host); the views show
-- them as ISO 8601 text. Differences from SQLite: the id is a `uuid` (no separate row key),
-- JSON columns are `json` (kept as written) and the errors history `jsonb` (appended to).

-- bookkeeping

CREATE TABLE IF NOT EXISTS jobq_migrations (
    version    bigint PRIMARY KEY,
    applied_at bigint NOT NULL
);

-- migration 2

-- Version 2 is the first version on PostgreSQL: this section creates the whole model of
-- `schema.sql`'s migrations 1 and 2.

-- Milliseconds since the epoch as ISO 8601 text, for the views.
CREATE FUNCTION jobq_iso(ms bigint) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN to_char(to_timestamp(ms / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');

CREATE TABLE jobq_owners (
    id           text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 200),
    budget_cents bigint CHECK (budget_cents IS NULL OR budget_cents >= 0),
    created_at   bigint NOT NULL
);

CREATE TABLE jobq_tokens (
    id          text PRIMARY KEY,
    owner_id    text NOT NULL REFERENCES jobq_owners (id) ON DELETE CASCADE,
    secret_hash text NOT NULL,
    created_at  bigint NOT NULL
);
CREATE INDEX jobq_tokens_owner ON jobq_tokens (owner_id);

CREATE TABLE jobq_groups (
    id         text PRIMARY KEY,
    owner      text,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 500),
    metadata   json NOT NULL DEFAULT '{}',
    created_at bigint NOT NULL
);
CREATE INDEX jobq_groups_owner ON jobq_groups (owner, id) WHERE owner IS NOT NULL;

-- Jobs, as in `schema.sql`: every finishing statement is guarded by the lease (status
-- 'running', the same `locked_by`, the same `claims`).
CREATE TABLE jobq_jobs (
    id              uuid PRIMARY KEY,                   -- UUID v7: time-ordered
    queue           text NOT NULL DEFAULT 'default' CHECK (length(queue) BETWEEN 1 AND 200),
    kind            text NOT NULL CHECK (length(kind) BETWEEN 1 AND 200),
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'retry', 'succeeded', 'failed', 'cancelled')),
    priority        integer NOT NULL DEFAULT 0,
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    claims          integer NOT NULL DEFAULT 0 CHECK (claims >= 0),
    max_attempts    integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    run_after       bigint NOT NULL,
    locked_by       text,
    locked_at       bigint,
    heartbeat_at    bigint,
    stage           text,
    progress        double precision NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 1),
    input           json NOT NULL DEFAULT '{}',
    output          json,
    idempotency_key text,
    last_error      text,
    error_code      text,
    errors          jsonb NOT NULL DEFAULT '[]',
    cost_cents      bigint NOT NULL DEFAULT 0 CHECK (cost_cents >= 0 AND cost_cents <= 1000000000000),
    owner           text,
    group_id        text REFERENCES jobq_groups (id) ON DELETE CASCADE,
    external_id     text,
    created_at      bigint NOT NULL,
    updated_at      bigint NOT NULL,
    started_at      bigint,
    completed_at    bigint,
    CHECK ((status IN ('succeeded', 'failed', 'cancelled')) = (completed_at IS NOT NULL))
);

-- The claim: ready jobs of a queue in claim order. Partial, so that finished rows (and the
-- dead tuples their updates leave) stay out of the claim's path.
CREATE INDEX jobq_jobs_ready ON jobq_jobs (queue, priority DESC, run_after, id)
    INCLUDE (kind, owner)
    WHERE status IN ('queued', 'retry');
-- Running, retrying, failed and cancelled jobs: listing and counting them.
CREATE INDEX jobq_jobs_status ON jobq_jobs (status, id) INCLUDE (queue)
    WHERE status NOT IN ('queued', 'succeeded');
-- Finished jobs by status and completion time, with what their statistics read.
CREATE INDEX jobq_jobs_finished ON jobq_jobs (status, completed_at)
    INCLUDE (queue, kind, started_at, run_after)
    WHERE completed_at IS NOT NULL;
CREATE INDEX jobq_jobs_owner ON jobq_jobs (owner, id) WHERE owner IS NOT NULL;
CREATE INDEX jobq_jobs_group ON jobq_jobs (group_id, id) WHERE group_id IS NOT NULL;
CREATE UNIQUE INDEX jobq_jobs_idempotency ON jobq_jobs (coalesce(owner, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Wake-ups: every statement that leaves jobs ready (an insert, a retry, a release) notifies
-- the channel `jobq` once per queue, at commit; idle workers on every host LISTEN to it.
CREATE FUNCTION jobq_notify_ready() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jobq', q.queue)
    FROM (SELECT DISTINCT queue FROM jobq_new WHERE status IN ('queued', 'retry')) AS q;
    RETURN NULL;
END $$;
CREATE TRIGGER jobq_jobs_inserted AFTER INSERT ON jobq_jobs
    REFERENCING NEW TABLE AS jobq_new
    FOR EACH STATEMENT EXECUTE FUNCTION jobq_notify_ready();
CREATE TRIGGER jobq_jobs_updated AFTER UPDATE ON jobq_jobs
    REFERENCING NEW TABLE AS jobq_new
    FOR EACH STATEMENT EXECUTE FUNCTION jobq_notify_ready();

CREATE VIEW jobq_dead_letter_jobs AS
SELECT id, queue, kind, attempts, max_attempts, error_code, last_error, stage, owner, group_id,
       jobq_iso(created_at) AS created_at, jobq_iso(completed_at) AS failed_at, input
FROM jobq_jobs
WHERE status = 'failed' AND completed_at IS NOT NULL
ORDER BY completed_at DESC;

CREATE VIEW jobq_running_jobs_monitor AS
SELECT id, queue, kind, stage, progress, attempts, locked_by AS worker,
       ((extract(epoch FROM clock_timestamp()) * 1000 - started_at) / 1000)::bigint
           AS running_seconds,
       ((extract(epoch FROM clock_timestamp()) * 1000 - coalesce(heartbeat_at, locked_at)) / 1000)::bigint
           AS heartbeat_age_seconds,
       jobq_iso(started_at) AS started_at
FROM jobq_jobs
WHERE status = 'running'
ORDER BY started_at;

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

-- Exact nearest-rank percentiles (the value at rank ceil(p * n)), as `jobq timing`.
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
       least(sum(cost_cents), 9223372036854775807)::bigint AS total_cost_cents,
       avg(cost_cents)::double precision AS avg_cost_cents,
       jobq_iso(max(created_at)) AS last_created_at
FROM jobq_jobs
GROUP BY owner, group_id, status
ORDER BY owner, group_id, status;

-- migration 3

-- Worker processes that are up, on every host (as in `schema.sql`).
CREATE TABLE jobq_workers (
    id             text PRIMARY KEY,
    host           text NOT NULL,
    pid            bigint NOT NULL,
    queues         json NOT NULL,
    kinds          json,
    concurrency    integer NOT NULL,
    started_at     bigint NOT NULL,
    last_seen      bigint NOT NULL,
    stale_after_ms bigint NOT NULL
);

-- migration 4

-- Dependencies and uniqueness windows (as in `schema.sql`, where the columns are
-- explained): `blocked` jobs, `dependents`, who waits for whom, the options of the jobs
-- that have dependencies or a window, and the triggers that settle dependents in the
-- statement that changes a dependency's status. (Triggers here, not on SQLite: a
-- statement's snapshot would miss a dependent enqueued while the dependency finished,
-- where the trigger function's statements see it; and PostgreSQL skips a row trigger
-- whose WHEN is false at little cost.)
ALTER TABLE jobq_jobs DROP CONSTRAINT jobq_jobs_status_check;
ALTER TABLE jobq_jobs ADD CONSTRAINT jobq_jobs_status_check
    CHECK (status IN ('blocked', 'queued', 'running', 'retry', 'succeeded', 'failed', 'cancelled'));
ALTER TABLE jobq_jobs ADD COLUMN dependents integer NOT NULL DEFAULT 0;

CREATE TABLE jobq_dependencies (
    dep_id uuid NOT NULL REFERENCES jobq_jobs (id) ON DELETE CASCADE,
    job_id uuid NOT NULL REFERENCES jobq_jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (dep_id, job_id)
);
CREATE INDEX jobq_dependencies_job ON jobq_dependencies (job_id, dep_id);

CREATE TABLE jobq_job_options (
    job_id                    uuid PRIMARY KEY REFERENCES jobq_jobs (id) ON DELETE CASCADE,
    waiting_on                integer NOT NULL DEFAULT 0 CHECK (waiting_on >= 0),
    run_on_dependency_failure boolean NOT NULL DEFAULT false,
    unique_until              bigint,
    unique_while_active       boolean NOT NULL DEFAULT false
);

-- The dependencies of the job `j` that have not settled (for a job that runs anyway, a
-- dependency that ended in failure has).
CREATE FUNCTION jobq_waiting(j uuid) RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT count(*)::integer FROM jobq_dependencies d JOIN jobq_jobs p ON p.id = d.dep_id
    WHERE d.job_id = j AND p.status <> 'succeeded'
      AND (NOT coalesce((SELECT run_on_dependency_failure FROM jobq_job_options
                         WHERE job_id = j), false)
           OR p.status NOT IN ('failed', 'cancelled'))
$$;

-- One dependency less for the blocked dependents of `dep` (all, or those that run
-- anyway), and those that wait for nothing more `queued`, runnable from `now`. The
-- function's statements see what other transactions committed before they run (a
-- dependent enqueued while this job finished is not missed).
CREATE FUNCTION jobq_count_down(dep uuid, run_anyway_only boolean, now bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE jobq_job_options o SET waiting_on = greatest(o.waiting_on - 1, 0)
    FROM jobq_dependencies d JOIN jobq_jobs j ON j.id = d.job_id
    WHERE d.dep_id = dep AND o.job_id = d.job_id AND j.status = 'blocked'
      AND (NOT run_anyway_only OR o.run_on_dependency_failure);
    UPDATE jobq_jobs j SET status = 'queued', run_after = greatest(j.run_after, now), updated_at = now
    FROM jobq_dependencies d JOIN jobq_job_options o ON o.job_id = d.job_id
    WHERE d.dep_id = dep AND j.id = d.job_id AND j.status = 'blocked' AND o.waiting_on = 0;
END $$;

CREATE FUNCTION jobq_dependencies_succeeded() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM jobq_count_down(NEW.id, false, NEW.updated_at);
    RETURN NULL;
END $$;
CREATE TRIGGER jobq_dependencies_succeeded AFTER UPDATE OF status ON jobq_jobs
    FOR EACH ROW WHEN (NEW.dependents > 0 AND NEW.status = 'succeeded' AND OLD.status <> 'succeeded')
    EXECUTE FUNCTION jobq_dependencies_succeeded();

-- Failed or cancelled: the blocked dependents that do not run anyway, and theirs, are
-- cancelled with DEPENDENCY_FAILED in one statement (each of them then settles its own
-- dependents that run anyway, by this trigger); those that run anyway count it as ended.
CREATE FUNCTION jobq_dependencies_failed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE jobq_jobs
    SET status = 'cancelled', error_code = 'DEPENDENCY_FAILED',
        last_error = 'dependency ' || NEW.id || ' ' || NEW.status,
        errors = errors || jsonb_build_array(jsonb_build_object('attempt', attempts,
            'code', 'DEPENDENCY_FAILED', 'message', 'dependency ' || NEW.id || ' ' || NEW.status,
            'at', NEW.updated_at)),
        completed_at = NEW.updated_at, updated_at = NEW.updated_at
    WHERE id IN (
        WITH RECURSIVE doomed(id) AS (
            SELECT d.job_id FROM jobq_dependencies d
            JOIN jobq_jobs j ON j.id = d.job_id
            JOIN jobq_job_options o ON o.job_id = d.job_id
            WHERE d.dep_id = NEW.id AND j.status = 'blocked' AND NOT o.run_on_dependency_failure
            UNION
            SELECT d.job_id FROM doomed
            JOIN jobq_dependencies d ON d.dep_id = doomed.id
            JOIN jobq_jobs j ON j.id = d.job_id
            JOIN jobq_job_options o ON o.job_id = d.job_id
            WHERE j.status = 'blocked' AND NOT o.run_on_dependency_failure)
        SELECT id FROM doomed);
    PERFORM jobq_count_down(NEW.id, true, NEW.updated_at);
    RETURN NULL;
END $$;
CREATE TRIGGER jobq_dependencies_failed AFTER UPDATE OF status ON jobq_jobs
    FOR EACH ROW WHEN (NEW.dependents > 0 AND NEW.status <> OLD.status
                       AND NEW.status IN ('failed', 'cancelled'))
    EXECUTE FUNCTION jobq_dependencies_failed();

-- A manual retry puts the dependents it cancelled (and theirs) back to `blocked`, and the
-- dependents that run anyway count it as unsettled again.
CREATE FUNCTION jobq_dependencies_unsettle() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH revived AS (
        UPDATE jobq_jobs
        SET status = 'blocked', error_code = NULL, last_error = NULL, completed_at = NULL,
            updated_at = NEW.updated_at
        WHERE id IN (
            WITH RECURSIVE revived(id) AS (
                SELECT d.job_id FROM jobq_dependencies d JOIN jobq_jobs j ON j.id = d.job_id
                WHERE d.dep_id = NEW.id AND j.status = 'cancelled' AND j.error_code = 'DEPENDENCY_FAILED'
                UNION
                SELECT d.job_id FROM revived
                JOIN jobq_dependencies d ON d.dep_id = revived.id
                JOIN jobq_jobs j ON j.id = d.job_id
                WHERE j.status = 'cancelled' AND j.error_code = 'DEPENDENCY_FAILED')
            SELECT id FROM revived)
        RETURNING id)
    UPDATE jobq_job_options SET waiting_on = jobq_waiting(job_id)
    WHERE job_id IN (SELECT id FROM revived);
    UPDATE jobq_job_options o SET waiting_on = jobq_waiting(o.job_id)
    FROM jobq_dependencies d JOIN jobq_jobs j ON j.id = d.job_id
    WHERE d.dep_id = NEW.id AND o.job_id = d.job_id AND j.status = 'blocked'
      AND o.run_on_dependency_failure;
    RETURN NULL;
END $$;
CREATE TRIGGER jobq_dependencies_unsettle AFTER UPDATE OF status ON jobq_jobs
    FOR EACH ROW WHEN (NEW.dependents > 0 AND OLD.status IN ('failed', 'cancelled')
                       AND NEW.status IN ('queued', 'blocked'))
    EXECUTE FUNCTION jobq_dependencies_unsettle();

CREATE OR REPLACE VIEW jobq_queue_stats AS
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

-- migration 5

-- Schedules: periodic jobs (as in `schema.sql`, where the columns are explained).
CREATE TABLE jobq_schedules (
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    owner         text,
    cron          text,
    every_ms      bigint CHECK (every_ms IS NULL OR every_ms > 0),
    timezone      text NOT NULL DEFAULT 'UTC',
    kind          text NOT NULL CHECK (length(kind) BETWEEN 1 AND 200),
    input         json NOT NULL DEFAULT '{}',
    queue         text NOT NULL DEFAULT 'default',
    priority      integer NOT NULL DEFAULT 0,
    max_attempts  integer,
    catch_up      text NOT NULL DEFAULT 'one' CHECK (catch_up IN ('none', 'one', 'all')),
    paused        boolean NOT NULL DEFAULT false,
    next_fire     bigint NOT NULL,
    last_fire     bigint,
    created_at    bigint NOT NULL,
    updated_at    bigint NOT NULL,
    CHECK ((cron IS NULL) <> (every_ms IS NULL))
);
CREATE UNIQUE INDEX jobq_schedules_name ON jobq_schedules (coalesce(owner, ''), name);
CREATE INDEX jobq_schedules_due ON jobq_schedules (next_fire) WHERE NOT paused;

-- migration 6

-- Flow control, read by the claim itself (as in `schema.sql`). `controlled` says whether
-- the claim must take the queue's limits into account: the ordinary claim statement leaves
-- such a queue to the claim that locks this row, counts and takes in one transaction.
CREATE TABLE jobq_queues (
    name                text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
    paused              boolean NOT NULL DEFAULT false,
    max_running         integer CHECK (max_running IS NULL OR max_running >= 0),
    max_running_per_key integer CHECK (max_running_per_key IS NULL OR max_running_per_key >= 1),
    rate_limit          integer CHECK (rate_limit IS NULL OR rate_limit >= 1),
    rate_window_ms      bigint CHECK (rate_window_ms IS NULL OR rate_window_ms >= 1),
    updated_at          bigint NOT NULL,
    controlled          boolean GENERATED ALWAYS AS (paused OR max_running IS NOT NULL
                            OR max_running_per_key IS NOT NULL OR rate_limit IS NOT NULL) STORED,
    CHECK ((rate_limit IS NULL) = (rate_window_ms IS NULL))
);

CREATE TABLE jobq_queue_claims (
    queue text NOT NULL,
    at    bigint NOT NULL
);
CREATE INDEX jobq_queue_claims_at ON jobq_queue_claims (queue, at);

ALTER TABLE jobq_job_options ADD COLUMN concurrency_key text;

-- Wake-ups for flow control: a job of a controlled queue that stops running frees room
-- for another, which idle workers on other hosts learn of at once.
CREATE OR REPLACE FUNCTION jobq_notify_ready() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jobq', q.queue)
    FROM (SELECT DISTINCT queue FROM jobq_new
          WHERE status IN ('queued', 'retry')
             OR (status IN ('succeeded', 'failed', 'cancelled')
                 AND queue IN (SELECT name FROM jobq_queues WHERE controlled))) AS q;
    RETURN NULL;
END $$;

-- migration 7

-- Snoozes counted, flow refs and flow keys (as in `schema.sql`).
ALTER TABLE jobq_jobs ADD COLUMN snoozes integer NOT NULL DEFAULT 0;
ALTER TABLE jobq_job_options ADD COLUMN flow_ref text;
ALTER TABLE jobq_groups ADD COLUMN flow_key text;
CREATE UNIQUE INDEX jobq_groups_flow_key ON jobq_groups (coalesce(owner, ''), flow_key)
    WHERE flow_key IS NOT NULL;

-- Finding a job by its external id or its idempotency key, whoever owns it (as in
-- `schema.sql`).
CREATE INDEX jobq_jobs_external_id ON jobq_jobs (external_id) WHERE external_id IS NOT NULL;
CREATE INDEX jobq_jobs_key ON jobq_jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- A manual retry puts the dependents it cancelled (and theirs) back to `blocked` — unless
-- another of their dependencies has failed or was cancelled too (they would wait for ever;
-- the retry of that one brings them back) — and the dependents that run anyway count it as
-- unsettled again. `revivable` is every job cancelled by the cascade below the retried
-- job; `kept` those of them with a failed dependency outside it, and what waits for those
-- within it.
CREATE OR REPLACE FUNCTION jobq_dependencies_unsettle() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH revived AS (
        UPDATE jobq_jobs
        SET status = 'blocked', error_code = NULL, last_error = NULL, completed_at = NULL,
            updated_at = NEW.updated_at
        WHERE id IN (
            WITH RECURSIVE revivable(id) AS (
                SELECT d.job_id FROM jobq_dependencies d JOIN jobq_jobs j ON j.id = d.job_id
                WHERE d.dep_id = NEW.id AND j.status = 'cancelled' AND j.error_code = 'DEPENDENCY_FAILED'
                UNION
                SELECT d.job_id FROM revivable
                JOIN jobq_dependencies d ON d.dep_id = revivable.id
                JOIN jobq_jobs j ON j.id = d.job_id
                WHERE j.status = 'cancelled' AND j.error_code = 'DEPENDENCY_FAILED'),
            kept(id) AS (
                SELECT r.id FROM revivable r
                WHERE EXISTS (SELECT 1 FROM jobq_dependencies d JOIN jobq_jobs p ON p.id = d.dep_id
                              WHERE d.job_id = r.id AND p.status IN ('failed', 'cancelled')
                                AND p.id NOT IN (SELECT id FROM revivable))
                UNION
                SELECT d.job_id FROM kept JOIN jobq_dependencies d ON d.dep_id = kept.id
                WHERE d.job_id IN (SELECT id FROM revivable))
            SELECT id FROM revivable EXCEPT SELECT id FROM kept)
        RETURNING id)
    UPDATE jobq_job_options SET waiting_on = jobq_waiting(job_id)
    WHERE job_id IN (SELECT id FROM revived);
    UPDATE jobq_job_options o SET waiting_on = jobq_waiting(o.job_id)
    FROM jobq_dependencies d JOIN jobq_jobs j ON j.id = d.job_id
    WHERE d.dep_id = NEW.id AND o.job_id = d.job_id AND j.status = 'blocked'
      AND o.run_on_dependency_failure;
    RETURN NULL;
END $$;

-- migration 8

-- Rollups (as in `schema.sql`), written by the statement triggers below: each statement
-- that changes jobs adds one upsert per row it touches, whatever path it came from (a
-- worker's batch, an admin, a dependency's cascade). `shard` is the writer's backend, so
-- concurrent writers of one minute's counters do not wait on one row.
CREATE TABLE jobq_rollups (
    span   bigint NOT NULL,
    at     bigint NOT NULL,
    owner  text NOT NULL,
    queue  text NOT NULL,
    kind   text NOT NULL,
    metric text NOT NULL,
    slot   integer NOT NULL,
    shard  integer NOT NULL DEFAULT 0,
    n      bigint NOT NULL,
    PRIMARY KEY (span, at, owner, queue, kind, metric, slot, shard)
);

-- How many jobs there are of each status, per owner and queue (as in `schema.sql`),
-- kept by the same triggers.
CREATE TABLE jobq_counts (
    owner  text NOT NULL,
    queue  text NOT NULL,
    status text NOT NULL,
    shard  integer NOT NULL DEFAULT 0,
    n      bigint NOT NULL,
    PRIMARY KEY (owner, queue, status, shard)
);
INSERT INTO jobq_counts (owner, queue, status, n)
SELECT coalesce(owner, ''), queue, status, count(*) FROM jobq_jobs GROUP BY 1, 2, 3;

-- The histogram slot of a time in milliseconds: how many bounds are below it
-- (`SLOT_BOUNDS_MS` in src/model/rollups.rs, the same list).
CREATE FUNCTION jobq_slot(ms bigint) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT width_bucket(ms - 1, ARRAY[1,2,3,4,5,6,8,10,13,18,24,32,42,56,75,100,133,178,237,
        316,422,562,750,1000,1334,1778,2371,3162,4217,5623,7499,10000,13335,17783,23714,31623,
        42170,56234,74989,100000,133352,177828,237137,316228,421697,562341,749894,1000000,
        1333521,1778279,2371374,3162278,4216965,5623413,7498942,10000000,13335214,17782794,
        23713737,31622777,42169650,56234133,74989421,100000000]::bigint[])
$$;

CREATE FUNCTION jobq_roll_inserts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobq_rollups AS r (span, at, owner, queue, kind, metric, slot, shard, n)
    SELECT 60000, created_at - created_at % 60000, coalesce(owner, ''), queue, kind,
           'enqueued', 0, pg_backend_pid() % 16, count(*)
    FROM jobq_new GROUP BY 2, 3, 4, 5
    ON CONFLICT (span, at, owner, queue, kind, metric, slot, shard)
    DO UPDATE SET n = r.n + excluded.n;
    INSERT INTO jobq_counts AS c (owner, queue, status, shard, n)
    SELECT coalesce(owner, ''), queue, status, pg_backend_pid() % 16, count(*)
    FROM jobq_new GROUP BY 1, 2, 3
    ON CONFLICT (owner, queue, status, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END $$;

CREATE FUNCTION jobq_roll_deletes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobq_counts AS c (owner, queue, status, shard, n)
    SELECT coalesce(owner, ''), queue, status, pg_backend_pid() % 16, -count(*)
    FROM jobq_old GROUP BY 1, 2, 3
    ON CONFLICT (owner, queue, status, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END $$;

-- The rules of `Transition::metrics` (src/model/rollups.rs), in SQL.
CREATE FUNCTION jobq_roll_updates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobq_rollups AS r (span, at, owner, queue, kind, metric, slot, shard, n)
    SELECT 60000, c.at - c.at % 60000, c.owner, c.queue, c.kind, m.metric, m.slot,
           pg_backend_pid() % 16, count(*)
    FROM (
        SELECT n.updated_at AS at, coalesce(n.owner, '') AS owner, n.queue, n.kind,
               o.status AS old, n.status AS new, n.claims > o.claims AS claimed,
               n.snoozes > o.snoozes AS snoozed, o.started_at,
               greatest(o.run_after, o.created_at) AS due_at
        FROM jobq_old o JOIN jobq_new n ON n.id = o.id
        WHERE n.status <> o.status OR n.claims <> o.claims) AS c
    CROSS JOIN LATERAL (VALUES
        (CASE WHEN c.claimed THEN 'started' END, 0),
        (CASE WHEN c.claimed THEN 'wait_ms' END, jobq_slot(c.at - c.due_at)),
        (CASE WHEN c.new = c.old THEN NULL
              WHEN c.new IN ('succeeded', 'failed', 'cancelled') THEN c.new
              WHEN c.old <> 'running' THEN NULL
              WHEN c.new = 'retry' THEN 'retried'
              WHEN c.new = 'queued' AND c.snoozed THEN 'snoozed'
              WHEN c.new = 'queued' THEN 'released' END, 0),
        (CASE WHEN c.new <> c.old AND c.old IN ('succeeded', 'failed', 'cancelled')
              THEN 'revived' END, 0),
        (CASE WHEN c.old = 'running' AND c.new IN ('succeeded', 'failed', 'retry')
                   AND c.started_at IS NOT NULL
              THEN 'run_ms' END, jobq_slot(c.at - c.started_at))) AS m(metric, slot)
    WHERE m.metric IS NOT NULL
    GROUP BY 2, 3, 4, 5, 6, 7
    ON CONFLICT (span, at, owner, queue, kind, metric, slot, shard)
    DO UPDATE SET n = r.n + excluded.n;
    -- A change of status moves one job from one count to another.
    INSERT INTO jobq_counts AS c (owner, queue, status, shard, n)
    SELECT m.owner, m.queue, m.status, pg_backend_pid() % 16, sum(m.n)
    FROM (SELECT coalesce(n.owner, '') AS owner, n.queue, o.status AS old, n.status AS new
          FROM jobq_old o JOIN jobq_new n ON n.id = o.id
          WHERE n.status <> o.status) AS t
    CROSS JOIN LATERAL (VALUES (t.owner, t.queue, t.old, -1), (t.owner, t.queue, t.new, 1))
        AS m(owner, queue, status, n)
    GROUP BY 1, 2, 3
    ON CONFLICT (owner, queue, status, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END $$;

CREATE TRIGGER jobq_jobs_rolled_in AFTER INSERT ON jobq_jobs
    REFERENCING NEW TABLE AS jobq_new
    FOR EACH STATEMENT EXECUTE FUNCTION jobq_roll_inserts();
CREATE TRIGGER jobq_jobs_rolled_up AFTER UPDATE ON jobq_jobs
    REFERENCING OLD TABLE AS jobq_old NEW TABLE AS jobq_new
    FOR EACH STATEMENT EXECUTE FUNCTION jobq_roll_updates();
CREATE TRIGGER jobq_jobs_rolled_out AFTER DELETE ON jobq_jobs
    REFERENCING OLD TABLE AS jobq_old
    FOR EACH STATEMENT EXECUTE FUNCTION jobq_roll_deletes();

-- A database from before rollups starts them from its jobs (as in `schema.sql`).
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
    FROM jobq_jobs WHERE completed_at IS NOT NULL) AS b
GROUP BY 2, 3, 4, 5, 6;

-- migration 9

-- Durable steps, sleep and events (as in `schema.sql`, where the tables are explained):
-- the status `waiting`, what a waiting job waits for, its steps and the events.
ALTER TABLE jobq_jobs DROP CONSTRAINT jobq_jobs_status_check;
ALTER TABLE jobq_jobs ADD CONSTRAINT jobq_jobs_status_check
    CHECK (status IN ('blocked', 'queued', 'running', 'retry', 'succeeded', 'failed', 'cancelled',
                      'waiting'));
ALTER TABLE jobq_jobs ADD COLUMN wait_for text;

DROP INDEX jobq_jobs_ready;
CREATE INDEX jobq_jobs_ready ON jobq_jobs (queue, priority DESC, run_after, id)
    INCLUDE (kind, owner)
    WHERE status IN ('queued', 'retry', 'waiting');
CREATE INDEX jobq_jobs_wait_for ON jobq_jobs (wait_for, owner) WHERE wait_for IS NOT NULL;

CREATE TABLE jobq_steps (
    job_id     uuid NOT NULL REFERENCES jobq_jobs (id) ON DELETE CASCADE,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    position   integer NOT NULL DEFAULT 0,
    kind       text NOT NULL CHECK (kind IN ('step', 'sleep', 'wait')),
    output     text,
    event      text,
    event_id   bigint,
    wake_at    bigint,
    started_at bigint NOT NULL,
    ended_at   bigint,
    PRIMARY KEY (job_id, name)
);

CREATE TABLE jobq_events (
    id         bigserial PRIMARY KEY,
    owner      text NOT NULL DEFAULT '',
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    payload    text,
    created_at bigint NOT NULL
);
CREATE INDEX jobq_events_name ON jobq_events (owner, name, id);
CREATE INDEX jobq_events_created ON jobq_events (created_at);

-- A job parked until a time wakes idle workers on every host too, so that they wait for
-- that time; a job an event woke is `queued`.
CREATE OR REPLACE FUNCTION jobq_notify_ready() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jobq', q.queue)
    FROM (SELECT DISTINCT queue FROM jobq_new
          WHERE status IN ('queued', 'retry', 'waiting')
             OR (status IN ('succeeded', 'failed', 'cancelled')
                 AND queue IN (SELECT name FROM jobq_queues WHERE controlled))) AS q;
    RETURN NULL;
END $$;

-- A running job that parks itself counts as `waited`.
CREATE OR REPLACE FUNCTION jobq_roll_updates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobq_rollups AS r (span, at, owner, queue, kind, metric, slot, shard, n)
    SELECT 60000, c.at - c.at % 60000, c.owner, c.queue, c.kind, m.metric, m.slot,
           pg_backend_pid() % 16, count(*)
    FROM (
        SELECT n.updated_at AS at, coalesce(n.owner, '') AS owner, n.queue, n.kind,
               o.status AS old, n.status AS new, n.claims > o.claims AS claimed,
               n.snoozes > o.snoozes AS snoozed, o.started_at,
               greatest(o.run_after, o.created_at) AS due_at
        FROM jobq_old o JOIN jobq_new n ON n.id = o.id
        WHERE n.status <> o.status OR n.claims <> o.claims) AS c
    CROSS JOIN LATERAL (VALUES
        (CASE WHEN c.claimed THEN 'started' END, 0),
        (CASE WHEN c.claimed THEN 'wait_ms' END, jobq_slot(c.at - c.due_at)),
        (CASE WHEN c.new = c.old THEN NULL
              WHEN c.new IN ('succeeded', 'failed', 'cancelled') THEN c.new
              WHEN c.old <> 'running' THEN NULL
              WHEN c.new = 'retry' THEN 'retried'
              WHEN c.new = 'queued' AND c.snoozed THEN 'snoozed'
              WHEN c.new = 'queued' THEN 'released'
              WHEN c.new = 'waiting' THEN 'waited' END, 0),
        (CASE WHEN c.new <> c.old AND c.old IN ('succeeded', 'failed', 'cancelled')
              THEN 'revived' END, 0),
        (CASE WHEN c.old = 'running' AND c.new IN ('succeeded', 'failed', 'retry')
                   AND c.started_at IS NOT NULL
              THEN 'run_ms' END, jobq_slot(c.at - c.started_at))) AS m(metric, slot)
    WHERE m.metric IS NOT NULL
    GROUP BY 2, 3, 4, 5, 6, 7
    ON CONFLICT (span, at, owner, queue, kind, metric, slot, shard)
    DO UPDATE SET n = r.n + excluded.n;
    -- A change of status moves one job from one count to another.
    INSERT INTO jobq_counts AS c (owner, queue, status, shard, n)
    SELECT m.owner, m.queue, m.status, pg_backend_pid() % 16, sum(m.n)
    FROM (SELECT coalesce(n.owner, '') AS owner, n.queue, o.status AS old, n.status AS new
          FROM jobq_old o JOIN jobq_new n ON n.id = o.id
          WHERE n.status <> o.status) AS t
    CROSS JOIN LATERAL (VALUES (t.owner, t.queue, t.old, -1), (t.owner, t.queue, t.new, 1))
        AS m(owner, queue, status, n)
    GROUP BY 1, 2, 3
    ON CONFLICT (owner, queue, status, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END $$;

-- The queue counts with `waiting`.
CREATE OR REPLACE VIEW jobq_queue_stats AS
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
