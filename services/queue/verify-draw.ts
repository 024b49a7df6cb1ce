// Checks a sale's draw from what GetSaleFairness publishes, without any of
// boxoffice's code: the seed matches the commitment published before the
// pre-queue opened, and the order (and a fan's own place) follows from the
// seed and the frozen list of entry ids.
//
//   npm run verify-draw -- --url http://localhost:8080 --concert <concert id> [--entry <your entry id>]
//   npm run verify-draw -- --file fairness.json [--entry <your entry id>]
//
// The JSON is GetSaleFairnessResponse in Connect's JSON form, as
//   curl -H 'content-type: application/json' -d '{"concertId":"<id>"}' \
//     http://localhost:8080/boxoffice.queue.v1.QueueService/GetSaleFairness
// prints it. Output: one JSON object; exit 0 when the seed matches its
// commitment, 1 when it does not, 2 while the draw has not been made.
import { createHash, createHmac } from "node:crypto";
import { readFileSync } from "node:fs";

interface Published {
  state?: string;
  seedCommitment?: string;
  seed?: string;
  entryIds?: string[];
}

function option(name: string): string | undefined {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? process.argv[at + 1] : undefined;
}

async function published(): Promise<Published> {
  const file = option("file");
  if (file) return JSON.parse(file === "-" ? readFileSync(0, "utf8") : readFileSync(file, "utf8")) as Published;
  const url = option("url");
  const concertId = option("concert");
  if (!url || !concertId) throw new Error("give --url and --concert, or --file");
  const answer = await fetch(`${url.replace(/\/$/, "")}/boxoffice.queue.v1.QueueService/GetSaleFairness`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ concertId }),
  });
  if (!answer.ok) throw new Error(`GetSaleFairness answered ${answer.status}: ${await answer.text()}`);
  return (await answer.json()) as Published;
}

const fairness = await published();
if (fairness.state !== "DRAW_STATE_DRAWN" || !fairness.seed) {
  console.log(JSON.stringify({ drawn: false, seedCommitment: fairness.seedCommitment ?? "" }));
  process.exit(2);
}
const seed = Buffer.from(fairness.seed, "hex");
const commitmentMatches = seed.length === 32 && createHash("sha256").update(seed).digest("hex") === fairness.seedCommitment;
// Sorted by HMAC-SHA256(key = seed, message = entry id), ascending as bytes.
const order = (fairness.entryIds ?? [])
  .map((id) => ({ id, mac: createHmac("sha256", seed).update(id, "ascii").digest() }))
  .sort((a, b) => Buffer.compare(a.mac, b.mac) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  .map((entry) => entry.id);
const entry = option("entry");
const place = entry === undefined ? undefined : order.indexOf(entry) + 1;
console.log(
  JSON.stringify({
    drawn: true,
    commitmentMatches,
    entries: order.length,
    ...(entry === undefined ? { order } : { entry, place: place || null, of: order.length }),
  }),
);
process.exit(commitmentMatches ? 0 : 1);
