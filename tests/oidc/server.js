// Test-only SMART App Launch / OpenID Connect authorization server for the fhir-scribe test suite.
// It plays the EHR's authorization server. Never deploy it: any login succeeds, and the
// /test/* endpoints let a test choose the launch context.
//
//   node tests/oidc/server.js --port N [--fhir-audience URL]
//        [--access-token-shape jwt|opaque|hs256-nested] [--id-token-kid keep|omit]
//        [--app-jwks-file PATH] [--refresh-token-ttl SECONDS] [--signing-keys-file PATH]
//        [--web-redirect-uri URL]
//
// Prints `ready http://127.0.0.1:N` on stdout once listening (--port 0 picks a free port).
// The defaults (jwt, keep, no scribe-pkjwt client, 86400) are the shapes the suite has always had;
// the other values play EHRs whose tokens look different (see README.md).

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.OIDC_PORT ?? '0' },
    'fhir-audience': {
      type: 'string',
      default: process.env.OIDC_FHIR_AUDIENCE ?? 'http://127.0.0.1:8081/fhir',
    },
    // jwt: RS384 JWT, launch context as top-level claims (default). opaque: every access token is opaque
    // (introspect it). hs256-nested: smart-launcher-v2's shape (HS256 JWT, no iss/aud/kid, `context` claim).
    'access-token-shape': { type: 'string', default: process.env.OIDC_ACCESS_TOKEN_SHAPE ?? 'jwt' },
    // keep: id_tokens carry the signing key's kid (default). omit: re-signed without a kid header.
    'id-token-kid': { type: 'string', default: process.env.OIDC_ID_TOKEN_KID ?? 'keep' },
    // A JWKS (JSON) with the public key(s) of the private_key_jwt client scribe-pkjwt (no such client without it).
    'app-jwks-file': { type: 'string', default: process.env.OIDC_APP_JWKS_FILE },
    'refresh-token-ttl': { type: 'string', default: process.env.OIDC_REFRESH_TOKEN_TTL ?? '86400' },
    // A JSON array of two private RSA JWKs (RS384 first, then RS256; each with kid and alg) to sign with.
    // Without it two keys are generated at start-up, which can take seconds on a busy machine.
    'signing-keys-file': { type: 'string', default: process.env.OIDC_SIGNING_KEYS_FILE },
    // The redirect URI (e.g. https behind a TLS proxy) of one more public PKCE client, scribe-web, registered as a
    // web app: oidc-provider matches a native client's loopback URI on any port but only as http, and a web
    // client's exactly.
    'web-redirect-uri': { type: 'string', default: process.env.OIDC_WEB_REDIRECT_URI },
  },
});

function usage(message) {
  process.stderr.write(`server.js: ${message}\n`);
  process.exit(2);
}

const FHIR_AUDIENCE = args['fhir-audience'];
const ACCESS_TOKEN_SHAPES = ['jwt', 'opaque', 'hs256-nested'];
const ACCESS_TOKEN_SHAPE = args['access-token-shape'];
if (!ACCESS_TOKEN_SHAPES.includes(ACCESS_TOKEN_SHAPE)) {
  usage(`--access-token-shape must be one of ${ACCESS_TOKEN_SHAPES.join(', ')}, not ${ACCESS_TOKEN_SHAPE}`);
}
const ID_TOKEN_KID = args['id-token-kid'];
if (!['keep', 'omit'].includes(ID_TOKEN_KID)) usage(`--id-token-kid must be keep or omit, not ${ID_TOKEN_KID}`);
const REFRESH_TOKEN_TTL = Number(args['refresh-token-ttl']);
if (!Number.isInteger(REFRESH_TOKEN_TTL) || REFRESH_TOKEN_TTL < 1) {
  usage(`--refresh-token-ttl must be a positive whole number of seconds, not ${args['refresh-token-ttl']}`);
}
const APP_JWKS = args['app-jwks-file'] ? readAppJwks(args['app-jwks-file']) : null;

// A command-line option's JSON file, or a usage error naming the option.
function readJsonFile(option, file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    return usage(`${option} ${file}: ${error.message}`);
  }
}

