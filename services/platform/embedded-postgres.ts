import { PGlite } from "@electric-sql/pglite";
import { PGLiteSocketServer } from "@electric-sql/pglite-socket";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError } from "./config.js";

export interface EmbeddedPostgres {
  url: string;
  stop(): Promise<void>;
}

/**
 * PostgreSQL compiled to WebAssembly (PGlite), persisted under dataDir and served
 * on a loopback port, so the services use the same driver and migrations as on
 * a real server. PGlite runs one query at a time; the socket server queues
 * connections' queries and keeps a transaction's statements together.
 *
 * One process at a time: PGlite opens a folder another PGlite has open without a
 * word, and two of them writing one folder corrupt it. So the folder is taken
 * with a lock file naming the process (DATA_DIR/pglite.pid); a second `npm start`
 * or `npm run migrate` on the same DATA_DIR is refused, naming the one holding it.
 */
export async function startEmbeddedPostgres(dataDir: string): Promise<EmbeddedPostgres> {
  const dir = join(dataDir, "pglite");
  mkdirSync(dir, { recursive: true });
  const release = lockFolder(join(dataDir, "pglite.pid"), dir);
  try {
    const db = await PGlite.create(dir);
    const server = new PGLiteSocketServer({ db, host: "127.0.0.1", port: 0, maxConnections: 64 });
    await server.start();
    return {
      url: `postgresql://postgres@${server.getServerConn()}/postgres`,
      async stop() {
        try {
          await server.stop();
          await db.close();
        } finally {
          release();
        }
      },
    };
  } catch (error) {
    release();
    throw error;
  }
}

/** The folders this process has open, for a second open from the same process (its pid is in the file already). */
const openHere = new Set<string>();

/**
 * Takes `file` for this process, or throws a ConfigError naming the live process holding it. A file
 * left by a process that is gone (kill -9, a crash, a container restarted with its volume) is taken over.
 */
function lockFolder(file: string, dir: string): () => void {
  const inUse = (holder: string) =>
    new ConfigError(
      `DATA_DIR: the embedded database in ${dir} is in use by ${holder} (another npm start or npm run migrate on the same DATA_DIR); ` +
        `stop it first, or set DATA_DIR to another folder (several processes share one database through DATABASE_URL)`,
    );
  if (openHere.has(file)) throw inUse(`this process`);
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(file, `${process.pid}\n`, { flag: "wx" });
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST" || attempt > 0) throw error;
    }
    const holder = Number(readFileSync(file, "utf8").trim());
    // Its own pid is a file left by an earlier life of this pid (containers give the same pid at every start).
    if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && alive(holder)) throw inUse(`process ${holder}`);
    rmSync(file, { force: true });
  }
  openHere.add(file);
  const release = () => {
    if (!openHere.delete(file)) return;
    process.off("exit", release);
    rmSync(file, { force: true });
  };
  // An exit without stop (an uncaught error, process.exit) leaves no file behind; kill -9 does, and it is taken over.
  process.on("exit", release);
  return release;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists, as another user's process.
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
