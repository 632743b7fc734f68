// pg-boss draining N no-op jobs: four workers fetching 1,000 jobs at a time. A pg-boss
// worker fetches a batch, runs it, then waits its polling interval (0.5 s at least) before
// it fetches again, so a large batch is its fastest documented way.
// Usage: node pgboss.mjs URL N. Prints {"peer":"pg-boss","jobs":N,"jobs_per_s":…}.
import PgBoss from "pg-boss";
import pg from "pg";

const [url, n] = [process.argv[2], Number(process.argv[3] ?? 20000)];
const schema = `pgboss_bench_${process.pid}`;
const admin = new pg.Client({ connectionString: url });
await admin.connect();
await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
const boss = new PgBoss({ connectionString: url, schema, max: 10, supervise: false, schedule: false });
boss.on("error", (e) => console.error(e));
await boss.start();
await boss.createQueue("noop");
for (let done = 0; done < n; done += 1000) {
  const count = Math.min(1000, n - done);
  await boss.insert(Array.from({ length: count }, () => ({ name: "noop", data: {} })));
}
const started = process.hrtime.bigint();
for (let i = 0; i < 4; i++) {
  await boss.work("noop", { batchSize: 1000, pollingIntervalSeconds: 0.5 }, async () => {});
}
for (;;) {
  const { rows } = await admin.query(
    `SELECT count(*)::int AS left FROM ${schema}.job WHERE name = 'noop' AND state <> 'completed'`,
  );
  if (rows[0].left === 0) break;
  await new Promise((r) => setTimeout(r, 5));
}
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
await boss.stop({ graceful: false, wait: true });
await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
await admin.end();
console.log(JSON.stringify({ peer: "pg-boss", jobs: n, jobs_per_s: Math.round(n / seconds) }));
