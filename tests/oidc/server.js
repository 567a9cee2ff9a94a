// Test-only SMART App Launch / OpenID Connect authorization server for the fhir-scribe test suite.
// It plays the EHR's authorization server. Never deploy it: any login succeeds, and the
// /test/* endpoints let a test choose the launch context.
//
//   node tests/oidc/server.js --port N [--fhir-audience URL]
//
// Prints `ready http://127.0.0.1:N` on stdout once listening (--port 0 picks a free port).

import * as crypto from 'node:crypto';
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
  },
});

const FHIR_AUDIENCE = args['fhir-audience'];
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
  return {
    scope,
    audience: indicator.replace(/[?&]ttl=\d+$/, ''),
    accessTokenFormat: 'jwt',
    accessTokenTTL: ttl,
    jwt: { sign: { alg: 'RS384' } },
  };
}

// ---- keys --------------------------------------------------------------------------------------

function rsaJwk(alg) {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  const kid = `${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}`;
  return { ...jwk, kid, alg, use: 'sig' };
}

// ---- provider --------------------------------------------------------------------------------

function configuration() {
  return {
    jwks: { keys: [rsaJwk('RS384'), rsaJwk('RS256')] },
    enabledJWA: {
      idTokenSigningAlgValues: ['RS256', 'RS384'],
      introspectionSigningAlgValues: ['RS256', 'RS384'],
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
    ],
    scopes: STATIC_SCOPES,
    responseTypes: ['code'],
    clientAuthMethods: ['none', 'client_secret_basic', 'client_secret_post'],
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
      RefreshToken: 24 * 3600,
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
    token_endpoint_auth_methods_supported: ['none', 'client_secret_basic', 'client_secret_post'],
    code_challenge_methods_supported: ['S256'],
    response_types_supported: ['code'],
    scopes_supported: [
      ...STATIC_SCOPES,
      'patient/*.read', 'patient/*.rs', 'user/*.read', 'user/*.cruds', 'system/*.read',
    ],
    capabilities: [
      'launch-ehr', 'launch-standalone', 'client-public', 'client-confidential-symmetric',
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

function install(provider) {
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
    }
  });
}

const server = http.createServer();
server.listen(Number(args.port), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, configuration());
  install(provider);
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
