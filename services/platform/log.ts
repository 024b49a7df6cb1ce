import { getOption } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createContextKey, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { pino, type Logger } from "pino";
import { Access, access } from "../../gen/boxoffice/common/v1/access_pb.js";
import { untilEnd } from "./call-end.js";
import { peerAddressKey } from "./peer.js";

/**
 * The process's log: JSON lines on stdout (pino), with a level, an ISO time,
 * the component, and for calls the service, RPC, code, duration, request id
 * and trace id. Secrets never reach it: the fields that could carry one are
 * redacted wherever they appear, and nothing logs a request's headers.
 */
export const log: Logger = pino({
  level: process.env.LOG_LEVEL || "info",
  timestamp: pino.stdTimeFunctions.isoTime,
  formatters: { level: (label) => ({ level: label }) },
  redact: {
    paths: ["authorization", "token", "queueToken", "internalCredential", "operatorKey", "scannerKey", "tokenSecret", "password", "*.authorization", "*.token", "*.queueToken", "*.password"],
    censor: "[redacted]",
  },
  hooks: {
    logMethod(args, method, level) {
      if (watchers.size > 0) for (const watcher of watchers) watcher(level, args);
      return method.apply(this, args);
    },
  },
});

/** One component's log (`component` in every line). */
export const logger = (component: string): Logger => log.child({ component });

const watchers = new Set<(level: number, args: unknown[]) => void>();

/** What was logged while a test watched: level (pino's number) and message. For tests. */
export function watchLogs(): { entries: { level: number; message: string }[]; stop(): void } {
  const entries: { level: number; message: string }[] = [];
  const watcher = (level: number, args: unknown[]) => {
    const message = args.map((arg) => (typeof arg === "string" ? arg : arg instanceof Error ? arg.message : JSON.stringify(arg))).join(" ");
    entries.push({ level, message });
  };
  watchers.add(watcher);
  return { entries, stop: () => watchers.delete(watcher) };
}

/** The message of what was thrown, for a log line (a stack is for bugs only, logged where they are mapped). */
export const why = (error: unknown): string => (error instanceof Error ? error.message : String(error));

export interface AccessLogOptions {
  /** The share of calls logged (0..1); calls that end in a server fault, and operator actions, are always logged. */
  sample: number;
}

/** What an operator action changed, as its handler reports it (audit). */
export interface AuditRecord {
  subject: string;
  before?: unknown;
  after?: unknown;
}
const auditKey = createContextKey<AuditRecord[] | undefined>(undefined, { description: "operator action audit" });

/** For an operator RPC's handler: what it changed, to go in the audit line with who asked. */
export function audit(ctx: HandlerContext, record: AuditRecord): void {
  ctx.values.get(auditKey)?.push(record);
}

/** Codes that mean the server, not the caller, failed: always logged. */
const faults = new Set([Code.Internal, Code.Unknown, Code.DataLoss, Code.Unavailable, Code.DeadlineExceeded]);
const requestIdPattern = /^[A-Za-z0-9._:-]{1,64}$/;
const traceparentPattern = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/;
const accessLevels = new WeakMap<object, Access>();

/**
 * The access log and the audit: every call gets a request id (the caller's
 * `x-request-id` when it is a sane one, else a new one; sent back in the
 * response header), and a sampled share of calls is logged with service, RPC,
 * code, duration, request id, trace id (from `traceparent`) and peer. Calls
 * that fail on the server's side are always logged, at warn; every operator
 * RPC that changes something is always logged, at info, as an audit line with
 * what its handler reported it changed (before and after).
 */
export function accessLog(options: AccessLogOptions): Interceptor {
  const calls = logger("access");
  const audits = logger("audit");
  return (next) => async (req) => {
    const started = performance.now();
    const given = req.header.get("x-request-id");
    const requestId = given !== null && requestIdPattern.test(given) ? given : randomUUID();
    let level = accessLevels.get(req.method);
    if (level === undefined) accessLevels.set(req.method, (level = getOption(req.method, access)));
    // Operator reads (the console polls them every second) are no actions: the access log's, sampled.
    const operator = level === Access.OPERATOR && req.method.idempotency !== MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS;
    const changes: AuditRecord[] | undefined = operator ? [] : undefined;
    if (changes) req.contextValues.set(auditKey, changes);
    const finish = (error: unknown) => {
      const code = error === undefined ? "OK" : Code[ConnectError.from(error).code];
      const fault = error !== undefined && faults.has(ConnectError.from(error).code);
      if (!operator && !fault && !(options.sample > 0 && Math.random() < options.sample)) return;
      const fields = {
        service: req.service.typeName,
        rpc: req.method.name,
        code,
        ms: Math.round((performance.now() - started) * 10) / 10,
        requestId,
        traceId: traceparentPattern.exec(req.header.get("traceparent") ?? "")?.[1],
        peer: req.contextValues.get(peerAddressKey),
      };
      if (operator) audits.info({ ...fields, who: "operator", changes }, `operator ${req.method.name}: ${code}`);
      else if (fault) calls.warn(fields, `${req.method.name}: ${code}`);
      else calls.info(fields, `${req.method.name}: ${code}`);
    };
    try {
      const res = await untilEnd(next(req), finish);
      res.header.set("x-request-id", requestId);
      return res;
    } catch (error) {
      if (error instanceof ConnectError) error.metadata.set("x-request-id", requestId);
      throw error;
    }
  };
}
