// The one error handler: every failure leaves as a Kubernetes Status object, and every
// verdict of authentication and authorization becomes its answer here.
import type { FastifyError, FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { AuthVerdict } from '../../auth/verdict.js';
import { badRequest, HttpError, httpErrorOf, statusObject } from '../status.js';

export const errorsPlugin = fp(async (app: FastifyInstance) => {
  app.setErrorHandler((err: FastifyError | HttpError | AuthVerdict, request, reply) => {
    if (reply.sent || reply.raw.headersSent) {
      // A streamed body already started: the only honest signal left is to cut the connection.
      request.log.error({ err }, 'failure after the response started; aborting the connection');
      reply.raw.destroy(err);
      return;
    }
    let e: HttpError;
    if (err instanceof HttpError) {
      e = err;
    } else if (err instanceof AuthVerdict) {
      e = httpErrorOf(err);
    } else if ((err as FastifyError).validation) {
      const fe = err as FastifyError;
      // Name an unknown parameter (shortened: the caller may have pasted anything there).
      const unknown = fe.validation?.map((v) => (v.params as { additionalProperty?: unknown } | undefined)?.additionalProperty).find((p): p is string => typeof p === 'string');
      const message = unknown !== undefined && fe.validationContext === 'querystring' ? `unknown query parameter "${unknown.slice(0, 40)}"` : fe.message;
      e = badRequest(`invalid request: ${message}`, fe.validation?.map((v) => ({ reason: 'FieldValueInvalid', field: `${fe.validationContext ?? ''}${v.instancePath}`, message: v.message ?? 'invalid' })));
    } else if (typeof (err as FastifyError).statusCode === 'number' && (err as FastifyError).statusCode! < 500) {
      const code = (err as FastifyError).statusCode!;
      e = new HttpError(code, code === 413 ? 'RequestEntityTooLarge' : 'BadRequest', err.message);
    } else {
      request.log.error({ err }, 'unexpected error');
      e = new HttpError(500, 'InternalError', 'internal error; see the server log');
    }
    if (e.code >= 500) request.log.warn({ code: e.code, reason: e.reason, msg: e.message }, 'request failed');
    void reply.code(e.code).headers(e.headers).type('application/json').send(e.toStatus());
  });
  app.setNotFoundHandler((request, reply) => {
    // The path is not echoed: it may be anything, including a pasted credential.
    void reply.code(404).type('application/json').send(statusObject(404, 'NotFound', `no such path (${request.method}); see /openapi.yaml`));
  });
}, { name: 'kube-pcap-errors' });
