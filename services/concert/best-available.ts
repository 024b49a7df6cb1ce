/**
 * The best-available rule, free of SQL: given the seats of one tier of a date,
 * which `count` seats to hold.
 *
 * - The seats are adjacent: one row, consecutive places.
 * - No orphans: the block never leaves exactly one free seat between itself and
 *   a taken seat or the row's end (a gap of 0 or of 2 and more is fine).
 * - Best: the row nearest the front of its section (row_position), ties to the
 *   earlier section; in that row, the block that leaves the fewest new gaps
 *   (one that fills a gap exactly, then one against a taken seat or the row's
 *   end), then the one whose middle is nearest the row's middle, ties to the
 *   lower place. Packing first: a pair in the middle of an empty row of 8 would
 *   leave two runs of 3, which no further pair can take.
 */
export interface TierSeat {
  number: number;
  section: string;
  rowLabel: string;
  rowPosition: number;
  place: number;
  free: boolean;
}

interface Row {
  sectionOrder: number;
  rowPosition: number;
  seats: TierSeat[];
}

function rowsOf(seats: TierSeat[]): Row[] {
  const sections = new Map<string, number>();
  const rows = new Map<string, Row>();
  for (const seat of [...seats].sort((a, b) => a.number - b.number)) {
    if (!sections.has(seat.section)) sections.set(seat.section, sections.size);
    const key = JSON.stringify([seat.section, seat.rowLabel]);
    let row = rows.get(key);
    if (!row) rows.set(key, (row = { sectionOrder: sections.get(seat.section)!, rowPosition: seat.rowPosition, seats: [] }));
    row.seats.push(seat);
  }
  return [...rows.values()].sort((a, b) => a.rowPosition - b.rowPosition || a.sectionOrder - b.sectionOrder);
}

/** The best block of a row, or undefined when none fits without an orphan. */
function bestInRow(row: Row, count: number): TierSeat[] | undefined {
  const seats = [...row.seats].sort((a, b) => a.place - b.place);
  const middle = (seats.length - 1) / 2;
  let best: { start: number; attached: number; distance: number } | undefined;
  // Runs of free seats at consecutive places: [from, to] as indexes into `seats`.
  for (let from = 0; from < seats.length; ) {
    if (!seats[from]!.free) {
      from++;
      continue;
    }
    let to = from;
    while (to + 1 < seats.length && seats[to + 1]!.free && seats[to + 1]!.place === seats[to]!.place + 1) to++;
    for (let start = from; start + count - 1 <= to; start++) {
      const left = start - from;
      const right = to - (start + count - 1);
      if (left === 1 || right === 1) continue;
      // Sides against a taken seat or the row's end: 2 fills a gap, 1 extends a block, 0 splits a run in three.
      const attached = (left === 0 ? 1 : 0) + (right === 0 ? 1 : 0);
      const distance = Math.abs(start + (count - 1) / 2 - middle);
      if (!best || attached > best.attached || (attached === best.attached && distance < best.distance)) best = { start, attached, distance };
    }
    from = to + 1;
  }
  return best && seats.slice(best.start, best.start + count);
}

/** The seat numbers to hold, in order, or undefined when no block of `count` fits without an orphan. */
export function bestAvailable(seats: TierSeat[], count: number): number[] | undefined {
  for (const row of rowsOf(seats)) {
    const block = bestInRow(row, count);
    if (block) return block.map((seat) => seat.number);
  }
  return undefined;
}
