// Graphile Worker draining N no-op jobs, in the high-throughput configuration its docs
// recommend (worker.graphile.org/docs/performance): 24 concurrent jobs, a pool of 25,
// a local queue of 500, batched completions. Usage: node graphile.mjs URL N
// Prints one JSON line: {"peer":"graphile-worker","jobs":N,"jobs_per_s":…}.
import { Logger, makeWorkerUtils, run } from "graphile-worker";
import pg from "pg";

const [url, n] = [process.argv[2], Number(process.argv[3] ?? 20000)];
const schema = `gw_bench_${process.pid}`;
const admin = new pg.Client({ connectionString: url });
await admin.connect();
await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
const utils = await makeWorkerUtils({ connectionString: url, schema, logger: new Logger(() => () => {}) });
await utils.migrate();
// Enqueued in bulk before the clock starts, as jobq bench fills its queue.
for (let done = 0; done < n; done += 1000) {
  const count = Math.min(1000, n - done);
  await admin.query(
    `SELECT ${schema}.add_jobs(array(SELECT json_populate_record(null::${schema}.job_spec,
        json_build_object('identifier', 'noop', 'payload', '{}'::json)) FROM generate_series(1, $1)))`,
    [count],
  );
}
// Quiet: a log line per job would measure the terminal.
const logger = new Logger(() => () => {});
const started = process.hrtime.bigint();
const runner = await run({
  connectionString: url,
  schema,
  logger,
  noHandleSignals: true,
  pollInterval: 1000,
  taskList: { noop: async () => {} },
  preset: {
    worker: {
      concurrentJobs: 24,
      maxPoolSize: 25,
      localQueue: { size: 500 },
      completeJobBatchDelay: 0,
      failJobBatchDelay: 0,
    },
  },
});
// Done when every job is gone from the table (Graphile deletes a job once it succeeded).
for (;;) {
  const { rows } = await admin.query(`SELECT count(*)::int AS left FROM ${schema}._private_jobs`);
  if (rows[0].left === 0) break;
  await new Promise((r) => setTimeout(r, 5));
}
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
await runner.stop();
await utils.release();
await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
await admin.end();
console.log(JSON.stringify({ peer: "graphile-worker", jobs: n, jobs_per_s: Math.round(n / seconds) }));
