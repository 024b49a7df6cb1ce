// Protobuf bytes for the fuzz test: well-formed messages of any input type built
// from its descriptor with fast-check values, and hand-shaped wire that no
// parser should accept (or that only a careful one survives).
import { create, toBinary, toJsonString, ScalarType, type DescField, type DescMessage, type Message } from "@bufbuild/protobuf";
import fc from "fast-check";

/** Values a generated message draws its strings and numbers from besides random ones: the ids of real rows. */
export interface Interesting {
  strings: string[];
}

const int32Edges = [0, 1, -1, 2, 4, 50, 2 ** 31 - 1, -(2 ** 31)];
const int64Edges = [0n, 1n, -1n, 100n, 10_000_000n, 10_000_001n, 1_000_000_000n, 2n ** 63n - 1n, -(2n ** 63n)];
const uint64Edges = [0n, 1n, 2n ** 64n - 1n];
const oddStrings = [
  "",
  " ",
  "not-a-uuid",
  "00000000-0000-0000-0000-000000000000",
  "' or 1=1 --",
  "\u0000",
  "a\u0000b",
  "%00",
  "\ud800",
  "😀".repeat(20),
  "x".repeat(300),
  "{}",
  "../../etc/passwd",
];

function int32Arb() {
  return fc.oneof(fc.constantFrom(...int32Edges), fc.integer());
}
function int64Arb() {
  return fc.oneof(fc.constantFrom(...int64Edges), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }));
}

function scalarArb(type: ScalarType, interesting: Interesting): fc.Arbitrary<unknown> {
  switch (type) {
    case ScalarType.STRING:
      return fc.oneof(
        { weight: 3, arbitrary: fc.constantFrom(...(interesting.strings.length ? interesting.strings : [""])) },
        { weight: 2, arbitrary: fc.constantFrom(...oddStrings) },
        { weight: 1, arbitrary: fc.uuid() },
        { weight: 2, arbitrary: fc.string({ maxLength: 40, unit: "binary" }) },
      );
    case ScalarType.BYTES:
      return fc.uint8Array({ maxLength: 40 });
    case ScalarType.BOOL:
      return fc.boolean();
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return int32Arb();
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return fc.oneof(fc.constantFrom(0, 1, 2 ** 32 - 1), fc.nat());
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return int64Arb();
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return fc.oneof(fc.constantFrom(...uint64Edges), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }));
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return fc.double();
  }
}

function singularArb(field: DescField, interesting: Interesting, depth: number): fc.Arbitrary<unknown> | undefined {
  switch (field.fieldKind) {
    case "scalar":
      return scalarArb(field.scalar, interesting);
    case "enum":
      return fc.oneof(fc.constantFrom(...field.enum.values.map((v) => v.number)), fc.integer({ min: -5, max: 1000 }));
    case "message":
      return depth > 0 ? messageArb(field.message, interesting, depth - 1) : undefined;
    case "list": {
      const element =
        field.listKind === "scalar"
          ? scalarArb(field.scalar, interesting)
          : field.listKind === "enum"
            ? fc.constantFrom(...field.enum.values.map((v) => v.number))
            : depth > 0
              ? messageArb(field.message, interesting, depth - 1)
              : undefined;
      return element && fc.array(element, { maxLength: 6 });
    }
    case "map":
      return fc.constant({});
  }
}

/** A message of this type with any field values (well-formed: it encodes). */
export function messageArb(desc: DescMessage, interesting: Interesting, depth = 2): fc.Arbitrary<Message> {
  const parts: Record<string, fc.Arbitrary<unknown>> = {};
  for (const field of desc.fields) {
    if (field.oneof) continue;
    const arb = singularArb(field, interesting, depth);
    if (arb) parts[field.localName] = arb;
  }
  const oneofs = desc.oneofs.map((oneof) =>
    fc.option(
      fc.oneof(
        ...oneof.fields.flatMap((field) => {
          const arb = singularArb(field, interesting, depth);
          return arb ? [arb.map((value) => ({ [oneof.localName]: { case: field.localName, value } }))] : [];
        }),
      ),
      { nil: {} },
    ),
  );
  return fc.tuple(fc.record(parts, { requiredKeys: [] }), ...oneofs).map(([fields, ...chosen]) => create(desc, Object.assign({}, fields, ...chosen) as never));
}