// The public keys of scribe-pkjwt from --app-jwks-file (private members, if the file has any, are dropped).
function readAppJwks(file) {
  const jwks = readJsonFile('--app-jwks-file', file);
  if (!Array.isArray(jwks?.keys) || !jwks.keys.length) usage(`--app-jwks-file ${file}: expected {"keys": [...]}`);
  const keys = jwks.keys.map(({
    d, p, q, dp, dq, qi, oth, k, ...pub
  }) => pub);
  if (keys.some((key) => !['RSA', 'EC'].includes(key.kty))) usage(`--app-jwks-file ${file}: RSA or EC keys only`);
  return { keys };
}
// A resource indicator (or SMART `aud`) starting with this gets an opaque access token, for RFC 7662
// introspection. `urn:opaque-test` alone audiences the token to FHIR_AUDIENCE;
// `urn:opaque-test?aud=<url-encoded URL>` audiences it to that URL.
const OPAQUE_RESOURCE = 'urn:opaque-test';

// Scopes oidc-provider knows as "OpenID Connect" scopes (the consent/grant bookkeeping for them).
const STATIC_SCOPES = [
  'openid', 'fhirUser', 'profile', 'offline_access', 'online_access',
  'launch', 'launch/patient', 'launch/encounter',
];
// SMART v1 (`patient/Observation.read`, `user/*.*`) and v2 (`patient/Patient.rs`,
// `user/DocumentReference.cruds?category=...`) resource scopes.
const SMART_RESOURCE_SCOPE = /^(patient|user|system)\/(\*|[A-Z][A-Za-z]+)\.(\*|read|write|c?r?u?d?s?)(\?\S*)?$/u;

function knownScope(scope) {
  return STATIC_SCOPES.includes(scope) || (SMART_RESOURCE_SCOPE.test(scope) && !scope.endsWith('.'));
}

// ---- launch contexts -------------------------------------------------------------------------

const launches = new Map(); // launch id -> context posted to /test/launch
let standaloneContext = null; // the last posted context: used by standalone launches (no `launch` param)
const codeContexts = new Map(); // authorization code jti -> resolved context
const grantContexts = new Map(); // grant id -> resolved context (for refresh_token grants)

function splitScope(scope) {
  return new Set((scope ?? '').split(' ').filter(Boolean));
}

// What an authorization request's tokens carry, from its `launch` param and requested scopes.
function resolveContext(params) {
  const scopes = splitScope(params.scope);
  let base = null;
  let ehr = false;
  if (params.launch) {
    base = launches.get(params.launch) ?? null;
    ehr = scopes.has('launch');
  } else if (scopes.has('launch/patient') || scopes.has('launch/encounter')) {
    base = standaloneContext;
  }
  if (!base) return null;

  const {
    patient, encounter, fhirUser, ...rest
  } = base;
  const context = { ...rest, fhirUser };
  if (patient !== undefined && (ehr || scopes.has('launch/patient'))) context.patient = patient;
  if (encounter !== undefined && (ehr || scopes.has('launch/encounter'))) context.encounter = encounter;
  return context;
}

// The context of the token request being served (authorization_code or refresh_token grant).
function tokenContext(ctx) {
  const code = ctx.oidc?.entities?.AuthorizationCode;
  if (code) {
    const context = codeContexts.get(code.jti) ?? null;
    if (context && code.grantId) grantContexts.set(code.grantId, context);
    return context;
  }
  const refreshToken = ctx.oidc?.entities?.RefreshToken;
  if (refreshToken?.grantId) return grantContexts.get(refreshToken.grantId) ?? null;
  return null;
}

function fhirUserOf(accountId, context) {
  return context?.fhirUser ?? accountId;
}

// ---- resource servers (access token format, audience, scopes) ----------------------------------

function requestedScopes(ctx) {
  const scopes = new Set();
  for (const source of [
    ctx.oidc.params?.scope,
    ctx.oidc.entities?.AuthorizationCode?.scope,
    ctx.oidc.entities?.RefreshToken?.scope,
  ]) {
    for (const scope of splitScope(source)) scopes.add(scope);
  }
  return scopes;
}

