// What a pod interface is called in kube-pcap's pcapng (docs/pcapng.md): `if_name`
// `<node>/<namespace>/<pod>/<iface>` and `if_description`
// `k8s.node=…;k8s.namespace=…;k8s.pod=…;k8s.capture=…[;k8s.pod.uid=…]`. The agents write it and
// the gateway accepts nothing else, so both build it here.
export interface InterfaceLabelParts {
  node: string;
  namespace: string;
  capture: string;
  pod: string;
  iface: string;
  podUID?: string;
}

export function interfaceLabel(p: InterfaceLabelParts): { name: string; description: string } {
  return {
    name: `${p.node}/${p.namespace}/${p.pod}/${p.iface}`,
    description: `k8s.node=${p.node};k8s.namespace=${p.namespace};k8s.pod=${p.pod};k8s.capture=${p.capture}${p.podUID !== undefined ? `;k8s.pod.uid=${p.podUID}` : ''}`,
  };
}
