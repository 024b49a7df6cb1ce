import type { Statements } from "./database.js";
import { InvalidInput } from "./errors.js";
import { check } from "./validate.js";

/** Where a page ends: the last row's (created_at, id). */
interface Cursor {
  createdAt: Date;
  id: string;
}

/** page_size as the contracts define it: 1..100, 20 when unset. */
export function pageSize(value: number): number {
  return value === 0 ? 20 : check.integer(value, "page_size", 1, 100);
}

function decode(token: string): Cursor | undefined {
  if (token === "") return undefined;
  const [millis, id] = Buffer.from(token, "base64url").toString().split("/");
  const createdAt = new Date(Number(millis));
  if (!id || !/^\d+$/.test(millis ?? "") || Number.isNaN(createdAt.getTime())) {
    throw new InvalidInput("page_token", "is not a token this service issued");
  }
  return { createdAt, id: check.id(id, "page_token") };
}

function encode(row: Cursor): string {
  return Buffer.from(`${row.createdAt.getTime()}/${row.id}`).toString("base64url");
}

/** What a page is read from: `select <columns> from <from> where <where>`, with `$1`… parameters (see Statements). */
export interface PageQuery {
  from: string;
  columns: string;
  where: string;
  params: readonly unknown[];
}

/**
 * One page of rows newest first, keyset-paginated on (created_at, id): stable
 * while rows are added, and as fast on page 1,000 as on page 1. One statement
 * on the service's pool (the tables' (user_id, created_at, id) indexes serve it).
 */
export async function newestFirst<R extends { created_at: Date | string; id: string }>(
  db: Statements,
  query: PageQuery,
  request: { pageSize: number; pageToken: string },
): Promise<{ rows: R[]; nextPageToken: string }> {
  const size = pageSize(request.pageSize);
  const after = decode(request.pageToken);
  const n = query.params.length;
  const page = await db.rows<R>(
    after
      ? `select ${query.columns} from ${query.from} where ${query.where} and (created_at < $${n + 1} or (created_at = $${n + 1} and id < $${n + 2}))
          order by created_at desc, id desc limit $${n + 3}`
      : `select ${query.columns} from ${query.from} where ${query.where} order by created_at desc, id desc limit $${n + 1}`,
    after ? [...query.params, after.createdAt, after.id, size + 1] : [...query.params, size + 1],
  );
  const rows = page.slice(0, size);
  const last = rows.at(-1);
  return { rows, nextPageToken: page.length > size ? encode({ createdAt: new Date(last!.created_at), id: last!.id }) : "" };
}
