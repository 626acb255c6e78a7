// The configuration files of one test-cluster node, as text: containerd's, kubelet's,
// kube-proxy's and the CNI network's. Pure functions of the node's plan, so that what a
// node runs with can be read in one place (and in the README's "Tested on" notes).
import { stringify } from 'yaml';

export interface NodePlan {
  name: string;
  /** The node's address on the cluster network (the sandbox bridge). */
  ip: string;
  /** The node's pods' addresses (host-local IPAM on the node's bridge). */
  podCidr: string;
  /** The first address of podCidr: the bridge's, the pods' gateway. */
  podGateway: string;
  /** Where the node's state lives, seen from outside the node (its /var/lib, /run, /var/log). */
  root: string;
  /** The directory of kubelet, containerd, the CNI plugins, ... (test/cluster/build-node.sh). */
  binDir: string;
  /** The sandbox image containerd runs every pod's namespaces in. */
  pauseImage: string;
  /** The cgroup root of the node's pods in every hierarchy, e.g. /kube-pcap-node-a. */
  cgroupRoot: string;
  caFile: string;
  servingCert: { certFile: string; keyFile: string };
  clusterDns: string;
  clusterCidr: string;
}

/**
 * containerd 2.x (config version 3). Differences from its defaults, each for a reason:
 * - restrict_oom_score_adj: this machine withholds CAP_SYS_RESOURCE, so the pause
 *   container's oom_score_adj of -998 fails and no pod starts without it;
 * - cgroupfs, not systemd (PID 1 here is not systemd), matching kubelet's cgroupDriver;
 * - runc is Debian's (/usr/sbin/runc), with seccomp;
 * - the sandbox image is made locally (no registry is reachable);
 * - CNI plugins and configuration from the node's own directories;
 * - the `opt` plugin (which would write /opt/containerd on the machine) is off.
 */
export function containerdConfig(p: NodePlan): string {
  return `version = 3
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = "${p.pauseImage}"

  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false
    restrict_oom_score_adj = true
    disable_apparmor = true
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["${p.binDir}/cni"]
      conf_dir = "/etc/cni/net.d"
      max_conf_num = 1
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = "/usr/sbin/runc"
          SystemdCgroup = false

  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
`;
}

/** The node's pod network: the reference bridge plugin, host-local addresses, hairpin on. */
export function cniConfig(p: NodePlan): string {
  return JSON.stringify({
    cniVersion: '1.0.0',
    name: 'kube-pcap-test',
    plugins: [
      {
        type: 'bridge',
        bridge: 'cni0',
        isGateway: true,
        // Pods reach other nodes and the control plane by the node's routes, not by NAT:
        // every address they talk to sees their own.
        ipMasq: false,
        hairpinMode: true,
        ipam: { type: 'host-local', ranges: [[{ subnet: p.podCidr, gateway: p.podGateway }]], routes: [{ dst: '0.0.0.0/0' }] },
      },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  }, null, 2);
}

/**
 * kubelet. cgroup v1 is refused from 1.35 on unless failCgroupV1 is false; eviction and
 * image GC are set so that a busy CI machine's disk never evicts the test's pods; the
 * volume plugin directory is kept under the node's /var/lib instead of /usr/libexec.
 */
export function kubeletConfig(p: NodePlan): string {
  return stringify({
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    address: p.ip,
    port: 10250,
    readOnlyPort: 0,
    healthzBindAddress: '127.0.0.1',
    healthzPort: 10248,
    authentication: { anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: p.caFile } },
    authorization: { mode: 'Webhook' },
    tlsCertFile: p.servingCert.certFile,
    tlsPrivateKeyFile: p.servingCert.keyFile,
    cgroupDriver: 'cgroupfs',
    cgroupRoot: p.cgroupRoot,
    cgroupsPerQOS: true,
    enforceNodeAllocatable: ['pods'],
    failCgroupV1: false,
    failSwapOn: false,
    containerRuntimeEndpoint: 'unix:///run/containerd/containerd.sock',
    clusterDNS: [p.clusterDns],
    clusterDomain: 'cluster.local',
    resolvConf: '',
    evictionHard: { 'memory.available': '1Mi', 'nodefs.available': '1%', 'nodefs.inodesFree': '1%', 'imagefs.available': '1%' },
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    imageMinimumGCAge: '24h',
    serializeImagePulls: false,
    maxPods: 40,
    protectKernelDefaults: false,
    volumePluginDir: '/var/lib/kubelet/volumeplugins',
    // Pods are stopped with the node by the test harness; kubelet has no systemd inhibitor here.
    shutdownGracePeriod: '0s',
    shutdownGracePeriodCriticalPods: '0s',
    nodeStatusUpdateFrequency: '5s',
    syncFrequency: '10s',
    rotateCertificates: false,
    serverTLSBootstrap: false,
  });
}

/** kube-proxy in iptables mode; conntrack sysctls are the machine's (not writable in a netns). */
export function kubeProxyConfig(p: NodePlan, kubeconfig: string): string {
  return stringify({
    apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
    kind: 'KubeProxyConfiguration',
    mode: 'iptables',
    clientConnection: { kubeconfig },
    hostnameOverride: p.name,
    bindAddress: p.ip,
    clusterCIDR: p.clusterCidr,
    healthzBindAddress: '127.0.0.1:10256',
    metricsBindAddress: '127.0.0.1:10249',
    conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: '0s', tcpCloseWaitTimeout: '0s' },
  });
}