async function getResourceServerInfo(ctx, indicator) {
  const scopes = requestedScopes(ctx);
  const unknown = [...scopes].filter((scope) => !knownScope(scope));
  if (unknown.length) {
    throw new errors.InvalidScope(`unsupported scope: ${unknown.join(' ')}`, unknown.join(' '));
  }
  // Every requested scope (SMART and OpenID alike) is a scope of the FHIR resource server, so the
  // access token's `scope` and the token response's `scope` list all of them.
  const scope = [...scopes].join(' ');

  if (indicator === OPAQUE_RESOURCE || indicator.startsWith(`${OPAQUE_RESOURCE}?`)) {
    const query = new URL(indicator).searchParams;
    return {
      scope, audience: query.get('aud') ?? FHIR_AUDIENCE, accessTokenFormat: 'opaque', accessTokenTTL: 3600,
    };
  }
  const url = URL.parse(indicator);
  if (!url || !['http:', 'https:'].includes(url.protocol)) {
    throw new errors.InvalidTarget('resource/aud must be an http(s) FHIR base URL or urn:opaque-test');
  }
  // Test-only: `?ttl=<seconds>` on the audience asks for a short-lived token (and is not part of the audience).
  const ttl = Number(url.searchParams.get('ttl') ?? 3600);
  const audience = indicator.replace(/[?&]ttl=\d+$/, '');
  if (ACCESS_TOKEN_SHAPE !== 'jwt') {
    // opaque: what the EHR hands out is this opaque token. hs256-nested: the token response's access_token is
    // replaced by an HS256 JWT (hs256Token below); the opaque token behind it lets /token/introspection answer.
    return {
      scope, audience, accessTokenFormat: 'opaque', accessTokenTTL: ttl,
    };
  }
  return {
    scope,
    audience,
    accessTokenFormat: 'jwt',
    accessTokenTTL: ttl,
    jwt: { sign: { alg: 'RS384' } },
  };
}

// ---- token shapes other EHRs issue --------------------------------------------------------------

const base64url = (value) => Buffer.from(value).toString('base64url');

