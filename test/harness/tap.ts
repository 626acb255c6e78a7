// The type of the `t` a tap test callback receives, for helpers that take one.
import type tap from 'tap';

export type TapTest = Parameters<Parameters<typeof tap.test>[0]>[0];
