#!/usr/bin/env node
// Independent FHIR R4 (4.0.1) validator for fhir-scribe's Python tests.
//
// Protocol: newline-delimited JSON. Each stdin line is one FHIR resource (any type, Bundles included); for each
// line, exactly one line is written to stdout, in order:
//   {"valid": bool, "messages": [{"severity": "error"|"warning"|"information", "location": "...",
//                                 "message": "...", "resourceId": "...", "source": "..."}]}
// "valid" is true iff no message has severity "error". A line that is not JSON (or is blank) is answered with
// {"valid": false, "messages": [{"severity": "error", "location": "", "message": "not JSON: ..."}]}.
// The process never exits on bad input; it ends when stdin closes.
//
// Checks come from FHIR.js (npm "fhir", pinned in package.json) against its bundled R4 4.0.1 structure definitions
// and value sets (source "fhir.js"), plus a few JSON/primitive rules FHIR.js does not enforce (source "extra"; see
// README.md). Pass --fhirjs-only to get FHIR.js's own findings alone.
'use strict';

const readline = require('readline');
const { Fhir, ParseConformance, Versions } = require('fhir');
const { Constants: FHIRJS_REGEX } = require('fhir/constants');

const FHIRJS_ONLY = process.argv.includes('--fhirjs-only');

// Pick R4 explicitly. `true` loads FHIR.js's pre-parsed definitions (profiles/types.json, profiles/valuesets.json).
const parser = new ParseConformance(true, Versions.R4);
const fhir = new Fhir(parser);

// Refuse to run on anything but 4.0.1 definitions: FHIR.js versions its required bindings ("...|4.0.1").
(function assertR401() {
  const docRef = parser.parsedStructureDefinitions.DocumentReference;
  const status = docRef && docRef._properties.find((p) => p._name === 'status');
  if (!status || !String(status._valueSet).endsWith('|4.0.1')) {
    process.stderr.write('validate.js: FHIR.js did not load FHIR R4 4.0.1 definitions\n');
    process.exit(2);
  }
})();

const SEVERITY = { fatal: 'error', error: 'error', warning: 'warning', info: 'information' };

// Anchored regexes from the R4 spec (FHIR.js's own are unanchored, and it has none for instant or base64Binary).
const YEAR = '([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)';
const TZ = '(Z|(\\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))';
const TIME = '([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\\.[0-9]+)?';
const ANCHORED = {
  date: new RegExp(`^${YEAR}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?$`),
  dateTime: new RegExp(`^${YEAR}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T${TIME}${TZ})?)?)?$`),
  instant: new RegExp(`^${YEAR}-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T${TIME}${TZ}$`),
  time: new RegExp(`^${TIME}$`),
  // The spec's (\s*([0-9a-zA-Z\+\=]){4}\s*)+ overflows V8's regex stack on multi-MB values; checked in base64Ok().
  id: /^[A-Za-z0-9\-.]{1,64}$/,
  code: /^[^\s]+(\s[^\s]+)*$/,
};
// The (unanchored) regexes FHIR.js applies itself.
const FHIRJS_CHECKED = { date: FHIRJS_REGEX.PrimitiveDateRegex, dateTime: FHIRJS_REGEX.PrimitiveDateTimeRegex,
  time: FHIRJS_REGEX.PrimitiveTimeRegex, code: FHIRJS_REGEX.PrimitiveCodeRegex, id: FHIRJS_REGEX.PrimitiveIdRegex };
// base64Binary, without backtracking: base64 alphabet and padding, whitespace ignored, a multiple of 4 characters.
function base64Ok(v) {
  const compact = v.replace(/\s+/g, '');
  return compact.length > 0 && compact.length % 4 === 0 && /^[A-Za-z0-9+/]*={0,2}$/.test(compact);
}
const STRING_TYPES = new Set(['string', 'uri', 'url', 'canonical', 'code', 'id', 'oid', 'uuid', 'markdown',
  'base64Binary', 'date', 'dateTime', 'instant', 'time']);
const INTEGER_TYPES = new Set(['integer', 'unsignedInt', 'positiveInt']);

// A value for a message, cut short (attachments can be megabytes).
function show(v) {
  const s = JSON.stringify(v);
  return s.length > 80 ? `${s.slice(0, 60)}...(${s.length} chars)` : s;
}

function extra(location, message) {
  return { location, severity: 'error', message, source: 'extra' };
}

// FHIR JSON rules (R4 json.html): no null property values, no empty objects, arrays or strings.
// Also records, for every object in the tree, the resourceId FHIR.js uses for the resource enclosing it
// (its id, else its path, e.g. "Bundle.entry[0].resource"), so our messages name nested resources the same way.
function walk(value, path, owner, out, owners) {
  if (Array.isArray(value)) {
    if (value.length === 0) out.push(extra(path, 'Empty array (omit the property instead)'));
    value.forEach((v, i) => { if (v !== null) walk(v, `${path}[${i}]`, owner, out, owners); });
  } else if (value !== null && typeof value === 'object') {
    if (typeof value.resourceType === 'string') owner = value.id || (owner === undefined ? '#initial' : path);
    owners.set(value, owner);
    const keys = Object.keys(value);
    if (keys.length === 0) out.push(extra(path, 'Empty object (omit the property instead)'));
    for (const k of keys) {
      const p = path ? `${path}.${k}` : k;
      if (value[k] === null) out.push(extra(p, 'null value (omit the property instead)'));
      else walk(value[k], p, owner, out, owners);
    }
  } else if (value === '') {
    out.push(extra(path, 'Empty string (omit the property instead)'));
  }
}

