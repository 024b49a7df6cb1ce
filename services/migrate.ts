// `npm run migrate -- status | up`: the migrations of each service's schema, outside a start.
import { ConfigError, loadConfig } from "./platform/config.js";
import { requireSupportedNode } from "./platform/node-version.js";

requireSupportedNode();

const usage = `usage: npm run migrate -- <status|up>
  status  per service: the migrations applied to its schema, and those pending
  up      applies the pending ones, under the same advisory lock as a start
Same settings as npm start: DATABASE_URL (unset: the embedded PGlite in DATA_DIR), SERVICES.`;

/**
 * Shows or applies the migrations of the services SERVICES names (all by default), on the database a
 * start with the same settings would use: DATABASE_URL, or the embedded PGlite under DATA_DIR (which
 * only one process may have open, so not while `npm start` runs on that folder). `up` runs exactly what
 * a start runs (database.ts), so with MIGRATE_AT_START=false a deployment migrates with this first.
 */
async function main(command: string | undefined): Promise<number> {
  if (command !== "status" && command !== "up") {
    console.error(usage);
    return 2;
  }
  const config = loadConfig();
  const [{ applyMigrations, migrationStatus }, { checkDatabase, databaseTarget }, { startEmbeddedPostgres }, { modules }] = await Promise.all([
    import("./platform/database.js"),
    import("./platform/database-connection.js"),
    import("./platform/embedded-postgres.js"),
    import("./modules.js"),
  ]);
  const served = modules.filter((module) => config.services.includes(module.name) && module.database);
  let url: string;
  let stop = async () => {};
  if (config.databaseUrl) {
    await checkDatabase(config.databaseUrl);
    const target = databaseTarget(config.databaseUrl);
    console.log(`database: PostgreSQL at DATABASE_URL (${target.host}:${target.port}/${target.database})`);
    url = config.databaseUrl;
  } else {
    const embedded = await startEmbeddedPostgres(config.dataDir);
    console.log(`database: embedded PGlite in ${config.dataDir}`);
    url = embedded.url;
    stop = embedded.stop;
  }
  try {
    if (command === "status") {
      let pending = 0;
      for (const module of served) {
        const status = await migrationStatus(module.database!, url);
        pending += status.pending.length;
        console.log(`${module.name} (schema ${status.schema}): ${status.applied.length} applied, ${status.pending.length} pending`);
        for (const { name, executedAt } of status.applied) {
          console.log(`  applied  ${name}  ${executedAt.toISOString()}${status.unknown.includes(name) ? "  (not in this build)" : ""}`);
        }
        for (const name of status.pending) console.log(`  pending  ${name}`);
      }
      console.log(pending === 0 ? "no migration pending" : `${pending} pending; apply with \`npm run migrate -- up\``);
    } else {
      let applied = 0;
      for (const module of served) {
        const names = await applyMigrations(module.database!, url);
        applied += names.length;
        console.log(names.length === 0 ? `${module.name}: up to date` : `${module.name}: applied ${names.join(", ")}`);
      }
      console.log(applied === 0 ? "nothing to apply" : `applied ${applied} migration${applied === 1 ? "" : "s"}`);
    }
  } finally {
    await stop();
  }
  return 0;
}

main(process.argv[2]).then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error instanceof ConfigError ? `configuration error: ${error.message}` : error);
    process.exit(1);
  },
);