export const encode = (desc: DescMessage, message: Message): Uint8Array => toBinary(desc, message as never);

/** The message as Connect's JSON, or `{}` where JSON cannot say it (a Timestamp past year 9999, say). */
export function encodeJson(desc: DescMessage, message: Message): string {
  try {
    return toJsonString(desc, message as never);
  } catch {
    return "{}";
  }
}

// ---------------------------------------------------------------- the wire itself

export function varint(value: bigint | number): number[] {
  let v = BigInt.asUintN(64, BigInt(value));
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}

export const tag = (field: number, wireType: number) => varint((BigInt(field) << 3n) | BigInt(wireType));
export const lengthDelimited = (field: number, bytes: ArrayLike<number>) => [...tag(field, 2), ...varint(bytes.length), ...Array.from(bytes)];

/** The fields of the message (at any depth) that hold strings, as paths of field numbers. */
export function stringFieldPaths(desc: DescMessage, depth = 3): number[][] {
  const paths: number[][] = [];
  for (const field of desc.fields) {
    const isString = (field.fieldKind === "scalar" || (field.fieldKind === "list" && field.listKind === "scalar")) && field.scalar === ScalarType.STRING;
    if (isString) paths.push([field.number]);
    const nested = field.fieldKind === "message" ? field.message : field.fieldKind === "list" && field.listKind === "message" ? field.message : undefined;
    if (nested && depth > 0) for (const path of stringFieldPaths(nested, depth - 1)) paths.push([field.number, ...path]);
  }
  return paths;
}

/** Puts `leaf` at the end of a path of length-delimited fields. */
export function nest(path: number[], leaf: number[]): number[] {
  let bytes = leaf;
  for (const field of [...path].reverse()) bytes = lengthDelimited(field, bytes);
  return bytes;
}

/** Packed repeated varint fields (`repeated int32 seat_numbers`), by number. */
export function packedFieldNumbers(desc: DescMessage): number[] {
  return desc.fields.filter((f) => f.fieldKind === "list" && f.listKind === "scalar" && f.scalar !== ScalarType.STRING && f.scalar !== ScalarType.BYTES).map((f) => f.number);
}

/** A field number the message does not know. */
export const unknownField = (desc: DescMessage) => Math.max(0, ...desc.fields.map((f) => f.number)) + 100;

export const invalidUtf8 = [
  [0xff],
  [0xfe, 0xff],
  [0xc0, 0x80], // overlong NUL
  [0xed, 0xa0, 0x80], // a UTF-16 surrogate
  [0xf4, 0x90, 0x80, 0x80], // past U+10FFFF
  [0x61, 0x80],
  [0xe2, 0x82],
];

export interface Shaped {
  what: string;
  bytes: number[];
  /** No parser may accept it: it must be answered InvalidArgument. */
  undecodable: boolean;
}

/**
 * Protobuf wire a parser must refuse (or, marked decodable, that a careful one
 * reads): the shapes of the list, placed after a valid prefix or alone.
 */
