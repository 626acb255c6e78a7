// The disk holding a capture's files is full: the capture stops there, its files whole.
export class DiskFullError extends Error {
  constructor(path: string) {
    super(`no space left on the device holding ${path}`);
    this.name = 'DiskFullError';
  }
}
