/**
 * Undo steps for multi-step work, so that a command failing part-way leaves
 * nothing half-made: each step that makes something registers how to unmake
 * it; on failure the steps run in reverse order; on success they are dropped.
 */
export class Reverter {
  private readonly steps: (() => Promise<unknown> | unknown)[] = [];

  add(undo: () => Promise<unknown> | unknown): void {
    this.steps.push(undo);
  }

  /** Runs the undo steps newest first; an undo that fails does not stop the others. */
  async revert(): Promise<void> {
    while (this.steps.length > 0) {
      const undo = this.steps.pop()!;
      try {
        await undo();
      } catch {
        // Best effort: the original error is what the caller reports.
      }
    }
  }

  /** Runs work; if it throws, reverts and rethrows. */
  static async run<T>(work: (reverter: Reverter) => Promise<T>): Promise<T> {
    const reverter = new Reverter();
    try {
      return await work(reverter);
    } catch (error) {
      await reverter.revert();
      throw error;
    }
  }
}
