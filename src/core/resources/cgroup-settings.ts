/** A VM's cgroup limits, in the form both the cgroup trees and systemd's scope properties are written from. */
export interface CgroupSettings {
  /** Cores of CPU time per period. */
  cpuLimit?: number | undefined;
  /** v2 scale 1-10000 (100 = default). */
  cpuWeight?: number | undefined;
  /** Bytes. */
  memoryLimit?: number | undefined;
  /** v2 scale 1-10000 (100 = default). */
  ioWeight?: number | undefined;
}
