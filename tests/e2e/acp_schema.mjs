// acp_schema.mjs - check a value against a type of the ACP v1 schema that
// ships with the official TypeScript SDK (@agentclientprotocol/sdk), two ways:
//
//   strict  a small JSON Schema validator (no dependency) run on
//           schema/v1/schema.json: $ref, type, const, enum, required,
//           properties, additionalProperties, items, allOf, anyOf, oneOf
//           (exactly one), not, minimum, maximum, minLength and the integer
//           and uri formats the file uses.  The schema's x-deserialize-*
//           leniency annotations are ignored: a value must be valid as
//           written, not merely recoverable.
//   sdk     the SDK's own zod schemas (dist/v1/schema/zod.gen.js, what the
//           SDK parses incoming messages with).  These are lenient by design
//           (a bad optional value falls back to a default, a bad array item is
//           dropped), so besides "does it parse" we compare what the SDK
//           produced with what was sent: a value the SDK replaced or an item
//           it dropped is reported as well.
//
// Besides errors, `extras` lists members the schema does not declare on an
// object whose type declares its members (ACP reserves the root of its types;
// custom data belongs in _meta).  The caller decides what to do with them.
import fs from "node:fs";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";

const SDK_MAIN = import.meta.resolve("@agentclientprotocol/sdk"); // dist/v1/stable/acp.js
const ZOD_URL = new URL("../schema/zod.gen.js", SDK_MAIN);
const SCHEMA_PATH = fileURLToPath(import.meta.resolve("@agentclientprotocol/sdk/schema/v1/schema.json"));

function typeOk(t, v) {
    switch (t) {
        case "null": return v === null;
        case "boolean": return typeof v === "boolean";
        case "object": return v !== null && typeof v === "object" && !Array.isArray(v);
        case "array": return Array.isArray(v);
        case "string": return typeof v === "string";
        case "integer": return Number.isInteger(v);
        case "number": return typeof v === "number" && Number.isFinite(v);
        default: throw new Error("schema uses an unknown type " + t);
    }
}

const INT_FORMATS = {
    uint16: [0, 65535], uint32: [0, 4294967295], uint64: [0, Infinity],
    int32: [-2147483648, 2147483647], int64: [-Infinity, Infinity],
};

const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const show = (v) => { const s = JSON.stringify(v); return s && s.length > 80 ? s.slice(0, 77) + "..." : s; };

export class AcpSchema {
    constructor(root, zod) {
        this.root = root;
        this.defs = root.$defs;
        this.zod = zod;
    }

    static async load() {
        const root = JSON.parse(fs.readFileSync(SCHEMA_PATH, "utf8"));
        const zod = await import(ZOD_URL.href);
        return new AcpSchema(root, zod);
    }

    has(name) { return name in this.defs; }

    // {errors: [string], extras: [string]} for value as $defs[name].
    check(name, value) {
        const errors = [];
        const ev = new Map();
        if (!this.defs[name]) throw new Error("no type " + name + " in the ACP schema");
        this.#check(this.defs[name], value, "", errors, ev);
        const extras = [];
        if (!errors.length)
            for (const [obj, { path, keys }] of ev)
                for (const k of Object.keys(obj))
                    if (!keys.has(k)) extras.push(`${path}/${k}`);
        errors.push(...this.#checkZod(name, value));
        return { errors, extras };
    }

    // Errors for a whole JSON-RPC message against one branch of the schema
    // file's root ("Agent": what an agent sends, "Client": what a client
    // sends).  Strict only: the SDK has no zod schema for the envelope.
    checkMessage(side, message) {
        const branch = this.root.anyOf.find((b) => b.title === side);
        if (!branch) throw new Error("no root branch " + side + " in the ACP schema");
        const errors = [];
        this.#check(branch, message, "", errors, new Map());
        return errors;
    }

    #checkZod(name, value) {
        const z = this.zod["z" + name];
        if (!z) return [`sdk: no zod schema z${name}`];
        const r = z.safeParse(structuredClone(value));
        if (!r.success)
            return r.error.issues.map((i) => `sdk: /${i.path.join("/")}: ${i.message}`);
        const out = [];
        lenientDiff(r.data, value, "", out);
        return out.map((d) => "sdk recovered: " + d);
    }

