// Authentication and authorization of packetcaptures/files, for every route that declares
// `config: { filesVerb: 'get' | 'delete' }` and has :namespace and :name parameters.
// Routes without it are public (health, metrics, the API description). The three steps
// are separate units: bearer token -> user (TokenReview or OIDC) -> attributes -> review.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { bearerToken, precheckToken } from '../../auth/authentication/bearer.js';
import type { TokenReviewAuthenticator } from '../../auth/authentication/token-review.js';
import { captureFilesAttributes, type FilesVerb } from '../../auth/authorization/attributes.js';
import type { SubjectAccessReviewer } from '../../auth/authorization/subject-access-review.js';
import type { UserInfo } from '../../auth/user.js';
import { HttpError } from '../status.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    filesVerb?: FilesVerb;
  }
  interface FastifyRequest {
    caller?: UserInfo;
  }
}

export interface AuthorizeFilesOptions {
  tokenReview: TokenReviewAuthenticator;
  reviewer: SubjectAccessReviewer;
}

export const authorizeFilesPlugin = fp(async (app: FastifyInstance, opts: AuthorizeFilesOptions) => {
  app.decorateRequest('caller', undefined);
  async function authenticate(request: FastifyRequest): Promise<UserInfo> {
    const token = bearerToken(request.headers.authorization);
    const jwt = precheckToken(token);
    if (!jwt || !app.oidc?.handles(jwt)) return await opts.tokenReview.authenticate(token, jwt);
    try {
      return await app.oidc.verify(request);
    } catch (oidcError) {
      // Like the API server's union of authenticators: a token the OIDC verifier rejects may
      // still be one the API server accepts (e.g. when both trust the same issuer).
      if (!(oidcError instanceof HttpError) || oidcError.code !== 401) throw oidcError;
      try {
        return await opts.tokenReview.authenticate(token, jwt);
      } catch (reviewError) {
        throw reviewError instanceof HttpError && reviewError.code === 401 ? oidcError : reviewError;
      }
    }
  }
  // preHandler runs after parameter validation: a malformed name is a 400 for anyone.
  app.addHook('preHandler', async (request) => {
    const verb = request.routeOptions.config.filesVerb;
    if (!verb) return;
    const { namespace, name } = request.params as { namespace: string; name: string };
    const user = await authenticate(request);
    await opts.reviewer.authorize(user, captureFilesAttributes(verb, namespace, name));
    request.caller = user;
  });
}, { name: 'kube-pcap-authorize-files', dependencies: [] });
