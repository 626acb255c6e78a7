// Where the API server is and who we are: a kubeconfig file when given, the pod's
// ServiceAccount when running in a cluster, otherwise the usual kubeconfig lookup.
import { KubeConfig } from '@kubernetes/client-node';
import { KubeClient } from './client.js';

export function loadKubeConfig(kubeconfigPath?: string): KubeConfig {
  const kc = new KubeConfig();
  if (kubeconfigPath) kc.loadFromFile(kubeconfigPath);
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else kc.loadFromDefault();
  if (!kc.getCurrentCluster()) throw new Error('no Kubernetes cluster configured (use --kubeconfig, or run in a pod)');
  return kc;
}

export async function connect(kubeconfigPath?: string): Promise<KubeClient> {
  return await KubeClient.fromKubeConfig(loadKubeConfig(kubeconfigPath));
}
