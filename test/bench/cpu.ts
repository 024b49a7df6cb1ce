import { readFileSync } from "node:fs";

/** CPU time used so far, in ms: by one process (from /proc), by this process, and by the whole machine. */
export interface CpuSnapshot {
  serverMs: number;
  driverMs: number;
  machineMs: number;
}

const ticksPerSecond = 100; // USER_HZ on Linux

function processMs(pid: number): number {
  // Fields after the command name (which may contain spaces): utime and stime are the 12th and 13th.
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / ticksPerSecond;
}

function machineBusyMs(): number {
  const [, ...times] = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).map(Number);
  // user nice system idle iowait irq softirq steal: busy is everything but idle and iowait.
  const busy = times.slice(0, 8).reduce((sum, t, i) => (i === 3 || i === 4 ? sum : sum + t), 0);
  return (busy * 1000) / ticksPerSecond;
}

export function cpuSnapshot(serverPid: number): CpuSnapshot {
  const { user, system } = process.cpuUsage();
  return { serverMs: processMs(serverPid), driverMs: (user + system) / 1000, machineMs: machineBusyMs() };
}

export interface CpuPerCall {
  serverUs: number;
  driverUs: number;
  restUs: number;
}

/** CPU µs per call between two snapshots: the server, the load driver, and everything else (PostgreSQL, Redis, the rest). */
export function cpuPerCall(before: CpuSnapshot, after: CpuSnapshot, calls: number): CpuPerCall {
  const server = after.serverMs - before.serverMs;
  const driver = after.driverMs - before.driverMs;
  const rest = after.machineMs - before.machineMs - server - driver;
  const us = (ms: number) => (ms * 1000) / Math.max(calls, 1);
  return { serverUs: us(server), driverUs: us(driver), restUs: us(Math.max(rest, 0)) };
}
