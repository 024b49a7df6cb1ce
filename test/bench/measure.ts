import type { Transport } from "@connectrpc/connect";

export interface Result {
  name: string;
  calls: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
}

export interface MeasureOptions {
  seconds: number;
  warmSeconds: number;
  concurrency: number;
  /** Called when the warm-up ends and the measured window begins. */
  onMeasuring?: (startedMs: number) => unknown;
}

/** Thrown by a case's call when its prepared inputs (fans, holds) are used up: the case ends early. */
export class Exhausted extends Error {}

export function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
}

/**
 * Runs `call` from `concurrency` loops for `seconds` after `warmSeconds` of
 * warm-up; throughput and latency quantiles. A case whose inputs run out
 * ends early and is rated over the time it actually ran.
 */
export async function measure(name: string, call: () => Promise<unknown>, options: MeasureOptions): Promise<Result> {
  const loops = async (seconds: number, record: (ms: number) => void) => {
    const started = performance.now();
    const until = started + seconds * 1000;
    let exhausted = false;
    await Promise.all(
      Array.from({ length: options.concurrency }, async () => {
        while (!exhausted && performance.now() < until) {
          const began = performance.now();
          try {
            await call();
          } catch (error) {
            if (!(error instanceof Exhausted)) throw error;
            exhausted = true;
            return;
          }
          record(performance.now() - began);
        }
      }),
    );
    return (performance.now() - started) / 1000;
  };
  await loops(options.warmSeconds, () => {});
  options.onMeasuring?.(performance.now());
  const latencies: number[] = [];
  const ran = await loops(options.seconds, (ms) => latencies.push(ms));
  latencies.sort((a, b) => a - b);
  return { name, calls: latencies.length, perSecond: latencies.length / ran, p50Ms: quantile(latencies, 0.5), p99Ms: quantile(latencies, 0.99) };
}

/** One transport over several HTTP/2 connections: each call takes the next one, round robin. */
export function spread(transports: Transport[]): Transport {
  let next = 0;
  const pick = () => transports[next++ % transports.length]!;
  return {
    unary: (...args) => pick().unary(...args),
    stream: (...args) => pick().stream(...args),
  };
}
