import { ConfigError, loadConfig } from "./platform/config.js";
import { startSuite } from "./platform/suite.js";
import { modules } from "./modules.js";
import { webPage } from "./web/index.js";

/** The services the booking page calls; a process serves the page only when it serves all of them. */
const pageServices = ["token", "concert", "point", "payment", "coordinator"] as const;

/**
 * Starts the services named by SERVICES (all by default) in this process.
 * With no DATABASE_URL the embedded PGlite database under DATA_DIR is used.
 */
async function main() {
  const config = loadConfig();
  const servesPage = pageServices.every((name) => config.services.includes(name));
  const suite = await startSuite(config, modules, { fallback: servesPage ? await webPage() : undefined });
  const served = modules.filter((m) => config.services.includes(m.name)).map((m) => m.name);
  console.log(`boxoffice serving ${served.join(", ")} on ${suite.host.url} (gRPC h2c, gRPC-Web and Connect)`);
  if (servesPage) console.log(`booking page: ${suite.host.url}/`);
  console.log(`database: ${config.databaseUrl ? "PostgreSQL at DATABASE_URL" : `embedded PGlite in ${config.dataDir}`}`);
  if (!process.env.OPERATOR_KEY) console.log(`operator key: operatorKey in ${config.dataDir}/secrets.json`);

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal}: shutting down`);
    await suite.close();
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}

main().catch((error: unknown) => {
  console.error(error instanceof ConfigError ? `configuration error: ${error.message}` : error);
  process.exit(1);
});