export function shapedArb(desc: DescMessage, valid: fc.Arbitrary<number[]>): fc.Arbitrary<Shaped> {
  const strings = stringFieldPaths(desc);
  const packed = packedFieldNumbers(desc);
  const unknown = unknownField(desc);
  // protobuf-es reads a known field as its type says, whatever the wire type on the wire (a "fixed32" for a string
  // field is read as a length), so what a wire type promises is only checked for unknown fields: the shapes that
  // rest on it are undecodable only there. On known fields they are sent too, but anything may come of them.
  const field = fc.oneof(
    fc.oneof(fc.constant(unknown), fc.integer({ min: unknown + 1, max: 2 ** 29 - 1 })).map((number) => ({ number, known: false })),
    ...(desc.fields.length ? [fc.constantFrom(...desc.fields.map((f) => ({ number: f.number, known: true })))] : []),
  );
  const bad: fc.Arbitrary<Shaped>[] = [
    fc.constantFrom<Shaped>(
      { what: "a single byte 0x08 (tag of field 1, varint, then EOF)", bytes: [0x08], undecodable: true },
      { what: "illegal tag 0", bytes: [0x00], undecodable: true },
      { what: "illegal tag 0 with a value", bytes: [0x00, 0x01], undecodable: true },
      { what: "a varint cut short", bytes: [0x80], undecodable: true },
      // Past 10 bytes a varint is malformed, but a parser skipping an unknown field may not count: either answer is fair.
      { what: "an 11-byte varint", bytes: [...tag(1, 0), ...new Array(10).fill(0xff), 0x01], undecodable: false },
      { what: "a tag varint of 11 bytes", bytes: [...new Array(10).fill(0x80), 0x01], undecodable: true },
    ),
    // The wire type is read before the field is looked up: these are undecodable for any field.
    field.map((f) => ({ what: `field ${f.number}, wire type 4 (end group) with no group open`, bytes: tag(f.number, 4), undecodable: true })),
    fc.tuple(field, fc.constantFrom(6, 7)).map(([f, wt]) => ({ what: `field ${f.number}, illegal wire type ${wt}`, bytes: [...tag(f.number, wt), 0x01], undecodable: true })),
    fc.tuple(field, fc.constantFrom(1, 5)).map(([f, wt]) => ({
      what: `${f.known ? "known" : "unknown"} field ${f.number}, fixed${wt === 1 ? 64 : 32} cut short`,
      bytes: [...tag(f.number, wt), 0x01, 0x02],
      undecodable: !f.known,
    })),
    fc.tuple(field, fc.integer({ min: 1, max: 1000 })).map(([f, past]) => ({
      what: `${f.known ? "known" : "unknown"} field ${f.number}, length ${past + 2} with 2 bytes left`,
      bytes: [...tag(f.number, 2), ...varint(past + 2), 0x61, 0x62],
      undecodable: !f.known,
    })),
    fc.tuple(field, fc.constantFrom(2n ** 31n, 2n ** 32n, 2n ** 63n, 2n ** 64n - 1n)).map(([f, len]) => ({
      what: `${f.known ? "known" : "unknown"} field ${f.number}, length ${len}`,
      bytes: [...tag(f.number, 2), ...varint(len), 0x61],
      undecodable: !f.known,
    })),
    field.map((f) => ({ what: `${f.known ? "known" : "unknown"} field ${f.number}, group started and never ended`, bytes: [...tag(f.number, 3), 0x08, 0x01], undecodable: !f.known })),
    fc.tuple(fc.integer({ min: 0, max: 100 }), fc.integer({ min: 101, max: 200 })).map(([open, close]) => ({
      what: `group ${unknown + open} ended by group ${unknown + close}`,
      bytes: [...tag(unknown + open, 3), ...tag(unknown + close, 4)],
      undecodable: true,
    })),
    fc.integer({ min: 100, max: 200_000 }).map((depth) => ({
      what: `${depth} groups opened, none closed`,
      bytes: new Array(depth).fill(tag(unknown, 3)).flat(),
      undecodable: true,
    })),
    fc.integer({ min: 100, max: 100_000 }).map((depth) => ({
      what: `${depth} nested groups, all closed (deep recursion)`,
      bytes: [...new Array(depth).fill(tag(unknown, 3)).flat(), ...new Array(depth).fill(tag(unknown, 4)).flat()],
      undecodable: false,
    })),
    fc.integer({ min: 100, max: 500 }).map((depth) => {
      // unknown length-delimited fields, each holding the next
      let bytes: number[] = [];
      for (let i = 0; i < depth; i++) bytes = lengthDelimited(unknown, bytes);
      return { what: `${depth} nested length-delimited unknown fields`, bytes, undecodable: false };
    }),
    fc.tuple(field, fc.integer({ min: 0, max: 7 })).map(([f, wt]) => ({ what: `field ${f.number}, wire type ${wt}, then EOF`, bytes: tag(f.number, wt), undecodable: true })),
  ];
  if (strings.length > 0) {
    bad.push(
      fc.tuple(fc.constantFrom(...strings), fc.constantFrom(...invalidUtf8), fc.string({ maxLength: 8 })).map(([path, utf8, prefix]) => ({
        what: `invalid UTF-8 (${utf8.map((b) => b.toString(16)).join(" ")}) in string field ${path.join(".")}`,
        bytes: nest(path.slice(0, -1), lengthDelimited(path.at(-1)!, [...Buffer.from(prefix), ...utf8])),
        undecodable: true,
      })),
    );
  }
  if (packed.length > 0) {
    bad.push(
      fc.constantFrom(...packed).map((f) => ({ what: `packed field ${f} ending in a cut varint`, bytes: lengthDelimited(f, [0x01, 0x80]), undecodable: true })),
    );
  }
  // A known message field whose content is itself broken: the error comes from a nested read.
  const messageFields = desc.fields.filter((f) => f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message"));
  if (messageFields.length > 0) {
    bad.push(fc.constantFrom(...messageFields).map((f) => ({ what: `message field ${f.number} holding illegal tag 0`, bytes: lengthDelimited(f.number, [0x00, 0x00]), undecodable: true })));
  }
  return fc
    .tuple(fc.oneof(...bad), fc.option(valid, { nil: undefined }))
    .map(([shape, prefix]) => (prefix ? { ...shape, what: `a valid message, then ${shape.what}`, bytes: [...prefix, ...shape.bytes] } : shape));
}

/** A valid encoding, then broken: bytes flipped, cut, inserted, duplicated. Anything may come of it but an internal error. */
export function mutatedArb(valid: fc.Arbitrary<number[]>): fc.Arbitrary<{ what: string; bytes: number[] }> {
  const mutation = fc.oneof(
    fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })).map(([at, xor]) => ({ kind: "flip" as const, at, xor })),
    fc.nat().map((at) => ({ kind: "cut" as const, at })),
    fc.tuple(fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 8 })).map(([at, bytes]) => ({ kind: "insert" as const, at, bytes: [...bytes] })),
    fc.tuple(fc.nat(), fc.nat()).map(([at, length]) => ({ kind: "delete" as const, at, length })),
    fc.constant({ kind: "double" as const }),
  );
  return fc.tuple(valid, fc.array(mutation, { minLength: 1, maxLength: 4 })).map(([bytes, mutations]) => {
    let out = [...bytes];
    const done: string[] = [];
    for (const m of mutations) {
      const at = out.length === 0 ? 0 : m.kind === "insert" ? m.at % (out.length + 1) : m.kind === "double" ? 0 : m.at % out.length;
      switch (m.kind) {
        case "flip":
          if (out.length > 0) out[at] = out[at]! ^ m.xor;
          done.push(`xor byte ${at} with ${m.xor.toString(16)}`);
          break;
        case "cut":
          out = out.slice(0, at);
          done.push(`cut at ${at}`);
          break;
        case "insert":
          out.splice(at, 0, ...m.bytes);
          done.push(`insert ${m.bytes.length} bytes at ${at}`);
          break;
        case "delete":
          out.splice(at, 1 + (m.length % 4));
          done.push(`delete ${1 + (m.length % 4)} bytes at ${at}`);
          break;
        case "double":
          out = [...out, ...out];
          done.push("doubled");
          break;
      }
    }
    return { what: `a valid message, ${done.join(", ")}`, bytes: out };
  });
}
