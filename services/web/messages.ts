import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorDetailSchema, Reason } from "../../gen/boxoffice/common/v1/error_pb.js";

/** What the fan reads for each machine-readable reason a service gives. */
const byReason: Partial<Record<Reason, string>> = {
  [Reason.SEAT_UNAVAILABLE]: "Sorry, that seat was just taken by someone else. Pick another seat.",
  [Reason.SEAT_NOT_FOUND]: "That seat does not exist on this date.",
  [Reason.HOLD_LIMIT_REACHED]: "You already hold seats for this date. Pay for them or let the hold run out first.",
  [Reason.HOLD_EXPIRED]: "Your hold has expired and the seats were released. Pick seats again.",
  [Reason.HOLD_RELEASED]: "Your hold was released. Pick seats again.",
  [Reason.INSUFFICIENT_POINTS]: "You don't have enough points for this. Charge more points, then pay again — your seats stay held until the countdown ends.",
  [Reason.BALANCE_LIMIT_EXCEEDED]: "That charge would take your balance above the maximum of 1,000,000,000 points.",
  [Reason.NOT_ADMITTED]: "You have not been admitted yet. Please wait for your turn in the waiting room.",
  [Reason.QUEUE_TOKEN_MISSING]: "Join the waiting room first.",
  [Reason.QUEUE_TOKEN_INVALID]: "Your waiting-room pass is not valid for this concert. Join the queue again.",
  [Reason.QUEUE_TOKEN_EXPIRED]: "Your session in the waiting room has ended. Join the queue again to continue.",
  [Reason.QUEUE_PAUSED]: "Admission is paused for a moment. Keep this page open; your place is kept.",
  [Reason.SOLD_OUT]: "Sold out: every seat of this concert is taken.",
  [Reason.TOKEN_MISSING]: "Your sign-in is missing. Reload the page.",
  [Reason.TOKEN_INVALID]: "Your sign-in is not valid any more. Reload the page.",
  [Reason.TOKEN_EXPIRED]: "Your sign-in has expired. Reload the page.",
  [Reason.USER_NOT_FOUND]: "We don't know this account. Reload the page to start again.",
  [Reason.CONCERT_NOT_FOUND]: "That concert does not exist (any more).",
  [Reason.SCHEDULE_NOT_FOUND]: "That date does not exist (any more).",
  [Reason.RESERVATION_NOT_FOUND]: "We cannot find that reservation.",
  [Reason.RESERVATION_CONFIRMED]: "These seats are already paid for.",
  [Reason.IDEMPOTENCY_KEY_REUSED]: "That request was already used for something else. Please try again.",
  [Reason.PAYMENT_FAILED]: "The payment did not go through.",
  [Reason.RATE_LIMITED]: "Too many requests right now. Wait a moment and try again.",
  [Reason.DEPENDENCY_UNAVAILABLE]: "The box office is busy or briefly unreachable. Try again in a moment.",
  [Reason.SALE_NOT_OPEN]: "The sale for this concert has not opened yet. Come back when its pre-queue opens.",
  [Reason.SALE_CLOSED]: "The sale for this concert has ended: no more seats are sold.",
  [Reason.CONCERT_CANCELLED]: "This concert was cancelled by the organiser. Nothing more is sold.",
  [Reason.DATE_STARTED]: "This date has already started: its seats can no longer be held or paid for.",
  [Reason.FAN_LIMIT_REACHED]: "You have reached the most seats one fan may have for this concert, over all its dates.",
  [Reason.SALE_STARTED]: "The sale has already opened: this can only be changed before it opens.",
  [Reason.CONCERT_HAS_SALES]: "This concert has sold seats, so it cannot be cancelled yet.",
  [Reason.CANCEL_CUTOFF_PASSED]: "This booking can no longer be cancelled: the cancellation deadline before the show has passed.",
  [Reason.TICKET_USED]: "A ticket of this booking was already used at the door, so the booking can no longer be cancelled.",
  [Reason.RESERVATION_NOT_CONFIRMED]: "Only a paid booking can be cancelled. Seats you only hold are released when the hold runs out.",
  [Reason.RESERVATION_CANCELLED]: "This booking was cancelled and its points are refunded.",
  [Reason.SCHEDULE_CANCELLED]: "This date was cancelled by the organiser. Bookings on it are refunded.",
  [Reason.SERVER_BUSY]: "The box office is very busy right now. Trying again in a moment.",
  [Reason.RANDOM_ADMISSION]: "Admission is by lot: fans are let in at random from everyone waiting, so there is no place in line. Keep this page open.",
};

