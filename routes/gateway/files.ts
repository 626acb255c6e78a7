// GET /files/{namespace}/{name}: the capture's files on every node, with the node's state.
// DELETE /files/{namespace}/{name}: remove them from every node, once nothing captures.
import type { FastifyInstance } from 'fastify';
import { AgentError } from '../../src/gateway/agent-client.js';
import { InvalidListingError } from '../../src/gateway/agent-listing.js';
import '../../src/gateway/decorators.js';
import { captureParams, type CaptureParams } from '../../src/http/params.js';
import { badGateway, conflict } from '../../src/http/status.js';

const listing = {
  type: 'object',
  required: ['namespace', 'name', 'files'],
  properties: {
    namespace: { type: 'string' },
    name: { type: 'string' },
    files: {
      type: 'array',
      items: {
        type: 'object',
        required: ['node', 'file', 'size', 'modified', 'identity'],
        properties: {
          node: { type: 'string' },
          file: { type: 'string' },
          size: { type: 'integer' },
          modified: { type: 'string' },
          identity: { type: 'string' },
          state: { type: 'string' },
        },
      },
    },
  },
} as const;

const removal = {
  type: 'object',
  required: ['namespace', 'name', 'removed'],
  properties: {
    namespace: { type: 'string' },
    name: { type: 'string' },
    removed: {
      type: 'array',
      items: { type: 'object', required: ['node', 'file'], properties: { node: { type: 'string' }, file: { type: 'string' } } },
    },
  },
} as const;

/** No query parameters: an unknown one is a 400, never silently ignored (`?dryRun=All`). */
const noQuery = { type: 'object', additionalProperties: false, properties: {} } as const;

/** States in which an agent is still writing this capture's files. */
const ACTIVE = new Set(['Capturing', 'WaitingForTraffic']);

export default async function filesRoutes(app: FastifyInstance): Promise<void> {
  app.get<{ Params: CaptureParams }>(
    '/files/:namespace/:name',
    { schema: { params: captureParams, querystring: noQuery, response: { 200: listing } }, config: { filesVerb: 'get' } },
    async (request) => {
      const { namespace, name } = request.params;
      const nodes = await app.captureFiles.collect(await app.captureFiles.find(namespace, name));
      return {
        namespace,
        name,
        files: nodes.flatMap((n) => n.files.map((f) => ({ node: n.node, file: f.name, size: f.size, modified: f.modified, identity: f.identity, ...(n.state ? { state: n.state } : {}) }))),
      };
    },
  );

  app.delete<{ Params: CaptureParams }>(
    '/files/:namespace/:name',
    { schema: { params: captureParams, querystring: noQuery, response: { 200: removal } }, config: { filesVerb: 'delete' } },
    async (request) => {
      const { namespace, name } = request.params;
      const found = await app.captureFiles.find(namespace, name);
      const active = found.entries.filter((f) => f.state !== undefined && ACTIVE.has(f.state)).map((f) => f.node).sort();
      if (active.length > 0) {
        throw conflict(`packetcaptures.projectcalico.org "${name}" is still capturing on ${active.join(', ')}: stop it first (set spec.endTime, or kubectl pcap stop)`);
      }
      const nodes = await app.captureFiles.collect(found);
      const removed: { node: string; file: string }[] = [];
      const failed: string[] = [];
      const invalid: string[] = [];
      await Promise.all(nodes.map(async (n) => {
        try {
          for (const file of await app.captureFiles.agents.deleteFiles(n.endpoint, namespace, name)) removed.push({ node: n.node, file });
        } catch (err) {
          if (err instanceof InvalidListingError) {
            invalid.push(n.node);
            return;
          }
          if (!(err instanceof AgentError)) throw err;
          app.gatewayMetrics.agentErrors.inc({ operation: 'delete' });
          // The agent re-checks that nothing is capturing: a 409 from it means a race we lost.
          if (err.status === 409) throw conflict(err.message);
          failed.push(n.node);
        }
      }));
      if (invalid.length > 0) throw badGateway(`the agents of ${invalid.sort().join(', ')} answered the deletion off-contract`, invalid, 'AgentInvalidResponse');
      if (failed.length > 0) throw badGateway(`could not delete the files on ${failed.sort().join(', ')}`, failed);
      request.log.info({ user: request.caller?.username, namespace, name, removed: removed.length }, 'capture files deleted');
      removed.sort((a, b) => a.node.localeCompare(b.node) || a.file.localeCompare(b.file));
      return { namespace, name, removed };
    },
  );
}
