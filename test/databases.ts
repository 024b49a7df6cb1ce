import pg from "pg";

/** The server the tests and benchmarks create their databases on. */
export const serverUrl = () => new URL(process.env.TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test");

/** Creates (or re-creates) an empty database on the test server and returns its URL. */
export async function createDatabase(name: string): Promise<string> {
  await admin(async (client) => {
    await client.query(`drop database if exists "${name}" with (force)`);
    await client.query(`create database "${name}"`);
  });
  const url = serverUrl();
  url.pathname = `/${name}`;
  return url.toString();
}

/**
 * Drops the database. Sessions still closing (a pool whose end() has resolved
 * while its clients' Terminate is on the way) are given up to 2 s to go first:
 * `with (force)` kills them otherwise, and a pg client that hears FATAL 57P01
 * while ending emits it with no listener left, an uncaught error in the test run.
 */
export async function dropDatabase(name: string): Promise<void> {
  await admin(async (client) => {
    for (const deadline = Date.now() + 2_000; Date.now() < deadline; ) {
      const { rows } = await client.query<{ n: number }>(`select count(*)::int as n from pg_stat_activity where datname = $1`, [name]);
      if (rows[0]!.n === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await client.query(`drop database if exists "${name}" with (force)`);
  });
}

async function admin(work: (client: pg.Client) => Promise<void>): Promise<void> {
  const client = new pg.Client({ connectionString: serverUrl().toString() });
  await client.connect();
  try {
    await work(client);
  } finally {
    await client.end();
  }
}
