/**
 * A VM's serial ports: port 0 is the console (spec `serial`), ports 1-3 the
 * extra ones (devices.serials), each a Unix socket in the run directory that
 * the console machinery (`vireo vm console NAME --serial N`, the daemon's
 * console WebSocket with ?serial=N) connects to.
 */
import { invalidArgument, invalidState } from '../errors.js';
import type { VmDefinition } from '../model/vm.js';
import type { VmPaths } from '../paths.js';
import { serialSocketOf } from '../qemu/argv.js';

export function consoleSocket(paths: Pick<VmPaths, 'serialSocket'>, def: Pick<VmDefinition, 'name' | 'serial' | 'devices'>, index: number): string {
  if (index === 0) {
    if (!def.serial) throw invalidState(`VM '${def.name}' has no serial console (serial: false)`);
    return paths.serialSocket;
  }
  const extra = def.devices?.serials ?? 0;
  if (!Number.isInteger(index) || index < 0 || index > extra) {
    throw invalidArgument('serial', `VM '${def.name}' has ${extra === 0 ? 'no extra serial ports (devices.serials)' : `extra serial ports 1-${extra}`}; there is no serial port ${index}`);
  }
  return serialSocketOf(paths, index);
}
