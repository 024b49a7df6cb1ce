import { readFileSync } from "node:fs";

/**
 * Stops the process on one line when this Node is older than package.json's `engines.node`
 * (`>=22.17`). `npm ci` brings Node 24 (the `node` dev dependency) for the npm scripts, but
 * `npm ci --omit=dev`, the usual production install, leaves it out, and the scripts then run
 * on whatever `node` the machine has. Imports nothing but node:fs, so that an
 * entry point can call it before it loads MikroORM and the rest (with dynamic imports).
 */
export function requireSupportedNode(): void {
  let wanted: string | undefined;
  try {
    wanted = (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { engines?: { node?: string } }).engines?.node;
  } catch {
    return; // no package.json beside the code: nothing to compare against
  }
  const floor = /^>=\s*(\d+)(?:\.(\d+))?/.exec(wanted ?? "");
  if (!floor) return;
  const [major, minor] = process.versions.node.split(".").map(Number) as [number, number];
  const [needMajor, needMinor] = [Number(floor[1]), Number(floor[2] ?? 0)];
  if (major > needMajor || (major === needMajor && minor >= needMinor)) return;
  console.error(
    `boxoffice needs Node ${needMajor}.${needMinor} or newer (package.json engines: "${wanted}"), and this is Node ${process.versions.node} (${process.execPath}). ` +
      `Install dependencies with \`npm ci\`, which brings Node 24 for the npm scripts (\`--omit=dev\` leaves it out), or put Node ${needMajor}.${needMinor}+ first on PATH.`,
  );
  process.exit(1);
}