/** An RFC 3339 time (as services put in error metadata) or a Date, in the reader's words; "" when there is none or it does not parse. */
export function when(time: string | Date | undefined): string {
  if (time === undefined || time === "") return "";
  const date = typeof time === "string" ? new Date(time) : time;
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString("en", { dateStyle: "medium", timeStyle: "short" });
}

/**
 * The message for a refusal whose metadata says more than its reason: when a
 * sale that has not opened opens, how many seats a fan already has against
 * the per-fan limit, and until when a booking could be cancelled.
 */
function withFacts(reason: Reason | undefined, metadata: Record<string, string>): string | undefined {
  if (reason === Reason.SALE_NOT_OPEN) {
    const prequeue = when(metadata["prequeue_opens_at"]);
    const sale = when(metadata["sale_opens_at"]);
    if (prequeue && sale && prequeue !== sale) return `The sale for this concert has not opened yet. Its pre-queue opens ${prequeue} and the sale opens ${sale}; come back then.`;
    if (sale || prequeue) return `The sale for this concert has not opened yet. It opens ${sale || prequeue}; come back then.`;
  }
  if (reason === Reason.FAN_LIMIT_REACHED && metadata["limit"]) {
    const held = metadata["held"];
    return `One fan may have at most ${metadata["limit"]} seats for this concert, over all its dates${held ? ` (you already have ${held})` : ""}. Pick fewer seats.`;
  }
  if (reason === Reason.CANCEL_CUTOFF_PASSED) {
    const cutoff = when(metadata["cutoff_at"]);
    const starts = when(metadata["starts_at"]);
    if (cutoff) return `This booking can no longer be cancelled: bookings of this date could be cancelled until ${cutoff}${starts ? ` (the show starts ${starts})` : ""}.`;
  }
  return undefined;
}

/** Shown in the waiting room while the page watches again after its stream ended (a restart, a deploy, a dropped network). */
export const reconnectingMessage = "Reconnecting to the waiting room… Your place in line is kept.";

/** A service's `detail` (written for people, lower case, no full stop) as a sentence on its own; "" when there is none. */
export function sentence(detail: string): string {
  if (!detail) return "";
  return `${detail[0]!.toUpperCase()}${detail.slice(1)}${/[.!?]$/.test(detail) ? "" : "."}`;
}

/** The reason a service attached to an error, when it attached one. */
export function reasonOf(error: unknown): Reason | undefined {
  return error instanceof ConnectError ? error.findDetails(ErrorDetailSchema)[0]?.reason : undefined;
}

/** A human message for a reason (a refusal or a payment's failure_reason). */
export function explainReason(reason: Reason | undefined): string | undefined {
  return reason === undefined ? undefined : byReason[reason];
}

/** A human message for anything a call threw. */
export function explain(error: unknown): string {
  const connectError = ConnectError.from(error);
  const detail = connectError.findDetails(ErrorDetailSchema)[0];
  const known = withFacts(detail?.reason, detail?.metadata ?? {}) ?? explainReason(detail?.reason);
  if (known) return known;
  if (detail?.reason === Reason.INVALID_ARGUMENT) return `Please check ${detail.field ? `“${detail.field.replace(/_/g, " ")}”` : "what you entered"}: ${connectError.rawMessage}`;
  switch (connectError.code) {
    case Code.Unavailable:
    case Code.DeadlineExceeded:
      return "The box office cannot be reached right now. Check your connection and try again.";
    case Code.ResourceExhausted:
      return "Too many requests right now. Wait a moment and try again.";
    case Code.Canceled:
      return "The request was cancelled.";
    default:
      return `Something went wrong: ${connectError.rawMessage}`;
  }
}
