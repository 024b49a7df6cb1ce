import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  ScanResult,
  ScanTicketResponseSchema,
  TicketSchema,
  TicketState,
  type ListTicketsRequest,
  type ScanTicketRequest,
  type TicketScannerService,
  type TicketService,
} from "../../gen/boxoffice/ticket/v1/ticket_pb.js";
import { caller } from "../platform/access.js";
import { entityManager } from "../platform/database.js";
import { InvalidInput } from "../platform/errors.js";
import { check } from "../platform/validate.js";
import { orderNumber, type ScanOutcome, type TicketRecord, type Tickets } from "./tickets.js";

const states = { VALID: TicketState.VALID, USED: TicketState.USED, VOID: TicketState.VOID } as const;
const results = {
  ADMITTED: ScanResult.ADMITTED,
  ALREADY_USED: ScanResult.ALREADY_USED,
  VOID: ScanResult.VOID,
  WRONG_DATE: ScanResult.WRONG_DATE,
  FORGED: ScanResult.FORGED,
} as const;

function ticketMessage(ticket: TicketRecord) {
  return create(TicketSchema, {
    code: ticket.code,
    orderNumber: ticket.orderNumber,
    reservationId: ticket.reservationId,
    concertId: ticket.concertId,
    concertTitle: ticket.concertTitle,
    venue: ticket.venue,
    scheduleId: ticket.scheduleId,
    startsAt: timestampFromDate(ticket.startsAt),
    seatNumber: ticket.seatNumber,
    price: BigInt(ticket.price),
    state: states[ticket.state],
    usedAt: ticket.used && timestampFromDate(ticket.used.at),
    gate: ticket.used?.gate ?? "",
  });
}

function scanMessage(outcome: ScanOutcome) {
  if (outcome.result === "FORGED") return create(ScanTicketResponseSchema, { result: ScanResult.FORGED });
  const used = "used" in outcome ? outcome.used : undefined;
  return create(ScanTicketResponseSchema, {
    result: results[outcome.result],
    orderNumber: orderNumber(outcome.ticket.reservationId),
    seatNumber: outcome.ticket.seatNumber,
    scheduleId: outcome.ticket.scheduleId,
    startsAt: outcome.startsAt && timestampFromDate(outcome.startsAt),
    usedAt: used && timestampFromDate(used.at),
    usedGate: used?.gate ?? "",
  });
}

/** The fan's tickets. */
export class TicketHandlers implements ServiceImpl<typeof TicketService> {
  constructor(private readonly tickets: Tickets) {}

  async listTickets(req: ListTicketsRequest, ctx: HandlerContext) {
    const page = await this.tickets.list(entityManager(ctx), caller(ctx).userId, req);
    return { tickets: page.tickets.map(ticketMessage), nextPageToken: page.nextPageToken };
  }
}

/** The door: every outcome about a ticket is a result to show; only an unreadable request is an error. */
export class TicketScannerHandlers implements ServiceImpl<typeof TicketScannerService> {
  constructor(private readonly tickets: Tickets) {}

  async scanTicket(req: ScanTicketRequest, ctx: HandlerContext) {
    if (req.code === "") throw new InvalidInput("code", "is required");
    const scan = { code: req.code, scheduleId: check.id(req.scheduleId, "schedule_id"), gate: check.text(req.gate, "gate", { max: 100 }) };
    return scanMessage(await this.tickets.scan(entityManager(ctx), scan));
  }
}
