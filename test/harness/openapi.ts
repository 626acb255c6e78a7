// Responses held to openapi.yaml: the document is dereferenced by an OpenAPI parser (which
// also validates it), and each JSON response body is checked with the schema the document
// gives for that path, method, status and content type.
import { join } from 'node:path';
import SwaggerParser from '@apidevtools/swagger-parser';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { REPO_ROOT } from './control-plane.js';

export const OPENAPI = join(REPO_ROOT, 'openapi.yaml');

type Doc = { paths: Record<string, Record<string, { responses?: Record<string, { content?: Record<string, { schema?: object }>; headers?: Record<string, unknown> }> }>> };

let doc: Promise<Doc> | undefined;
const ajv = new Ajv2020({ strict: false, allErrors: true });
(addFormats as unknown as (a: Ajv2020) => void)(ajv);

export async function openapiDoc(): Promise<Doc> {
  doc ??= SwaggerParser.dereference(OPENAPI) as unknown as Promise<Doc>;
  return await doc;
}

/** Throws unless the document describes this response and the body matches its schema. */
export async function checkResponse(method: string, pathTemplate: string, status: number, contentType: string | undefined, body: Buffer): Promise<void> {
  const d = await openapiDoc();
  const op = d.paths[pathTemplate]?.[method.toLowerCase()];
  if (!op) throw new Error(`openapi.yaml has no ${method} ${pathTemplate}`);
  const resp = op.responses?.[String(status)];
  if (!resp) throw new Error(`openapi.yaml does not list status ${status} for ${method} ${pathTemplate}`);
  const type = (contentType ?? '').split(';')[0]!.trim();
  const media = resp.content?.[type];
  if (!media) throw new Error(`openapi.yaml has no ${type} content for ${status} of ${method} ${pathTemplate} (it has ${Object.keys(resp.content ?? {}).join(', ')})`);
  if (type !== 'application/json' || !media.schema) return;
  const validate = ajv.compile(media.schema);
  const value: unknown = JSON.parse(body.toString('utf8'));
  if (!validate(value)) throw new Error(`response does not match openapi.yaml for ${status} ${method} ${pathTemplate}: ${ajv.errorsText(validate.errors)}`);
}
