// What the agent's routes can reach on the fastify instance.
import type { CaptureStore } from './capture-store.js';
import type { FilePins } from './file-pins.js';

export interface CaptureActivity {
  /** Whether this node is still writing files of the capture. */
  isCapturing(namespace: string, name: string): boolean;
  /** Kernel drops so far by pod interface (file base `<pod>_<iface>`), of the capture's running workers. */
  kernelDrops(namespace: string, name: string): Map<string, number>;
  /** Called after files were deleted, so status can follow at once. */
  /** Every file of the capture is about to be deleted: what it wrote stays counted. */
  deletingFiles(namespace: string, name: string): Promise<void>;
  filesDeleted(namespace: string, name: string): void;
}

declare module 'fastify' {
  interface FastifyInstance {
    captureStore: CaptureStore;
    captureActivity: CaptureActivity;
    filePins: FilePins;
    nodeName: string;
  }
}
