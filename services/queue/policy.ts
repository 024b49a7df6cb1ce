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
 * Expected wait for the fan at `position`: the later of when the rate limit
 * frees a place for them and, for the part of the line the room has no space
 * for, the measured pace at which the room takes fans in (as fast as sessions
 * end). Unknown (undefined) while paused, while there is no seat to sell, and
 * while the room is full with nothing measured yet. 0 means at the next tick.
 */
export function estimatedWaitMs(position: number, pace: Pace, policy: Policy, now: number): number | undefined {
  if (pace.paused || !pace.supplyOpen) return undefined;
  const byRate = policy.ratePerMinute > 0 ? rateLimitedWaitMs(position, pace, policy.ratePerMinute, now) : 0;
  const beyondRoom = position - Math.max(0, policy.maxActive - pace.admitted);
  if (beyondRoom <= 0) return byRate;
  const byPace = measuredWaitMs(beyondRoom, pace, now);
  return byPace === undefined ? undefined : Math.max(byRate, byPace);
}

/**
 * When the rate limit (at most `rate` admissions in any 60 s) lets the fan at
 * `position` in: the places free now go at the next tick; after that each
 * place frees 60 s after the admission that took it, in the order they were
 * taken (the window's admissions, spread between its oldest and newest).
 */
function rateLimitedWaitMs(position: number, pace: Pace, rate: number, now: number): number {
  const taken = Math.min(pace.admittedLastMinute, rate);
  const freeNow = rate - taken;
  if (position <= freeNow) return 0;
  const later = position - freeNow - 1;
  const round = Math.floor(later / rate);
  const slot = later % rate;
  const spread = taken > 1 ? (pace.newestRecentAt - pace.oldestRecentAt) / (taken - 1) : 0;
  const takenAt = slot < taken ? pace.oldestRecentAt + spread * slot : now;
  return Math.max(0, Math.round(takenAt + (round + 1) * minuteMs - now));
}

/**
 * From the admissions of the last minute (a moving window); right after the
 * first admission the window is taken as at least 10 s, so that one early
 * burst does not promise too much.
 */
function measuredWaitMs(count: number, pace: Pace, now: number): number | undefined {
  if (pace.admittedLastMinute === 0 || pace.firstAdmissionAt === 0) return undefined;
  const windowMs = Math.min(minuteMs, Math.max(10_000, now - pace.firstAdmissionAt));
  return Math.round((count * windowMs) / pace.admittedLastMinute);
}
