// Authentication and authorization of packetcaptures/files, for every route that declares
// `config: { filesVerb: 'get' | 'delete' }` and has :namespace and :name parameters.
// Routes without it are public (health, metrics, the API description). The three steps
// are separate units: credentials -> user (authentication/chain.ts) -> attributes
// (authorization/attributes.ts) -> SubjectAccessReview.
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { Authenticate } from '../../auth/authentication/chain.js';
import { captureFilesAttributes, type FilesVerb } from '../../auth/authorization/attributes.js';
import type { SubjectAccessReviewer } from '../../auth/authorization/subject-access-review.js';
import type { UserInfo } from '../../auth/user.js';
import type { PerUserSlots } from '../per-user-slots.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    filesVerb?: FilesVerb;
  }
  interface FastifyRequest {
    caller?: UserInfo;
  }
}

export interface AuthorizeFilesOptions {
  authenticate: Authenticate;
  reviewer: SubjectAccessReviewer;
  /** Requests one identity may have in flight; taken once authenticated, before the review. */
  inFlightPerUser?: PerUserSlots;
}

export const authorizeFilesPlugin = fp(async (app: FastifyInstance, opts: AuthorizeFilesOptions) => {
  app.decorateRequest('caller', undefined);
  app.decorateRequest('recheckAccess', undefined);
  // preHandler runs after parameter validation: a malformed name is a 400 for anyone.
  app.addHook('preHandler', async (request, reply) => {
    const verb = request.routeOptions.config.filesVerb;
    if (!verb) return;
    const { namespace, name } = request.params as { namespace: string; name: string };
    const attributes = captureFilesAttributes(verb, namespace, name);
    // The caller is known once authenticated, also when then refused (for the audit record).
    request.caller = await opts.authenticate(request);
    // One identity's requests in flight are bounded before they cost a review each.
    opts.inFlightPerUser?.take(request, reply);
    await opts.reviewer.authorize(request.caller, attributes);
    const check = async (): Promise<void> => {
      request.caller = await opts.authenticate(request);
      await opts.reviewer.authorize(request.caller, attributes);
    };
    // Long responses ask again while they run (src/http/access-watch.ts).
    request.recheckAccess = async () => {
      await check();
    };
  });
}, { name: 'kube-pcap-authorize-files', dependencies: [] });
