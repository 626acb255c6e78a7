// libuv's thread pool runs every file operation; its default of 4 threads lets four hung
// writes (a frozen or dead disk) stop every file read in the process. 16 threads, with
// capture writes held to a few of them (src/agent/disk-gate.ts), keep the file server and
// status working while a disk hangs (docs/agent.md, "Nothing wedges it"). libuv reads the
// variable when the pool first starts, so this module is the entry point's first import.
// An operator's own UV_THREADPOOL_SIZE wins.
process.env.UV_THREADPOOL_SIZE ??= '16';

export const THREADPOOL_SIZE = Number(process.env.UV_THREADPOOL_SIZE) || 4;
