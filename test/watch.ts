import { ConnectError } from "@connectrpc/connect";
import type { WatchQueueStatusResponse } from "../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { QueueState, type QueueStatus } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { eventually } from "./outcomes.js";

/** A status in a short readable form: "WAITING 2", "ADMITTED", "EXPIRED"… */
export const brief = (status: QueueStatus | undefined) =>
  status === undefined ? "none" : status.state === QueueState.WAITING ? `WAITING ${status.position}` : QueueState[status.state];

/** A WatchQueueStatus stream read in the background, so that a test can wait for messages with a deadline. */
export class Watch {
  readonly messages: WatchQueueStatusResponse[] = [];
  readonly times: number[] = [];
  ended = false;
  error: ConnectError | undefined;
  readonly #abort = new AbortController();
  readonly done: Promise<void>;

  constructor(open: (signal: AbortSignal) => AsyncIterable<WatchQueueStatusResponse>) {
    this.done = (async () => {
      try {
        for await (const message of open(this.#abort.signal)) {
          this.messages.push(message);
          this.times.push(Date.now());
        }
      } catch (error) {
        this.error = ConnectError.from(error);
      } finally {
        this.ended = true;
      }
    })();
  }

  get last(): QueueStatus | undefined {
    return this.messages.at(-1)?.status;
  }

  /**
   * The changes (not heartbeats), briefly. A message whose brief is the one before changed something the brief
   * does not show (a paused room's reason gone on resume, the estimate) and is not repeated: how soon the next
   * tick follows such a change depends on the machine's load, not on the code.
   */
  get changes(): string[] {
    const briefs = this.messages.filter((m) => !m.heartbeat).map((m) => brief(m.status));
    return briefs.filter((b, i) => i === 0 || b !== briefs[i - 1]);
  }

  /** Waits until `count` messages have arrived. */
  async received(count: number, timeoutMs = 5_000) {
    await eventually(`${count} watch messages (have ${this.messages.length}: ${this.changes.join(", ")})`, async () => this.messages.length >= count || this.ended, timeoutMs);
    if (this.messages.length < count) throw new Error(`stream ended after ${this.messages.length} messages (${this.error?.message ?? "no error"})`);
  }

  /** Waits until the stream has reported this change ("WAITING 1", "ADMITTED"…). */
  async sees(change: string, timeoutMs = 10_000) {
    await eventually(`watch: ${change} (saw ${this.changes.join(", ") || "nothing"})`, async () => this.changes.includes(change) || this.ended, timeoutMs);
  }

  /** Waits for the stream to end. */
  async ends(timeoutMs = 5_000) {
    await eventually(`the watch stream to end (last: ${brief(this.last)})`, async () => this.ended, timeoutMs);
  }

  async cancel() {
    this.#abort.abort();
    await this.done;
  }
}
