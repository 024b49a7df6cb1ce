import { build } from "esbuild";
import { readFile } from "node:fs/promises";
import type http from "node:http";
import { fileURLToPath } from "node:url";

const here = (name: string) => fileURLToPath(new URL(name, import.meta.url));

/** Bundles a page's script (app.ts or console.ts, and what it imports) in memory, for browsers. */
async function bundle(entry: string): Promise<string> {
  const result = await build({
    entryPoints: [here(entry)],
    bundle: true,
    write: false,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    legalComments: "none",
    logLevel: "silent",
  });
  return result.outputFiles[0]!.text;
}

interface Asset {
  type: string;
  body: Buffer;
}

/**
 * The fan's booking page and the operator console, bundled once when the
 * server starts, as a plain HTTP handler for the host's fallback (every
 * request that is no RPC): the page at `/`, its script at `/app.js`, the
 * console at `/console` with `/console.js`, 404 for anything else.
 */
export async function webPage(): Promise<http.RequestListener> {
  const [html, script, consoleHtml, consoleScript] = await Promise.all([readFile(here("index.html")), bundle("app.ts"), readFile(here("console.html")), bundle("console.ts")]);
  const assets = new Map<string, Asset>([
    ["/", { type: "text/html; charset=utf-8", body: html }],
    ["/index.html", { type: "text/html; charset=utf-8", body: html }],
    ["/app.js", { type: "text/javascript; charset=utf-8", body: Buffer.from(script) }],
    // The operator console (signed in on the page with the operator key).
    ["/console", { type: "text/html; charset=utf-8", body: consoleHtml }],
    ["/console.js", { type: "text/javascript; charset=utf-8", body: Buffer.from(consoleScript) }],
  ]);
  const headers = {
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  };

  return (req, res) => {
    const path = (req.url ?? "/").split("?")[0]!;
    const asset = assets.get(path);
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(asset ? 405 : 404, { ...headers, "content-type": "text/plain; charset=utf-8", ...(asset ? { allow: "GET, HEAD" } : {}) });
      res.end(asset ? "method not allowed\n" : "not found\n");
      return;
    }
    if (!asset) {
      res.writeHead(404, { ...headers, "content-type": "text/plain; charset=utf-8" });
      res.end("not found\n");
      return;
    }
    res.writeHead(200, { ...headers, "content-type": asset.type, "content-length": asset.body.length });
    res.end(req.method === "HEAD" ? undefined : asset.body);
  };
}
