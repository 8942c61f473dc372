/**
 * A concurrency limiter: at most `max` of the tasks given to it run at once,
 * the rest wait in order. Used wherever work fans out over VMs or volumes
 * (opening files, running qemu-img), so that a large host can never make the
 * daemon open files or start processes in proportion to what it manages.
 * (p-limit does the same; this is the twenty lines Vireo needs of it.)
 */
export interface Limiter {
  <T>(task: () => Promise<T>): Promise<T>;
  /** Tasks running now. */
  readonly active: number;
  /** Tasks waiting for a slot. */
  readonly pending: number;
}

export function limiter(max: number): Limiter {
  if (!Number.isSafeInteger(max) || max < 1) throw new RangeError(`a limiter needs at least one slot, got ${max}`);
  let active = 0;
  const queue: (() => void)[] = [];
  const next = () => {
    active -= 1;
    queue.shift()?.();
  };
  const run = <T>(task: () => Promise<T>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const go = () => {
        active += 1;
        // A task that throws synchronously still frees its slot.
        Promise.resolve()
          .then(task)
          .then(resolve, reject)
          .finally(next);
      };
      if (active < max) go();
      else queue.push(go);
    });
  return Object.defineProperties(run, {
    active: { get: () => active },
    pending: { get: () => queue.length },
  }) as Limiter;
}

/** Maps over items with at most `max` mappings in flight; results keep the items' order. */
export function mapLimited<T, R>(items: readonly T[], max: number, map: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const limit = limiter(max);
  return Promise.all(items.map((item, index) => limit(() => map(item, index))));
}
