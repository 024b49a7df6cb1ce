import { logger, why } from "./log.js";

const backgroundLog = logger("background");

/**
 * Work repeated in the background (admission ticks, sweepers): one run at a
 * time, the next `everyMs` after the previous ends, failures logged at most
 * once a minute so that a store that is down does not flood the log.
 */
export class Repeating {
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #stopped = true;
  #lastError = 0;

  constructor(
    private readonly name: string,
    private readonly everyMs: number,
    private readonly work: () => Promise<unknown>,
  ) {}

  start() {
    this.#stopped = false;
    this.#schedule();
  }

  /** Stops scheduling and waits for a run in progress. */
  async stop() {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
  }

  /** Logs a failure of this work, at most once a minute. */
  report(error: unknown) {
    const now = Date.now();
    if (now - this.#lastError < 60_000) return;
    this.#lastError = now;
    backgroundLog.error({ task: this.name, error: why(error) }, `${this.name}: ${why(error)}`);
  }

  #schedule() {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#running = this.work()
        .then(() => undefined)
        .catch((error: unknown) => this.report(error))
        .finally(() => this.#schedule());
    }, this.everyMs);
  }
}
