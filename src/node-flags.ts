// How Node must be started for kube-pcap's servers (the Dockerfile's ENTRYPOINT uses these,
// and tests and benchmarks start the servers the same way; a test holds them together).
//
// --max-semi-space-size=1: streaming files allocates buffers at hundreds of MB/s; with V8's
// default young generation (up to tens of MB) those buffers, already sent, wait long for a
// scavenge and RSS climbs by 100+ MB. A 1 MB semi-space frees them promptly: measured on the
// download benchmark, the gateway's peak RSS drops by about a third and throughput does not
// suffer (it improves slightly: less memory to walk).
export const NODE_FLAGS = ['--max-semi-space-size=1'] as const;
