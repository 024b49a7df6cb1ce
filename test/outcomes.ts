import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "vitest";
import { ErrorDetailSchema } from "../gen/boxoffice/common/v1/error_pb.js";
import { Reason, reasonOf } from "../services/platform/errors.js";
import { failure } from "./support.js";

/** "Code/REASON" of a failed call, so that a tally of outcomes reads well in a failure diff. */
export function outcome(error: unknown): string {
  const connectError = ConnectError.from(error);
  return `${Code[connectError.code]}/${Reason[reasonOf(connectError) ?? Reason.UNSPECIFIED]}`;
}

/** How many calls succeeded ("ok") and how many failed with each code and reason. */
export function tally(results: PromiseSettledResult<unknown>[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const result of results) {
    const name = result.status === "fulfilled" ? "ok" : outcome(result.reason);
    counts[name] = (counts[name] ?? 0) + 1;
  }
  return counts;
}

/** Expects the call to fail with this code and reason; returns the error. */
export async function refused(call: Promise<unknown>, code: Code, reason: Reason) {
  const error = await failure(call);
  expect(outcome(error), error.rawMessage).toBe(`${Code[code]}/${Reason[reason]}`);
  return error;
}

/** Expects InvalidArgument naming the field, both in the message and in the error detail. */
export async function invalid(call: Promise<unknown>, field: string) {
  const error = await refused(call, Code.InvalidArgument, Reason.INVALID_ARGUMENT);
  expect(error.rawMessage).toContain(field);
  expect(error.findDetails(ErrorDetailSchema)[0]?.field).toBe(field);
  return error;
}

/** Polls `probe` until it holds, failing after `timeoutMs`. */
export async function eventually(what: string, probe: () => Promise<boolean>, timeoutMs = 5_000, everyMs = 25) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > deadline) throw new Error(`${what}: not so after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** Checks `check` again and again for `ms`: for things that must NOT happen within a window. */
export async function holdsFor(ms: number, check: () => Promise<void>) {
  const end = Date.now() + ms;
  do {
    await check();
    await new Promise((resolve) => setTimeout(resolve, 50));
  } while (Date.now() < end);
}

/** Deterministic pseudo-random numbers (mulberry32), so that a failing run can be replayed. */
export function seededRandom(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
