import { Migrator, type Migration } from "@mikro-orm/migrations";
import { defineConfig, MikroORM, type EntityManager, type EntitySchema } from "@mikro-orm/postgresql";
import { createContextKey, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import pg from "pg";
import { ConfigError } from "./config.js";

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
  /**
   * Apply pending migrations (the default). Off (MIGRATE_AT_START=false), the open only checks that none
   * is pending and refuses with PendingMigrationsError otherwise: `npm run migrate -- up` applies them.
   */
  migrate?: boolean;
}

/** The migrations a schema has had applied, and those of this build it has not. */
export interface MigrationStatus {
  schema: string;
  applied: { name: string; executedAt: Date }[];
  /** This build's migrations not applied yet, in order. */
  pending: string[];
  /** Applied migrations this build does not have (a newer build migrated the database, or a migration was retired). */
  unknown: string[];
}

/** A start with MIGRATE_AT_START=false on a schema with migrations still to apply. */
export class PendingMigrationsError extends ConfigError {
  constructor(readonly schema: string, readonly pending: string[]) {
    super(
      `MIGRATE_AT_START=false, and the ${schema} schema has ${pending.length} pending migration${pending.length === 1 ? "" : "s"} ` +
        `(${pending.join(", ")}); apply them with \`npm run migrate -- up\` (same DATABASE_URL or DATA_DIR), or unset MIGRATE_AT_START`,
    );
  }
}

/**
 * Opens a service's ORM on its own schema and applies its pending migrations.
 * Instances starting together take turns through an advisory lock, so a
 * migration runs once however many processes start at the same moment.
 */
export async function openDatabase(spec: DatabaseSpec, options: DatabaseOptions): Promise<MikroORM> {
  const orm = await initOrm(spec, options);
  try {
    if (options.migrate ?? true) {
      await migrate(orm, spec, options.url);
    } else {
      const { pending } = await migrationStatus(spec, options.url);
      if (pending.length > 0) throw new PendingMigrationsError(spec.schema, pending);
    }
  } catch (error) {
    await orm.close();
    throw error;
  }
  return orm;
}

/** Applies a schema's pending migrations, as a start does (same advisory lock), and returns the names applied. */
export async function applyMigrations(spec: DatabaseSpec, url: string): Promise<string[]> {
  const orm = await initOrm(spec, { url, poolSize: 1 });
  try {
    return await migrate(orm, spec, url);
  } finally {
    await orm.close();
  }
}

/**
 * What has been applied to a schema and what of this build is pending, read from the
 * migrator's bookkeeping table without writing anything (a schema never migrated has it not).
 */
export async function migrationStatus(spec: DatabaseSpec, url: string): Promise<MigrationStatus> {
  const client = await connectClient(url);
  try {
    const table = `"${spec.schema}"."${migrationsTable}"`;
    const { rows: found } = await client.query<{ present: boolean }>("select to_regclass($1) is not null as present", [table]);
    const { rows } = found[0]!.present
      ? await client.query<{ name: string; executed_at: Date }>(`select name, executed_at from ${table} order by id`)
      : { rows: [] };
    const applied = rows.map((row) => ({ name: row.name, executedAt: row.executed_at }));
    const done = new Set(applied.map((migration) => migration.name));
    const known = new Set(spec.migrations.map((migration) => migration.name));
    return {
      schema: spec.schema,
      applied,
      pending: spec.migrations.map((migration) => migration.name).filter((name) => !done.has(name)),
      unknown: applied.map((migration) => migration.name).filter((name) => !known.has(name)),
    };
  } finally {
    await client.end();
  }
}

/** The migrator's own table, in each service's schema (MikroORM's default name). */
const migrationsTable = "mikro_orm_migrations";

function initOrm(spec: DatabaseSpec, options: DatabaseOptions): Promise<MikroORM> {
  return MikroORM.init(
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
        tableName: migrationsTable,
        snapshot: false,
        snapshotOnMigrate: false,
        silent: true,
      },
      // Functions the statements call (concert.fan_seats_locked) are written by the migrations, like everything else.
      schemaGenerator: { ignoreRoutines: true },
    }),
  );
}

