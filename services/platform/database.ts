import { Migrator, type Migration } from "@mikro-orm/migrations";
import { defineConfig, MikroORM, type EntityManager, type EntitySchema } from "@mikro-orm/postgresql";
import { createContextKey, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import pg from "pg";

/** What a service keeps in PostgreSQL: its own schema, entities and committed migrations. */
export interface DatabaseSpec {
  schema: string;
  entities: EntitySchema<any, any>[];
  migrations: (new (...args: any[]) => Migration)[];
  /** Session settings for every connection of the service's pool (for example lock_timeout). */
  settings?: Record<string, string>;
}

export interface DatabaseOptions {
  url: string;
  poolSize: number;
  debug?: boolean;
}

/**
 * Opens a service's ORM on its own schema and applies its pending migrations.
 * Instances starting together take turns through an advisory lock, so a
 * migration runs once however many processes start at the same moment.
 */
export async function openDatabase(spec: DatabaseSpec, options: DatabaseOptions): Promise<MikroORM> {
  const orm = await MikroORM.init(
    defineConfig({
      clientUrl: options.url,
      // Its own name, so that a transaction of one service's ORM is never taken up by another's
      // ORM further down the same async call chain (in-process calls between services).
      contextName: `boxoffice:${spec.schema}`,
      entities: spec.entities,
      extensions: [Migrator],
      pool: { min: 0, max: options.poolSize },
      // pg passes these in the startup packet, so every pooled connection has them from the start.
      driverOptions: spec.settings && {
        options: Object.entries(spec.settings)
          .map(([name, value]) => `-c ${name}=${value}`)
          .join(" "),
      },
      debug: options.debug ?? false,
      migrations: {
        migrationsList: spec.migrations,
        schema: spec.schema,
        snapshot: false,
        snapshotOnMigrate: false,
        silent: true,
      },
    }),
  );
  try {
    await withAdvisoryLock(options.url, `boxoffice:migrate:${spec.schema}`, async (client) => {
      // The migrator keeps its bookkeeping table in the schema, so the schema comes first.
      await client.query(`create schema if not exists "${spec.schema}"`);
      await orm.migrator.up();
    });
  } catch (error) {
    await orm.close();
    throw error;
  }
  return orm;
}

async function withAdvisoryLock(url: string, name: string, work: (client: pg.Client) => Promise<void>): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query("select pg_advisory_lock(hashtext($1))", [name]);
    try {
      await work(client);
    } finally {
      await client.query("select pg_advisory_unlock(hashtext($1))", [name]);
    }
  } finally {
    await client.end();
  }
}

/** A call's EntityManager, forked on first use: a call that reads nothing through the ORM costs no fork. */
class CallEntityManager {
  #em: EntityManager | undefined;

  constructor(private readonly orm: MikroORM) {}

  get em(): EntityManager {
    return (this.#em ??= this.orm.em.fork());
  }
}

const entityManagerKey = createContextKey<CallEntityManager | undefined>(undefined, { description: "request entity manager" });

/** Gives every call its own EntityManager (identity map and unit of work), forked from the service's ORM when first asked for. */
export function entityManagerInterceptor(orm: MikroORM): Interceptor {
  return (next) => (req) => {
    req.contextValues.set(entityManagerKey, new CallEntityManager(orm));
    return next(req);
  };
}

/** The call's EntityManager. */
export function entityManager(ctx: HandlerContext): EntityManager {
  const holder = ctx.values.get(entityManagerKey);
  if (!holder) throw new Error("no EntityManager in context: the service was mounted without its database");
  return holder.em;
}
