// Requests to an agent as the gateway makes them (its client certificate and its token for the
// agents' audience), with the path put on the wire exactly as written: nothing normalizes it.
import { readFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import type { KeyPair } from '../../src/tls/certificates.js';
import { AGENT_SERVER_NAME, type Pki } from './kube-pcap.js';

export interface AgentResponse {
  status: number;
  headers: Record<string, unknown>;
  body: Buffer;
  text: string;
}

export interface AgentRequestOptions {
  method?: string;
  token?: string;
  headers?: Record<string, string>;
  /** Another client certificate, or none (null); the gateway's by default. */
  clientCert?: KeyPair | null;
}

export function agentRequester(agent: { address: string; port: number }, pki: Pki, gatewayToken: string): (path: string, opts?: AgentRequestOptions) => Promise<AgentResponse> {
  return async (path, opts = {}) => {
    const caPem = await readFile(pki.ca.certFile);
    const client = opts.clientCert === undefined ? pki.gatewayClient : opts.clientCert;
    const identity = client ? { cert: await readFile(client.certFile), key: await readFile(client.keyFile) } : {};
    return await new Promise((resolve, reject) => {
      const headers = { authorization: `Bearer ${opts.token ?? gatewayToken}`, ...(opts.headers ?? {}) };
      httpsRequest({ method: opts.method ?? 'GET', host: agent.address, port: agent.port, path, ca: caPem, servername: AGENT_SERVER_NAME, headers, ...identity }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text: body.toString() });
        });
      }).on('error', reject).end();
    });
  };
}