/** Applies the pending migrations under the schema's advisory lock: of processes migrating together, one applies each. */
async function migrate(orm: MikroORM, spec: DatabaseSpec, url: string): Promise<string[]> {
  let applied: string[] = [];
  await withAdvisoryLock(url, `boxoffice:migrate:${spec.schema}`, async (client) => {
    // The migrator keeps its bookkeeping table in the schema, so the schema comes first.
    await client.query(`create schema if not exists "${spec.schema}"`);
    applied = (await orm.migrator.up()).map((migration) => migration.name);
  });
  return applied;
}

async function withAdvisoryLock(url: string, name: string, work: (client: pg.Client) => Promise<void>): Promise<void> {
  const client = await connectClient(url);
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

async function connectClient(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  return client;
}

/**
 * Single statements on a service's own pool, outside the ORM and outside any
 * transaction: for the hot reads of a row or a page, where forking an
 * EntityManager, its unit of work and the ORM's query layers cost more than
 * the query (BENCHMARKS.md, "Reads at the framework's limit"). Parameters are
 * `$1`, `$2`, … and are bound by PostgreSQL. On a PostgreSQL server each text
 * of a service's statements is a named prepared statement, parsed and planned
 * once per pooled connection, then only bound and run. Not on the embedded
 * database, whose one session all connections share (a name prepared by one
 * would exist already for the next). The connection goes back to the pool when the statement answers;
 * rows come back as `pg` parses them (bigint as text, timestamptz as Date).
 */
export interface Statements {
  rows<R extends object>(sql: string, params?: readonly unknown[]): Promise<R[]>;
}

/** Each statement text's name, the same on every connection (the texts are the code's, so the map stays small). */
const statementNames = new Map<string, string>();
const nameOf = (sql: string) => {
  let name = statementNames.get(sql);
  if (name === undefined) statementNames.set(sql, (name = `boxoffice_${statementNames.size + 1}`));
  return name;
};

function poolStatements(poolOf: () => Promise<pg.Pool>, prepare: boolean): Statements {
  let pool: pg.Pool | undefined;
  return {
    async rows<R extends object>(sql: string, params: readonly unknown[] = []) {
      pool ??= await poolOf();
      const result = await pool.query({ name: prepare ? nameOf(sql) : undefined, text: sql, values: params as unknown[] });
      return result.rows as R[];
    },
  };
}

const nativePool = (em: EntityManager) => async () => (await em.getConnection().getNativeClient()) as unknown as pg.Pool;

/** The statements of the pool an EntityManager's connection uses (see Statements), unprepared, for code that has one at hand. */
export function statementsOn(em: EntityManager): Statements {
  return poolStatements(nativePool(em), false);
}

/** The service's statements (see Statements), on its pg pool; prepared unless on the embedded database. */
export function statementsOf(orm: MikroORM, prepare: boolean): Statements {
  return poolStatements(nativePool(orm.em), prepare);
}

/** A call's EntityManager, forked on first use: a call that reads nothing through the ORM costs no fork. */
class CallEntityManager {
  #em: EntityManager | undefined;

  constructor(
    private readonly orm: MikroORM,
    readonly statements: Statements,
  ) {}

  get em(): EntityManager {
    return (this.#em ??= this.orm.em.fork());
  }
}

const entityManagerKey = createContextKey<CallEntityManager | undefined>(undefined, { description: "request entity manager" });

/**
 * Gives every call its own EntityManager (identity map and unit of work), forked from the service's ORM when
 * first asked for, and the service's statements (prepared when `prepare`: not on the embedded database).
 */
export function entityManagerInterceptor(orm: MikroORM, { prepare = true } = {}): Interceptor {
  const statements = statementsOf(orm, prepare);
  return (next) => (req) => {
    req.contextValues.set(entityManagerKey, new CallEntityManager(orm, statements));
    return next(req);
  };
}

function holderOf(ctx: HandlerContext): CallEntityManager {
  const holder = ctx.values.get(entityManagerKey);
  if (!holder) throw new Error("no EntityManager in context: the service was mounted without its database");
  return holder;
}

/** The call's EntityManager. */
export function entityManager(ctx: HandlerContext): EntityManager {
  return holderOf(ctx).em;
}

/** The service's statements, for a call's reads that need no EntityManager (see Statements). */
export function statements(ctx: HandlerContext): Statements {
  return holderOf(ctx).statements;
}
