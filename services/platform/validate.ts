import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { InvalidInput } from "./errors.js";

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Request checks that name the field at fault (snake_case, as callers see it in the .proto). */
export const check = {
  id(value: string, field: string): string {
    if (value === "") throw new InvalidInput(field, "is required");
    if (!uuidPattern.test(value)) throw new InvalidInput(field, "must be a UUID");
    return value.toLowerCase();
  },

  text(value: string, field: string, { min = 1, max }: { min?: number; max: number }): string {
    // PostgreSQL cannot store NUL, and no name needs control characters.
    if (/[\u0000-\u001f\u007f]/.test(value)) throw new InvalidInput(field, "must not contain control characters");
    const trimmed = value.trim();
    if (trimmed.length < min) throw new InvalidInput(field, min === 1 ? "is required" : `must be at least ${min} characters`);
    if (trimmed.length > max) throw new InvalidInput(field, `must be at most ${max} characters`);
    return trimmed;
  },

  integer(value: number | bigint, field: string, min: number, max: number): number {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < min || n > max) throw new InvalidInput(field, `must be between ${min} and ${max}`);
    return n;
  },

  count<T>(items: T[], field: string, min: number, max: number): T[] {
    if (items.length < min || items.length > max) throw new InvalidInput(field, `must have ${min} to ${max} entries`);
    return items;
  },

  /** An idempotency key the caller chose: 1..128 printable characters. */
  idempotencyKey(value: string, field = "idempotency_key"): string {
    if (value === "") throw new InvalidInput(field, "is required");
    if (value.length > 128) throw new InvalidInput(field, "must be at most 128 characters");
    if (/[\u0000-\u001f\u007f]/.test(value)) throw new InvalidInput(field, "must not contain control characters");
    return value;
  },

  /** The seats of one hold: 1..4 distinct numbers, each a plausible seat number; sorted. */
  seatNumbers(numbers: number[], field = "seat_numbers"): number[] {
    check.count(numbers, field, 1, 4).forEach((n, i) => check.integer(n, `${field}[${i}]`, 1, 1000));
    if (new Set(numbers).size !== numbers.length) throw new InvalidInput(field, "must not repeat a seat");
    return [...numbers].sort((a, b) => a - b);
  },

  time(value: Timestamp | undefined, field: string): Date {
    if (!value) throw new InvalidInput(field, "is required");
    const date = timestampDate(value);
    if (Number.isNaN(date.getTime()) || date.getUTCFullYear() < 2000 || date.getUTCFullYear() > 2200) {
      throw new InvalidInput(field, "must be a time between the years 2000 and 2200");
    }
    return date;
  },
};
