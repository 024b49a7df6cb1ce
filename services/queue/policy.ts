import type { Pace, Policy } from "./store.js";

export const minuteMs = 60_000;

/** The policy in force: the service's defaults with a room's stored overrides on top. */
export function overlay(defaults: Policy, overrides: Partial<Policy>): Policy {
  const policy = { ...defaults };
  for (const key of Object.keys(defaults) as (keyof Policy)[]) {
    const value = overrides[key];
    if (value !== undefined && Number.isFinite(value)) policy[key] = value;
  }
  return policy;
}

/**
 * Expected wait for the fan at `position`, from the admissions of the last
 * minute (a moving window). Unknown (undefined) while paused or while nobody
 * was admitted in the window. Right after the first admission the window is
 * taken as at least 10 s, so that one early burst does not promise too much.
 */
export function estimatedWaitMs(position: number, pace: Pace, now: number): number | undefined {
  if (pace.paused || pace.admittedLastMinute === 0 || pace.firstAdmissionAt === 0) return undefined;
  const windowMs = Math.min(minuteMs, Math.max(10_000, now - pace.firstAdmissionAt));
  const perMs = pace.admittedLastMinute / windowMs;
  return Math.round(position / perMs);
}
