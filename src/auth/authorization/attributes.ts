// Request -> the attributes a SubjectAccessReview asks about. One place decides what each
// API operation means in RBAC terms: packetcaptures/files in projectcalico.org/v3, with the
// capture's namespace and name, and the verb of the operation; and for a server's own
// /metrics, the non-resource URL, as kube-rbac-proxy and the kubelet ask about it.
export type FilesVerb = 'get' | 'delete';

export interface ResourceAttributes {
  group: string;
  version: string;
  resource: string;
  subresource: string;
  verb: FilesVerb;
  namespace: string;
  name: string;
}

export function captureFilesAttributes(verb: FilesVerb, namespace: string, name: string): ResourceAttributes {
  return { group: 'projectcalico.org', version: 'v3', resource: 'packetcaptures', subresource: 'files', verb, namespace, name };
}

export interface NonResourceAttributes {
  path: string;
  verb: 'get';
}

export type Attributes = ResourceAttributes | NonResourceAttributes;

export function isNonResource(a: Attributes): a is NonResourceAttributes {
  return 'path' in a;
}

/** get on the non-resource URL /metrics: what Prometheus's ClusterRole grants. */
export function metricsAttributes(): NonResourceAttributes {
  return { path: '/metrics', verb: 'get' };
}
