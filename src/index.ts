// kube-pcap as a library: what users and tools can call directly.
export { parseSelector, SelectorError, type Labels, type Selector } from './selector/selector.js';
export { filtersToBpf, FilterError } from './filters/bpf.js';
export { CAPTURE_STATES, PACKETCAPTURE, summarizeStates, type CaptureState, type NodeCaptureStatus, type PacketCapture, type PacketCaptureRule, type PacketCaptureSpec } from './kube/packetcapture.js';
