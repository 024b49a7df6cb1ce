// What the fuzz test asserts of every answer: it came, in time, with a status
// of its protocol that is no internal error (or the one code the input admits),
// and with a short message that shows neither a stack nor SQL.
import { Code } from "@connectrpc/connect";
import type { FuzzCase } from "./cases.js";
import { sendRawH1, send, type Reply } from "./send.js";
import type { FuzzServer } from "./server-handle.js";
import { outcomeOf, type Outcome, type Protocol } from "./status.js";

/** Codes that say the server failed, not the request. */
export const serverFaults = new Set([Code.Internal, Code.Unknown, Code.DataLoss]);
/** HTTP refusals with a meaning of their own, fair without a status of the protocol (what the HTTP layer says of a request no RPC was reached by). */
const httpRefusals = new Set([404, 405, 413, 414, 415, 431]);
export const maxMessageChars = 1024;
export const maxDetailBytes = 4096;

const leaks: [string, RegExp][] = [
  ["a stack frame", /\bat (?:async )?[\w$.<>[\]]+ \(|\bat (?:file:|node:|\/)|\(node:internal|\.(?:ts|js|mjs|cjs):\d+/],
  ["a file path", /\/work\/|\/home\/|\/tmp\/|node_modules|file:\/\//],
  ["a JavaScript error", /\b(?:TypeError|ReferenceError|SyntaxError|RangeError)\b|Cannot read propert|is not a function|is not iterable|undefined is not/],
  [
    "SQL or a database error",
    /\bselect\b[\s\S]{0,200}\bfrom\b|\binsert into\b|\bupdate\s+"?\w+"?\s+set\b|\bdelete from\b|relation "|syntax error at|violates [\w -]*constraint|invalid input syntax for|duplicate key value|\bcolumn "|\bSQLSTATE\b|\bpg_\w+|out of range for type/i,
  ],
  ["a driver or runtime error code", /\bE(?:CONNREFUSED|CONNRESET|TIMEDOUT|PIPE)\b|\bERR_[A-Z0-9_]{4,}\b|ioredis|MikroORM|ReplyError/],
];

export interface Verdict {
  outcome: Outcome | undefined;
  reply: Reply;
  problems: string[];
}

export function describeAnswer(v: Verdict): string {
  const r = v.reply;
  if (r.timedOut) return `no answer after ${Math.round(r.elapsedMs)} ms`;
  const o = v.outcome;
  const status = o ? `${o.code === undefined ? "OK" : Code[o.code]} (from ${o.source}) ${JSON.stringify(o.message.slice(0, 300))}${o.message.length > 300 ? `… (${o.message.length} chars)` : ""}` : "-";
  return `HTTP ${r.status ?? "-"}, ${status}${r.reset !== undefined ? `, RST_STREAM ${r.reset}` : ""}${r.error ? `, ${r.error}` : ""}${r.streamAlive ? ", stream open (first message received)" : ""}, after ${Math.round(r.elapsedMs)} ms`;
}

/**
 * The protocol the server took the request for: the one its content type names where it names one (a gRPC-Web
 * transport sending application/json makes a Connect call); where it names none, the one the answer is in (a server
 * may answer a request of no protocol in one); else the transport's.
 */
function protocolSpoken(c: FuzzCase, reply: Reply): Protocol {
  if (c.options.raw || c.protocol === "connect-get") return c.protocol;
  const named = (header: string | string[] | undefined): Protocol | undefined => {
    const type = (Array.isArray(header) ? header[0] : header)?.toLowerCase() ?? "";
    if (type.startsWith("application/grpc-web")) return "grpc-web";
    if (type.startsWith("application/grpc")) return "grpc";
    if (type.startsWith("application/connect+")) return "connect-stream";
    if (/^application\/(json|proto)\b/.test(type)) return "connect";
    return undefined;
  };
  return named(c.exchange.headers["content-type"]) ?? named(reply.headers["content-type"]) ?? c.protocol;
}

/** Sends the case to the server (starting it again first if it died) and judges the answer. */
export async function judge(c: FuzzCase, server: FuzzServer): Promise<Verdict> {
  await server.ensure();
  const pid = server.pid;
  const overflows = server.timerOverflows;
  const reply = c.options.raw ? await sendRawH1(c.options.raw, server.port, c.exchange.capMs) : await send(c.exchange, server.port);
  const problems: string[] = [];
  if (reply.refused) return { outcome: undefined, reply, problems: [] };
  // A connection that broke may be the server going down: give its exit a moment to show.
  if ((reply.error || reply.timedOut) && (await server.exitsWithin(300))) {
    problems.push("the server process died");
  } else if (server.pid !== pid) {
    problems.push("the server process died");
  }
  if (c.exchange.abandon) return { outcome: undefined, reply, problems };
  if (c.options.notDeadlineExceeded) {
    // The server's warning comes down its stderr pipe a moment after the answer.
    await new Promise((resolve) => setTimeout(resolve, 50));
    if (server.timerOverflows > overflows) {
      problems.push("the server set a timer past setTimeout's range for this deadline (TimeoutOverflowWarning): it fires at once, ending a stream or call that asked for longer");
    }
  }

  if (reply.timedOut) {
    problems.push(`no answer within ${c.exchange.capMs} ms (a hang)`);
    return { outcome: undefined, reply, problems };
  }
  if (reply.elapsedMs > c.answerWithinMs) problems.push(`answered after ${Math.round(reply.elapsedMs)} ms, past the deadline and slack (${c.answerWithinMs} ms)`);
  if (reply.streamAlive) return { outcome: undefined, reply, problems };

  // A HEAD answer has no body: its status is all there is (and Connect says Unimplemented with 501).
  const head = c.exchange.method === "HEAD" && reply.status !== undefined && (reply.status < 500 || reply.status === 501);
  const httpRefusal = reply.status !== undefined && (httpRefusals.has(reply.status) || (c.options.httpInvalid && reply.status === 400) || head);
  const protocolReset = c.options.httpInvalid && reply.reset === 1 && reply.status === undefined;
  if (reply.status === undefined && reply.reset === undefined && reply.error) {
    if (!c.options.httpInvalid || !/closed|ECONNRESET|socket hang up/.test(reply.error)) problems.push(`no answer: ${reply.error}`);
    return { outcome: undefined, reply, problems };
  }
  const outcome = outcomeOf(protocolSpoken(c, reply), reply);
  const bare = outcome.source === "http-status" || outcome.source === "reset" || outcome.source === "none";
  if (bare && (httpRefusal || protocolReset)) {
    // An HTTP-level refusal: no status to judge, but it must not be the server failing.
    if (reply.status !== undefined && reply.status >= 500 && !head) problems.push(`HTTP ${reply.status}`);
  } else {
    if (outcome.code !== undefined && serverFaults.has(outcome.code)) problems.push(`answered ${Code[outcome.code]}`);
    if (c.expect && (outcome.code === undefined || !c.expect.includes(outcome.code))) {
      problems.push(`answered ${outcome.code === undefined ? "OK" : Code[outcome.code]}, expected ${c.expect.map((code) => Code[code]).join(" or ")}`);
    }
    if (c.options.notDeadlineExceeded && outcome.code === Code.DeadlineExceeded) problems.push("a deadline longer than a timer can wait ended the call at once (DeadlineExceeded)");
    if (reply.status !== undefined && reply.status >= 500 && outcome.code !== Code.Unavailable && outcome.code !== Code.Unimplemented && outcome.code !== Code.DeadlineExceeded) {
      problems.push(`HTTP ${reply.status}`);
    }
  }
  if (outcome.message.length > maxMessageChars) problems.push(`a message of ${outcome.message.length} chars (at most ${maxMessageChars})`);
  if (outcome.detailBytes > maxDetailBytes) problems.push(`error details of ${outcome.detailBytes} bytes (at most ${maxDetailBytes})`);
  for (const [what, pattern] of leaks) {
    const found = pattern.exec(outcome.text) ?? pattern.exec(outcome.message);
    if (found) problems.push(`the error shows ${what}: …${outcome.text.slice(Math.max(0, found.index - 40), found.index + 80)}…`);
  }
  return { outcome, reply, problems };
}

/** One failure, in the words the report groups failures by: the family and the answer (code and message, numbers and ids blanked). */
export function failureClass(c: FuzzCase, v: Verdict): string {
  const normalise = (text: string) =>
    text
      .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi, "<uuid>")
      .replace(/\d+/g, "N")
      .replace(/"[^"]{40,}"/g, '"…"')
      .slice(0, 160);
  const answer = v.reply.timedOut ? "no answer" : v.outcome ? `${v.outcome.code === undefined ? "OK" : Code[v.outcome.code]} ${JSON.stringify(normalise(v.outcome.message))}` : normalise(v.reply.error ?? "-");
  // Where nothing is wrong with the answer itself (a timer that overflowed, a death, lateness), that is the class.
  const beside = v.problems.filter((p) => /TimeoutOverflowWarning|process died|past the deadline/.test(p));
  if (beside.length > 0 && beside.length === v.problems.length) return `${c.family} | ${normalise(beside.join("; ").replace(/\(TimeoutOverflowWarning\).*$/, "(TimeoutOverflowWarning)"))}`;
  return `${c.family} | ${answer}`;
}