    #resolve(ref) {
        const m = /^#\/\$defs\/(.+)$/.exec(ref);
        if (!m || !this.defs[m[1]]) throw new Error("unresolvable $ref " + ref);
        return this.defs[m[1]];
    }

    // Adds errors for v at path; ev maps each object instance validated
    // against a schema that declares members to {path, evaluated keys}.
    #check(s, v, path, errors, ev) {
        if (s === true || s === undefined) return;
        if (s === false) { errors.push(`${path || "/"}: not allowed`); return; }
        if (s.$ref) this.#check(this.#resolve(s.$ref), v, path, errors, ev);
        if (s.type !== undefined) {
            const types = Array.isArray(s.type) ? s.type : [s.type];
            if (!types.some((t) => typeOk(t, v))) {
                errors.push(`${path || "/"}: expected ${types.join("|")}, got ${show(v)}`);
                return;
            }
        }
        if ("const" in s && !isDeepStrictEqual(s.const, v))
            errors.push(`${path || "/"}: expected ${show(s.const)}, got ${show(v)}`);
        if (s.enum && !s.enum.some((e) => isDeepStrictEqual(e, v)))
            errors.push(`${path || "/"}: ${show(v)} is not one of ${show(s.enum)}`);
        if (typeof v === "number") {
            if (s.minimum !== undefined && v < s.minimum) errors.push(`${path}: ${v} < minimum ${s.minimum}`);
            if (s.maximum !== undefined && v > s.maximum) errors.push(`${path}: ${v} > maximum ${s.maximum}`);
            const r = INT_FORMATS[s.format];
            if (r && (!Number.isInteger(v) || v < r[0] || v > r[1]))
                errors.push(`${path}: ${v} is not a ${s.format}`);
        }
        if (typeof v === "string") {
            if (s.minLength !== undefined && [...v].length < s.minLength)
                errors.push(`${path}: shorter than ${s.minLength}`);
            if (s.format === "uri") {
                try { new URL(v); } catch { errors.push(`${path}: ${show(v)} is not a URI`); }
            }
        }
        if (isObj(v)) {
            if (s.properties || s.additionalProperties !== undefined) {
                if (!ev.has(v)) ev.set(v, { path, keys: new Set() });
            }
            const keys = ev.get(v)?.keys;
            for (const r of s.required || [])
                if (!(r in v)) errors.push(`${path}: missing required member "${r}"`);
            for (const [k, ps] of Object.entries(s.properties || {})) {
                if (!(k in v)) continue;
                keys?.add(k);
                this.#check(ps, v[k], `${path}/${k}`, errors, ev);
            }
            if (s.additionalProperties !== undefined) {
                for (const k of Object.keys(v)) {
                    if (s.properties && k in s.properties) continue;
                    if (s.additionalProperties === false) {
                        errors.push(`${path}/${k}: member not allowed`);
                        continue;
                    }
                    keys?.add(k);
                    if (s.additionalProperties !== true)
                        this.#check(s.additionalProperties, v[k], `${path}/${k}`, errors, ev);
                }
            }
        }
        if (Array.isArray(v) && s.items !== undefined)
            v.forEach((item, i) => this.#check(s.items, item, `${path}/${i}`, errors, ev));
        for (const sub of s.allOf || []) this.#check(sub, v, path, errors, ev);
        if (s.anyOf || s.oneOf) {
            const branches = s.anyOf || s.oneOf;
            const results = branches.map((sub) => {
                const e = [], m = new Map();
                this.#check(sub, v, path, e, m);
                return { e, m, sub };
            });
            const ok = results.filter((r) => !r.e.length);
            if (!ok.length) {
                const best = results.reduce((a, b) => (b.e.length < a.e.length ? b : a));
                const label = best.sub.title || best.sub.description?.split("\n")[0] || "";
                errors.push(`${path || "/"}: matches no ${s.anyOf ? "anyOf" : "oneOf"} branch; closest (${label.slice(0, 60)}): ${best.e.slice(0, 3).join("; ")}`);
            } else if (s.oneOf && ok.length > 1) {
                errors.push(`${path || "/"}: matches ${ok.length} oneOf branches, must match exactly one`);
            } else {
                for (const r of ok) mergeEv(ev, r.m);
            }
        }
        if (s.not) {
            const e = [];
            this.#check(s.not, v, path, e, new Map());
            if (!e.length) errors.push(`${path || "/"}: matches a schema it must not match`);
        }
    }
}

function mergeEv(into, from) {
    for (const [obj, { path, keys }] of from) {
        const cur = into.get(obj);
        if (!cur) into.set(obj, { path, keys: new Set(keys) });
        else for (const k of keys) cur.keys.add(k);
    }
}

// What the SDK's lenient parse changed: a value present in what was sent but
// different in what the SDK made of it, or array items it dropped.  Members the
// SDK stripped (unknown) or added (defaults) are not differences here.
function lenientDiff(out, sent, path, diffs) {
    if (Array.isArray(sent)) {
        if (!Array.isArray(out)) { diffs.push(`${path}: ${show(sent)} became ${show(out)}`); return; }
        if (out.length !== sent.length) {
            diffs.push(`${path}: ${sent.length} items sent, the SDK kept ${out.length}`);
            return;
        }
        sent.forEach((x, i) => lenientDiff(out[i], x, `${path}/${i}`, diffs));
        return;
    }
    if (isObj(sent)) {
        if (!isObj(out)) { diffs.push(`${path}: ${show(sent)} became ${show(out)}`); return; }
        for (const k of Object.keys(out))
            if (k in sent) lenientDiff(out[k], sent[k], `${path}/${k}`, diffs);
        return;
    }
    if (!Object.is(out, sent)) diffs.push(`${path}: ${show(sent)} became ${show(out)}`);
}
