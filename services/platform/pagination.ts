import type { EntityManager, EntityName, FilterQuery } from "@mikro-orm/postgresql";
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

/**
 * One page of rows newest first, keyset-paginated on (created_at, id): stable
 * while rows are added, and as fast on page 1,000 as on page 1.
 */
export async function newestFirst<T extends Cursor>(
  em: EntityManager,
  entity: EntityName<T>,
  where: FilterQuery<T>,
  request: { pageSize: number; pageToken: string },
): Promise<{ rows: T[]; nextPageToken: string }> {
  const size = pageSize(request.pageSize);
  const after = decode(request.pageToken);
  const filter = after
    ? { $and: [where, { $or: [{ createdAt: { $lt: after.createdAt } }, { createdAt: after.createdAt, id: { $lt: after.id } }] }] }
    : where;
  const page = (await em.find(entity, filter as FilterQuery<T>, {
    orderBy: { createdAt: "desc", id: "desc" } as never,
    limit: size + 1,
  })) as T[];
  const rows = page.slice(0, size);
  return { rows, nextPageToken: page.length > size ? encode(rows.at(-1)!) : "" };
}
