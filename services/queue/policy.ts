import type { Pace, Policy } from "./store.js";

export const minuteMs = 60_000;

/** The policy in force: the service's defaults with a room's stored overrides on top. */
export function overlay(defaults: Policy, overrides: Partial<Policy>): Policy {
  const policy = { ...defaults };
  for (const key of Object.keys(defaults) as (keyof Policy)[]) {
    const value = overrides[key];
    if (value !== undefined && (typeof value !== "number" || Number.isFinite(value))) (policy as Record<keyof Policy, unknown>)[key] = value;
  }
  return policy;
}

/** How many admission or session-end times a pace carries at most (see Pace). */
export const sampleSize = 16;

/**
 * Expected wait for the fan at `position`: the later of when the rate limit
 * frees a place for them and when the room has space for them (while no
 * session has ended yet, when the sessions ahead run out at the latest).
 * Unknown (undefined) while paused and while there is no seat to sell. 0 means
 * at the next tick.
 */
export function estimatedWaitMs(position: number, pace: Pace, policy: Policy, now: number): number | undefined {
  if (pace.paused || !pace.supplyOpen) return undefined;
  const byRate =
    policy.ratePerMinute > 0
      ? slotWaitMs(position, { capacity: policy.ratePerMinute, taken: Math.min(pace.admittedLastMinute, policy.ratePerMinute), takenAt: pace.recentSample, lastsMs: minuteMs }, now)
      : 0;
  const room = { capacity: policy.maxActive, taken: pace.admitted, takenAt: pace.sessionEndsSample.map((end) => end - policy.sessionTtlMs) };
  if (position <= room.capacity - room.taken) return byRate;
  // Until a session has ended, the one thing known is that none lasts past session_ttl.
  const lastsMs = measuredSessionMs(pace, policy, now) ?? policy.sessionTtlMs;
  return Math.max(byRate, slotWaitMs(position, { ...room, lastsMs }, now));
}

/** Places that are taken and freed again: a rate limit's (each admission holds one for 60 s) or the room's (each session holds one). */
interface Places {
  capacity: number;
  /** How many are taken now, and when they were taken (a sample, ascending). */
  taken: number;
  takenAt: number[];
  /** How long a place stays taken. */
  lastsMs: number;
}

/**
 * When the fan at `position` gets a place: those free now at the next tick;
 * after that each place frees `lastsMs` after it was taken, in the order they
 * were taken, and again `lastsMs` after that for those further back.
 */
function slotWaitMs(position: number, places: Places, now: number): number {
  const freeNow = places.capacity - places.taken;
  if (position <= freeNow) return 0;
  const later = position - Math.max(0, freeNow) - 1;
  const round = Math.floor(later / places.capacity);
  const slot = later % places.capacity;
  const takenAt = slot < places.taken ? interpolate(places.takenAt, slot, places.taken) : now;
  return Math.max(0, Math.round(takenAt + (round + 1) * places.lastsMs - now));
}

/** The `index`-th of `count` ascending values, from a sample of them spread evenly by rank. */
function interpolate(sample: number[], index: number, count: number): number {
  if (sample.length <= 1 || count <= 1) return sample[0] ?? 0;
  const at = (index * (sample.length - 1)) / (count - 1);
  const low = Math.floor(at);
  const high = Math.min(sample.length - 1, low + 1);
  return sample[low]! + (sample[high]! - sample[low]!) * (at - low);
}

/**
 * How long a session holds its place, from the measured pace: while the room
 * is full, one fan comes in as one leaves, so max_active over the admission
 * rate. In the room's first minute the admissions that first filled it freed
 * nobody: the rate is that of the later ones, from the fill to the latest. At
 * most session_ttl; undefined when nothing is measured yet.
 */
function measuredSessionMs(pace: Pace, policy: Policy, now: number): number | undefined {
  if (pace.firstAdmissionAt === 0 || pace.admittedLastMinute === 0) return undefined;
  let perAdmissionMs: number;
  if (now - pace.firstAdmissionAt < minuteMs) {
    const freed = pace.admittedLastMinute - Math.min(policy.maxActive, pace.admittedLastMinute);
    const latest = pace.recentSample.at(-1) ?? 0;
    if (freed <= 0 || latest <= pace.firstAdmissionAt) return undefined;
    perAdmissionMs = (latest - pace.firstAdmissionAt) / freed;
  } else {
    perAdmissionMs = minuteMs / pace.admittedLastMinute;
  }
  return Math.min(policy.sessionTtlMs, policy.maxActive * perAdmissionMs);
}
