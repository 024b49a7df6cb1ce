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

export async function dropDatabase(name: string): Promise<void> {
  await admin((client) => client.query(`drop database if exists "${name}" with (force)`).then(() => undefined));
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