function signJwt(header, payload, sign) {
  const input = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(payload))}`;
  return `${input}.${sign(Buffer.from(input)).toString('base64url')}`;
}

// hs256-nested: the SMART reference launcher's (smart-launcher-v2) access token. Random secret per start, nobody
// but this server can verify it: a resource server must introspect it (or trust the launch's token response).
const HS256_SECRET = crypto.randomBytes(32);
const hs256Tokens = new Map(); // HS256 access token -> the opaque oidc-provider access token behind it

function hs256Token(ctx) {
  const context = tokenContext(ctx) ?? {};
  const at = ctx.oidc.entities.AccessToken;
  const accountId = at?.accountId
    ?? ctx.oidc.entities.AuthorizationCode?.accountId ?? ctx.oidc.entities.RefreshToken?.accountId;
  const iat = Math.floor(Date.now() / 1000);
  const nested = {};
  for (const key of ['patient', 'encounter', 'need_patient_banner', 'smart_style_url']) {
    if (context[key] !== undefined) nested[key] = context[key];
  }
  const payload = {
    context: nested,
    client_id: ctx.oidc.client.clientId,
    scope: ctx.body.scope ?? at?.scope ?? '',
    user: fhirUserOf(accountId, context),
    iat,
    exp: iat + Number(ctx.body.expires_in ?? 3600),
  };
  const hmac = (input) => crypto.createHmac('sha256', HS256_SECRET).update(input).digest();
  return signJwt({ alg: 'HS256', typ: 'JWT' }, payload, hmac);
}

// --id-token-kid omit: the id_token re-signed by the same private key, with the same claims, and no `kid` header.
function withoutKid(idToken, keys) {
  const [headerPart, payloadPart] = idToken.split('.');
  const { kid, ...header } = JSON.parse(Buffer.from(headerPart, 'base64url').toString('utf8'));
  const jwk = keys.find((key) => key.kid === kid);
  if (!jwk || !/^RS(256|384|512)$/u.test(header.alg)) {
    throw new Error(`cannot re-sign an id_token (${header.alg}, ${kid})`);
  }
  const privateKey = crypto.createPrivateKey({ key: jwk, format: 'jwk' });
  const payload = JSON.parse(Buffer.from(payloadPart, 'base64url').toString('utf8'));
  return signJwt(header, payload, (input) => crypto.sign(`sha${header.alg.slice(2)}`, input, privateKey));
}

// ---- keys --------------------------------------------------------------------------------------

function rsaJwk(alg) {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  const kid = `${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}`;
  return { ...jwk, kid, alg, use: 'sig' };
}

function readSigningKeys(file) {
  const keys = readJsonFile('--signing-keys-file', file);
  const algs = Array.isArray(keys) ? keys.map((key) => key && key.kty === 'RSA' && key.d && key.kid && key.alg) : [];
  if (algs.join() !== 'RS384,RS256') {
    usage(`--signing-keys-file ${file}: expected [private RSA JWK with kid, alg RS384; the same with RS256]`);
  }
  return keys.map((key) => ({ ...key, use: 'sig' }));
}

// ---- provider --------------------------------------------------------------------------------

// What every static client shares (scribe-app's registration, less its auth method).
const LOOPBACK_CLIENT = {
  // native + loopback http redirect URI: any port of 127.0.0.1 is accepted (RFC 8252 7.3).
  application_type: 'native',
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1:8080/smart/callback'],
};

function appJwtClient() {
  if (!APP_JWKS) return [];
  // RS384 (SMART's asymmetric algorithms are RS384 and ES384): ES384 when the app's keys are all P-384 EC keys.
  const alg = APP_JWKS.keys.every((key) => key.kty === 'EC') ? 'ES384' : 'RS384';
  return [{
    ...LOOPBACK_CLIENT,
    client_id: 'scribe-pkjwt',
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: alg,
    jwks: APP_JWKS,
  }];
}

function webClient() {
  const uri = args['web-redirect-uri'];
  if (!uri) return [];
  if (!/^https?:\/\//u.test(uri)) usage(`--web-redirect-uri must be an http(s) URL, not ${uri}`);
  return [{ ...LOOPBACK_CLIENT, application_type: 'web', client_id: 'scribe-web', token_endpoint_auth_method: 'none',
    redirect_uris: [uri] }];
}

function configuration(keys) {
  return {
    jwks: { keys },
    enabledJWA: {
      idTokenSigningAlgValues: ['RS256', 'RS384'],
      introspectionSigningAlgValues: ['RS256', 'RS384'],
      clientAuthSigningAlgValues: ['HS256', 'RS256', 'PS256', 'ES256', 'Ed25519', 'EdDSA', 'RS384', 'ES384'],
    },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    clients: [
      {
        client_id: 'scribe-app',
        // native + loopback http redirect URI: any port of 127.0.0.1 is accepted (RFC 8252 7.3).
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1:8080/smart/callback'],
      },
      {
        client_id: 'scribe-confidential',
        client_secret: 'scribe-confidential-secret',
        application_type: 'native',
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1:8080/smart/callback'],
      },
      {
        ...LOOPBACK_CLIENT,
        client_id: 'scribe-basic',
        client_secret: 'scribe-basic-secret',
        token_endpoint_auth_method: 'client_secret_basic',
      },
      {
        ...LOOPBACK_CLIENT,
        client_id: 'scribe-post',
        client_secret: 'scribe-post-secret',
        token_endpoint_auth_method: 'client_secret_post',
      },
      ...appJwtClient(),
      ...webClient(),
    ],
    scopes: STATIC_SCOPES,
    responseTypes: ['code'],
    clientAuthMethods: ['none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt'],
    claims: {
      openid: ['sub'],
      fhirUser: ['fhirUser'],
      profile: ['name'],
    },
    extraParams: {
      // SMART EHR launch handle from POST /test/launch.
      async launch(ctx, value) {
        if (value !== undefined && !launches.has(value)) {
          throw new errors.InvalidRequest('unknown launch parameter');
        }
      },
      // SMART `aud`: the FHIR base the token is for; mapped to the RFC 8707 resource indicator.
      aud: null,
    },
    pkce: { required: () => true },
    findAccount(ctx, accountId) {
      return {
        accountId,
        async claims() {
          const context = tokenContext(ctx);
          return { sub: accountId, fhirUser: fhirUserOf(accountId, context), name: accountId };
        },
      };
    },
    async extraTokenClaims(ctx, token) {
      if (token.kind !== 'AccessToken') return undefined;
      const context = tokenContext(ctx);
      const claims = { fhirUser: fhirUserOf(token.accountId, context) };
      if (context?.patient !== undefined) claims.patient = context.patient;
      if (context?.encounter !== undefined) claims.encounter = context.encounter;
      // Test-only: a launch posted with nbf_offset (seconds) yields a token not valid until then.
      if (typeof context?.nbf_offset === 'number') claims.nbf = Math.floor(Date.now() / 1000) + context.nbf_offset;
      return claims;
    },
    // SMART's online_access asks for a refresh token as well as offline_access does (App Launch 2, scopes).
    async issueRefreshToken(ctx, client, code) {
      return client.grantTypeAllowed('refresh_token')
        && (code.scopes.has('offline_access') || code.scopes.has('online_access'));
    },
    features: {
      devInteractions: { enabled: true },
      userinfo: { enabled: false },
      revocation: { enabled: true },
      introspection: {
        enabled: true,
        // scribe-confidential may introspect any token; a confidential client its own tokens.
        async allowedPolicy(ctx, client, token) {
          if (client.clientId === 'scribe-confidential') return true;
          return client.clientAuthMethod !== 'none' && token.clientId === client.clientId;
        },
      },
      resourceIndicators: {
        enabled: true,
        async defaultResource(ctx, client, oneOf) {
          if (oneOf) return oneOf;
          return ctx.oidc.params.aud ?? FHIR_AUDIENCE;
        },
        useGrantedResource: async () => true,
        getResourceServerInfo,
      },
    },
    ttl: {
      // Per resource server (getResourceServerInfo's accessTokenTTL, e.g. a test's `?ttl=`), else one hour.
      // Test-only: a launch posted with access_token_ttl (seconds) gets short-lived tokens, refreshes included.
      AccessToken: (ctx, token) => tokenContext(ctx)?.access_token_ttl || token.resourceServer?.accessTokenTTL || 3600,
      AuthorizationCode: 120,
      IdToken: 3600,
      RefreshToken: REFRESH_TOKEN_TTL, // --refresh-token-ttl (default a day)
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
    },
  };
}

function smartConfiguration(issuer) {
  return {
    issuer,
    jwks_uri: `${issuer}/jwks`,
    authorization_endpoint: `${issuer}/auth`,
    token_endpoint: `${issuer}/token`,
    introspection_endpoint: `${issuer}/token/introspection`,
    revocation_endpoint: `${issuer}/token/revocation`,
    grant_types_supported: ['authorization_code', 'refresh_token'],
    token_endpoint_auth_methods_supported: ['none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt'],
    token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
    code_challenge_methods_supported: ['S256'],
    response_types_supported: ['code'],
    scopes_supported: [
      ...STATIC_SCOPES,
      'patient/*.read', 'patient/*.rs', 'user/*.read', 'user/*.cruds', 'system/*.read',
    ],
    capabilities: [
      'launch-ehr', 'launch-standalone', 'client-public', 'client-confidential-symmetric',
      'client-confidential-asymmetric',
      'context-ehr-patient', 'context-ehr-encounter',
      'context-standalone-patient', 'context-standalone-encounter',
      'context-banner', 'context-style',
      'permission-offline', 'permission-online', 'permission-patient', 'permission-user',
      'permission-v1', 'permission-v2', 'sso-openid-connect',
    ],
  };
}

async function readJson(ctx) {
  const chunks = [];
  for await (const chunk of ctx.req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

// The clients held to their registered secret method. oidc-provider takes a client_secret_basic client's secret in
// the form and a client_secret_post client's in a Basic header alike; an app configured for one method must be seen
// to use it, so these two are strict (scribe-confidential keeps oidc-provider's leniency). oidc-provider reads the
// secret from the form's client_secret when there is one, else from the Basic header.
const STRICT_SECRET_METHOD = { 'scribe-basic': 'client_secret_basic', 'scribe-post': 'client_secret_post' };

function holdSecretMethods(provider) {
  const { prototype } = provider.Client;
  const compareClientSecret = prototype.compareClientSecret;
  prototype.compareClientSecret = function compareStrictly(actual) {
    const method = STRICT_SECRET_METHOD[this.clientId];
    if (method) {
      const inForm = Boolean(Provider.ctx?.oidc?.params?.client_secret);
      if (inForm !== (method === 'client_secret_post')) return false; // invalid_client, as a wrong secret
    }
    return compareClientSecret.call(this, actual);
  };
}

// hs256-nested: /token/introspection and /token/revocation act on the opaque token behind an HS256 one. The form is
// read here and handed on as ctx.request.body (oidc-provider reads that when the request stream is already
// consumed, and warns once on stderr: "already parsed request body detected").
async function swapHs256Token(ctx) {
  if (!ctx.is('application/x-www-form-urlencoded')) return;
  const chunks = [];
  for await (const chunk of ctx.req.iterator({ destroyOnReturn: false })) chunks.push(chunk);
  const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
  const behind = hs256Tokens.get(form.get('token'));
  if (behind) form.set('token', behind);
  const body = {};
  for (const key of new Set(form.keys())) {
    const values = form.getAll(key);
    body[key] = values.length === 1 ? values[0] : values;
  }
  ctx.request.body = body;
}

function install(provider, keys) {
  const { issuer } = provider;
  provider.use(async (ctx, next) => {
    if (ctx.path === '/.well-known/smart-configuration' && ctx.method === 'GET') {
      ctx.set('Access-Control-Allow-Origin', '*');
      ctx.body = smartConfiguration(issuer);
      return;
    }
    if (ctx.path === '/test/style.json' && ctx.method === 'GET') {
      // A SMART style (App Launch 2: smart_style_url) with every colour changed, for the app's tests.
      ctx.body = {
        color_background: '#fdf6e3', color_text: '#002b36', color_highlight: '#6c71c4', color_error: '#dc322f',
        dim_border_radius: '6px', font_family_body: 'Georgia, serif', evil: 'red; } body { display: none',
      };
      return;
    }
    if (ctx.path === '/test/launch' && ctx.method === 'POST') {
      let body;
      try {
        body = await readJson(ctx);
      } catch {
        ctx.status = 400;
        ctx.body = { error: 'invalid JSON' };
        return;
      }
      if (!body || typeof body !== 'object' || Array.isArray(body)) {
        ctx.status = 400;
        ctx.body = { error: 'expected a JSON object' };
        return;
      }
      const launch = crypto.randomBytes(12).toString('base64url');
      const context = Object.fromEntries(Object.entries(body).filter(([, v]) => v !== null));
      launches.set(launch, context);
      standaloneContext = context;
      ctx.status = 201;
      ctx.body = { launch };
      return;
    }

    if (ctx.path === '/auth' && ctx.method === 'GET') {
      // oidc-provider follows OIDC Core 11 and drops offline_access unless prompt includes consent;
      // SMART apps never send prompt, and consent is always asked here anyway: add it.
      const { scope, prompt } = ctx.query;
      if (typeof scope === 'string' && splitScope(scope).has('offline_access')) {
        const prompts = splitScope(typeof prompt === 'string' ? prompt : '');
        if (!prompts.has('consent') && !prompts.has('none')) {
          ctx.query = { ...ctx.query, prompt: [...prompts, 'consent'].join(' ') };
        }
      }
    }

    if (ACCESS_TOKEN_SHAPE === 'hs256-nested' && ctx.method === 'POST'
        && (ctx.path === '/token/introspection' || ctx.path === '/token/revocation')) {
      await swapHs256Token(ctx);
    }

    await next();

    const route = ctx.oidc?.route;
    if (route === 'authorization' || route === 'resume') {
      const code = ctx.oidc.entities.AuthorizationCode;
      if (code) codeContexts.set(code.jti, resolveContext(ctx.oidc.params));
    } else if (route === 'token' && ctx.status === 200 && ctx.body?.access_token) {
      // SMART launch context parameters of the token response.
      const context = tokenContext(ctx);
      if (context) {
        const { fhirUser, ...rest } = context;
        Object.assign(ctx.body, rest);
      }
      if (ACCESS_TOKEN_SHAPE === 'hs256-nested') {
        const token = hs256Token(ctx);
        hs256Tokens.set(token, ctx.body.access_token);
        ctx.body.access_token = token;
      }
      if (ID_TOKEN_KID === 'omit' && typeof ctx.body.id_token === 'string') {
        ctx.body.id_token = withoutKid(ctx.body.id_token, keys);
      }
    }
  });
}

const server = http.createServer();
server.listen(Number(args.port), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const keys = args['signing-keys-file'] ? readSigningKeys(args['signing-keys-file'])
    : [rsaJwk('RS384'), rsaJwk('RS256')];
  const provider = new Provider(issuer, configuration(keys));
  holdSecretMethods(provider);
  install(provider, keys);
  server.on('request', provider.callback());
  process.stdout.write(`ready ${issuer}\n`);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
