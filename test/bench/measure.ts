export interface Result {
  name: string;
  calls: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
}

export interface MeasureOptions {
  seconds: number;
  concurrency: number;
}

/** Runs `call` from `concurrency` loops for `seconds` after 1 s of warm-up; throughput and latency quantiles. */
export async function measure(name: string, call: () => Promise<unknown>, { seconds, concurrency }: MeasureOptions): Promise<Result> {
  const warm = performance.now() + 1000;
  while (performance.now() < warm) await call();
  const latencies: number[] = [];
  const until = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < until) {
        const started = performance.now();
        await call();
        latencies.push(performance.now() - started);
      }
    }),
  );
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!;
  return { name, calls: latencies.length, perSecond: latencies.length / seconds, p50Ms: at(0.5), p99Ms: at(0.99) };
}
