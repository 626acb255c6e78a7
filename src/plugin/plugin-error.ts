// An answer for the user: printed as it is (no stack trace) with the exit code it carries.
export class PluginError extends Error {
  constructor(message: string, readonly exitCode = 1) {
    super(message);
    this.name = 'PluginError';
  }
}

/** A mistake in the command line itself: exit code 2, with a pointer to --help. */
export class PluginUsageError extends PluginError {
  constructor(message: string) {
    super(message, 2);
    this.name = 'PluginUsageError';
  }
}
