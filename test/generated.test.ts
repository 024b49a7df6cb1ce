import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(import.meta.dirname, "..");
const bin = join(root, "node_modules/.bin");

function files(dir: string): Map<string, string> {
  const entries = readdirSync(dir, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".ts"));
  return new Map(entries.sort().map((f) => [f, readFileSync(join(dir, f), "utf8")]));
}

describe("gen/", () => {
  it("is exactly what buf generates from proto/ (regenerate with npm run generate)", () => {
    const out = mkdtempSync(join(tmpdir(), "boxoffice-gen-"));
    try {
      execFileSync(join(bin, "buf"), ["generate", "--output", out], {
        cwd: root,
        env: { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH}` },
        stdio: "pipe",
      });
      const fresh = files(join(out, "gen"));
      const committed = files(join(root, "gen"));
      expect([...committed.keys()]).toEqual([...fresh.keys()]);
      for (const [file, content] of fresh) expect(committed.get(file), `gen/${file} is stale`).toBe(content);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 60_000);
});