let owners = new WeakMap(); // object -> resourceId of its enclosing resource, for the line being validated

function withOwner(obj, messages) {
  const resourceId = owners.get(obj);
  return resourceId === undefined ? messages : messages.map((m) => ({ ...m, resourceId }));
}

// Called by FHIR.js for every present, truthy property it knows; adds what FHIR.js does not check itself.
function primitiveMessages(obj, property, location, value) {
  const out = [];
  if (!property._multiple && Array.isArray(value)) {
    out.push(extra(location, `Property must not be an array (max cardinality 1, type ${property._type})`));
    return withOwner(obj, out);
  }
  const type = property._type;
  const values = Array.isArray(value) ? value : [value];
  values.forEach((v, i) => {
    if (v === null || v === undefined) return;
    const loc = Array.isArray(value) ? `${location}[${i}]` : location;
    if (STRING_TYPES.has(type)) {
      if (typeof v !== 'string') {
        out.push(extra(loc, `Expected a JSON string for ${type}, got ${typeof v} ${show(v)}`));
        return;
      }
      const re = type === 'base64Binary' ? { test: base64Ok } : ANCHORED[type];
      // Report only what FHIR.js misses: where its unanchored regex fails it already reported the value.
      const fhirjsRe = FHIRJS_CHECKED[type];
      const fhirjsCaught = fhirjsRe !== undefined && !fhirjsRe.test(v);
      if (re && !re.test(v) && !fhirjsCaught) out.push(extra(loc, `Invalid ${type} format for value ${show(v)}`));
    } else if (INTEGER_TYPES.has(type) || type === 'decimal') {
      if (typeof v === 'number') {
        const ok = type === 'decimal' ? Number.isFinite(v)
          : Number.isInteger(v) && (type === 'integer' || v >= (type === 'positiveInt' ? 1 : 0));
        if (!ok) out.push(extra(loc, `Invalid ${type} value ${show(v)}`));
      } else if (typeof v !== 'string') { // strings are already reported by FHIR.js
        out.push(extra(loc, `Expected a JSON number for ${type}, got ${typeof v}`));
      }
    }
  });
  return withOwner(obj, out);
}

// A bug in our own checks must not pass for a FHIR.js failure, nor abort FHIR.js's validation.
function primitiveMessagesSafe(obj, property, location, value) {
  try {
    return primitiveMessages(obj, property, location, value);
  } catch (e) {
    return [extra(location, `extra check failed: ${e && e.message ? e.message : e}`)];
  }
}

const OPTIONS = {
  errorOnUnexpected: true, // unknown elements are errors, not warnings
  ...(FHIRJS_ONLY ? {} : { onBeforeValidateProperty: primitiveMessagesSafe }),
};

function normalise(m) {
  const out = {
    severity: SEVERITY[m.severity] || 'error',
    location: m.location || '',
    message: String(m.message),
    source: m.source || 'fhir.js',
  };
  if (m.resourceId !== undefined) out.resourceId = m.resourceId;
  return out;
}

function answer(messages) {
  return { valid: !messages.some((m) => m.severity === 'error'), messages };
}

function validateLine(line) {
  let resource;
  try {
    if (line.trim() === '') throw new Error('empty line');
    resource = JSON.parse(line);
  } catch (e) {
    return answer([{ severity: 'error', location: '', message: `not JSON: ${e.message}`, source: 'extra' }]);
  }
  if (resource === null || typeof resource !== 'object' || Array.isArray(resource)) {
    return answer([{ severity: 'error', location: '', message: 'not a FHIR resource: expected a JSON object', source: 'extra' }]);
  }
  const messages = [];
  const shape = [];
  const topId = resource.id || '#initial'; // what FHIR.js calls the top-level resource
  owners = new WeakMap();
  walk(resource, resource.resourceType || '', undefined, shape, owners);
  if (!FHIRJS_ONLY) messages.push(...shape);
  try {
    const result = fhir.validate(resource, OPTIONS);
    messages.push(...result.messages);
    if (!result.valid && !result.messages.some((m) => SEVERITY[m.severity] === 'error')) {
      messages.push({ severity: 'error', message: 'FHIR.js reported invalid without an error message' });
    }
  } catch (e) {
    // FHIR.js throws on some malformed input (e.g. null where a boolean or Coding is expected).
    messages.push({ severity: 'error', message: `FHIR.js threw: ${e && e.message ? e.message : e}` });
  }
  // FHIR.js restarts locations at each nested resource ("DocumentReference.status" inside a Bundle); prefix them
  // with the nested resource's id or path so a message says where it is.
  return answer(messages.map(normalise).map((m) => (m.resourceId !== undefined && m.resourceId !== topId
    ? { ...m, location: m.location ? `${m.resourceId} > ${m.location}` : m.resourceId } : m)));
}

process.stdout.on('error', () => process.exit(0)); // reader went away
const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false });
rl.on('line', (line) => {
  let out;
  try {
    out = validateLine(line);
  } catch (e) {
    out = answer([{ severity: 'error', location: '', message: `validator error: ${e && e.message ? e.message : e}` }]);
  }
  process.stdout.write(JSON.stringify(out) + '\n');
});
