import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { CoordinatorService } from "../../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { queueTokenHeader } from "../platform/access.js";
import type { QueueWatch } from "./queue-watch.js";

/** The fan's one-stop entry to the booking flow. */
export class CoordinatorHandlers implements Partial<ServiceImpl<typeof CoordinatorService>> {
  constructor(private readonly queueWatch: QueueWatch) {}

  /** Streams the waiting info of the caller's queue token until it reaches a final state. */
  async *watchQueueStatus(_req: unknown, ctx: HandlerContext) {
    // The access interceptor has made sure the header is there; the queue service checks the token.
    yield* this.queueWatch.watch(ctx.requestHeader.get(queueTokenHeader)!, ctx.signal);
  }
}
